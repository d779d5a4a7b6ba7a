"""Core speed benchmark: fmrec SGD/ALS epochs beside same-run references.

Run by hand (not in CI):

    python benchmarks/bench_core.py [--shared ../shared] [--data /tmp/syn.npz] [--epochs 4]
                                    [--repeat 5]
                                    [--myfm-python PATH]   # e.g. a venv with `pip install myfm`

Generates (once) the synthetic set of ``shared/bench/gen_synthetic.py`` — 1,000,000 rows x 20
non-zeros over 200,000 features, zipf-0.8 popularity, rank-8 FM plus noise, seed 0 — then, in
one run, times:

* fmrec SGD (AdaGrad, the default, and constant rate), one and two threads, reshuffling every
  epoch; fmrec ALS, one and two threads (cache rebuild + sweep);
* the plain C FM SGD epoch of ``shared/bench/sgd_reference.py`` (shuffled and storage order);
* myFM's seconds per Gibbs iteration (``MyFMRegressor(rank=8)``), if ``myfm`` is installed;

and prints the ratios the performance targets are stated in, plus each measured process's peak
memory (fmrec and myFM each run in a subprocess of their own so their peaks are separate).
Machines differ (CPU models seen 1.8x apart): compare ratios, never absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

FMREC_RUN = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, scipy.sparse as sp
    from fmrec import FMRegressor
    with np.load(sys.argv[1]) as z:  # float32 values and int32 indices already: no copies
        X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        y = z["y"].astype(np.float32)
    epochs = int(sys.argv[2])
    out = {}
    def run(name, **kw):
        times = []
        cb = lambda est, epoch, logs: times.append(time.perf_counter())
        model = FMRegressor(n_factors=8, n_epochs=epochs, random_state=0, **kw)
        start = time.perf_counter()
        model.fit(X, y, callbacks=[cb])
        gaps = np.diff([start] + times)
        # the first epoch carries one-off set-up (CSC copy, allocation): report it apart
        steady = gaps[1:] if len(gaps) > 1 else gaps
        out[name] = {"first": float(gaps[0]), "median": float(np.median(steady)),
                     "train_rmse": float(np.sqrt(model.history_["train_loss"][-1]))}
    run("sgd_adagrad_1", solver="sgd", n_jobs=1)
    run("sgd_adagrad_2", solver="sgd", n_jobs=2)
    run("sgd_constant_1", solver="sgd", lr_schedule="constant", learning_rate=0.01, n_jobs=1)
    run("sgd_constant_2", solver="sgd", lr_schedule="constant", learning_rate=0.01, n_jobs=2)
    run("als_1", solver="als", n_jobs=1)
    run("als_2", solver="als", n_jobs=2)
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
""")

MYFM_RUN = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, scipy.sparse as sp, myfm
    z = np.load(sys.argv[1])
    X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
    n_iter = int(sys.argv[2]) + 1
    stamps = []
    def cb(i, fm, hyper, history):
        stamps.append(time.perf_counter())
        return False, None
    start = time.perf_counter()
    myfm.MyFMRegressor(rank=8, random_seed=0).fit(X, z["y"], n_iter=n_iter, n_kept_samples=1,
                                                   callback=cb)
    gaps = np.diff([start] + stamps)
    print(json.dumps({"median": float(np.median(gaps[1:])),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    parser.add_argument("--data", type=Path, default=Path("/tmp/fmrec_bench/syn.npz"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the fmrec measurements this many times (thread speed-ups "
                             "are reported as median and spread over the runs)")
    parser.add_argument("--myfm-python", default=sys.executable,
                        help="interpreter that has myfm installed (default: this one)")
    args = parser.parse_args()

    if not args.data.exists():
        args.data.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(args.shared / "bench" / "gen_synthetic.py"),
                        str(args.data.with_suffix("")), "1000000", "20", "200000", "8", "0"],
                       check=True)

    ref = subprocess.run([sys.executable, str(args.shared / "bench" / "sgd_reference.py"),
                          str(args.data), str(args.epochs)], capture_output=True, text=True,
                         check=True).stdout
    c_ref = {m.group(1): float(m.group(2))
             for m in re.finditer(r"(shuffled|sequential) rows: ([\d.]+) s/epoch", ref)}
    runs = [json.loads(subprocess.run([sys.executable, "-c", FMREC_RUN, str(args.data),
                                       str(args.epochs)], capture_output=True, text=True,
                                      check=True).stdout)
            for _ in range(max(1, args.repeat))]
    # per configuration, the run with the median epoch time
    fm = {name: sorted((run[name] for run in runs), key=lambda r: r["median"])[len(runs) // 2]
          for name in runs[0] if name != "peak_mb"}
    fm["peak_mb"] = max(run["peak_mb"] for run in runs)
    try:
        myfm = json.loads(subprocess.run([args.myfm_python, "-c", MYFM_RUN, str(args.data),
                                          str(args.epochs)], capture_output=True, text=True,
                                         check=True).stdout.strip().splitlines()[-1])
    except subprocess.CalledProcessError as exc:
        myfm = None
        print("myFM not measured:", exc.stderr.strip().splitlines()[-1])

    print(f"C reference SGD: {c_ref['shuffled']:.3f} s/epoch shuffled, "
          f"{c_ref['sequential']:.3f} s/epoch storage order")
    for name in ("sgd_adagrad_1", "sgd_adagrad_2", "sgd_constant_1", "sgd_constant_2", "als_1",
                 "als_2"):
        r = fm[name]
        print(f"fmrec {name:15s} {r['median']:.3f} s/epoch (first {r['first']:.3f} s) "
              f"train RMSE {r['train_rmse']:.4f}  = {r['median'] / c_ref['sequential']:.2f}x "
              f"C storage-order, {c_ref['shuffled'] / r['median']:.2f}x faster than C shuffled")
    for solver in ("sgd_adagrad", "sgd_constant", "als"):
        # speed-up within each run (both thread counts timed in the same process)
        ups = sorted(run[f"{solver}_1"]["median"] / run[f"{solver}_2"]["median"] for run in runs)
        spread = f" (runs: {', '.join(f'{u:.2f}' for u in ups)})" if len(ups) > 1 else ""
        print(f"{solver}: two threads {ups[len(ups) // 2]:.2f}x faster than one{spread}")
    if myfm:
        print(f"myFM: {myfm['median']:.3f} s/iteration, peak {myfm['peak_mb']:.0f} MB; "
              f"fmrec ALS sweep {myfm['median'] / fm['als_1']['median']:.2f}x faster")
    print(f"fmrec benchmark process peak memory: {fm['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
