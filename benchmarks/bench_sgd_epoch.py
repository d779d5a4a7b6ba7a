"""Same-run ratios of fmrec's SGD epoch to the plain C loop (issue 16), interleaved.

bench_core.py times the C reference once and then every fmrec solver; on a shared machine the
load changes between the two. Here each repetition runs the C loop (storage order, the
target's denominator) and then fmrec's SGD, alternately, and the ratio is taken within the
repetition; the report gives the median and the spread of the ratios.

    python benchmarks/bench_sgd_epoch.py [--repeat 5] [--epochs 4]
                                         [--configs adagrad_1,adagrad_2,constant_1]
                                         [--builds before=/path/a,after=/path/b]

``--builds`` times several builds of fmrec (each folder goes first on PYTHONPATH) in every
repetition, after the same C run: before/after ratios from the same conditions.

Data: bench_core.py's synthetic set (/tmp/fmrec_bench/syn.npz, made with gen_synthetic.py if
absent). Each fmrec figure is the median epoch after the first; each C figure the median of
its epochs. Ratios, never absolute seconds, compare between machines.

``--clock cpu`` (for one-thread configurations) times the CPU time of the thread that runs the
epoch instead of the wall clock: on a machine shared with other jobs, the time spent waiting
for a core is left out (contention for caches and memory is not). The C program is then
built with its clock switched to CLOCK_THREAD_CPUTIME_ID by a forced include, unchanged
otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

FMREC_RUN = textwrap.dedent("""
    import json, sys, time
    import numpy as np, scipy.sparse as sp
    from fmrec import FMRegressor
    with np.load(sys.argv[1]) as z:
        X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        y = z["y"].astype(np.float32)
    epochs = int(sys.argv[2])
    kw = {"adagrad": {}, "constant": {"lr_schedule": "constant", "learning_rate": 0.01}}
    out = {}
    for name in sys.argv[3].split(","):
        sched, threads = name.rsplit("_", 1)
        times = []
        clock = time.thread_time if sys.argv[4] == "cpu" else time.perf_counter
        cb = lambda est, epoch, logs: times.append(clock())
        model = FMRegressor(n_factors=8, solver="sgd", n_epochs=epochs, random_state=0,
                            n_jobs=int(threads), **kw[sched])
        start = clock()
        model.fit(X, y, callbacks=[cb])
        gaps = np.diff([start] + times)
        out[name] = {"median": float(np.median(gaps[1:])),
                     "train_rmse": float(np.sqrt(model.history_["train_loss"][-1]))}
    print(json.dumps(out))
""")


def main() -> None:
    import numpy as np
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    ap.add_argument("--data", type=Path, default=Path("/tmp/fmrec_bench/syn.npz"))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--configs", default="adagrad_1,adagrad_2,constant_1")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--builds", default=None,
                    help="label=folder,... (default: the fmrec this interpreter imports)")
    args = ap.parse_args()
    if not args.data.exists():
        args.data.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(args.shared / "bench" / "gen_synthetic.py"),
                        str(args.data.with_suffix("")), "1000000", "20", "200000", "8", "0"],
                       check=True)
    configs = args.configs.split(",")
    builds = dict(b.split("=", 1) for b in args.builds.split(",")) if args.builds else {"": None}
    runs = [f"{label}:{c}" if label else c for label in builds for c in configs]
    ratios: dict[str, list[float]] = {r: [] for r in runs}
    c_secs, fm_secs = [], {r: [] for r in runs}
    with tempfile.TemporaryDirectory() as d:
        with np.load(args.data) as z:
            z["indptr"].astype(np.int64).tofile(f"{d}/indptr.bin")
            z["indices"].astype(np.int32).tofile(f"{d}/indices.bin")
            z["data"].astype(np.float32).tofile(f"{d}/data.bin")
            z["y"].astype(np.float32).tofile(f"{d}/y.bin")
            n, m = str(int(z["shape"][0])), str(int(z["shape"][1]))
        exe = f"{d}/fm_sgd_limit"
        force = []
        if args.clock == "cpu":
            Path(f"{d}/cpu_clock.h").write_text(
                "#include <time.h>\n#undef CLOCK_MONOTONIC\n"
                "#define CLOCK_MONOTONIC CLOCK_THREAD_CPUTIME_ID\n")
            force = ["-include", f"{d}/cpu_clock.h"]
        subprocess.run(["gcc", "-O3", "-march=native", *force, "-o", exe,
                        str(args.shared / "bench" / "fm_sgd_limit.c"), "-lm"], check=True)
        for rep in range(args.repeat):
            out = subprocess.run([exe, d, n, m, str(args.epochs), "sequential"],
                                 capture_output=True, text=True, check=True).stdout
            c = float(np.median([float(x) for x in re.findall(r": ([\d.]+) s", out)]))
            fm = {}
            # alternate the builds' order, so that neither always runs right after C
            for label, folder in list(builds.items())[::-1 if rep % 2 else 1]:
                env = dict(os.environ)
                if folder:
                    env["PYTHONPATH"] = os.pathsep.join(
                        [folder] + [p for p in [env.get("PYTHONPATH")] if p])
                out = json.loads(subprocess.run(
                    [sys.executable, "-c", FMREC_RUN, str(args.data), str(args.epochs),
                     ",".join(configs), args.clock], capture_output=True, text=True, check=True,
                    env=env).stdout)
                fm.update({f"{label}:{cfg}" if label else cfg: r for cfg, r in out.items()})
            c_secs.append(c)
            line = f"run {rep}: C storage order {c:.3f} s"
            for name in runs:
                fm_secs[name].append(fm[name]["median"])
                ratios[name].append(fm[name]["median"] / c)
                line += (f" | {name} {fm[name]['median']:.3f} s = {ratios[name][-1]:.2f}x"
                         f" (RMSE {fm[name]['train_rmse']:.4f})")
            print(line, flush=True)
    print(f"clock: {args.clock}")
    print(f"C storage order: median {np.median(c_secs):.3f} s/epoch "
          f"(runs {min(c_secs):.3f}-{max(c_secs):.3f})")
    for name in runs:
        r = sorted(ratios[name])
        print(f"fmrec {name}: median {np.median(fm_secs[name]):.3f} s/epoch; ratio to C "
              f"storage order median {np.median(r):.2f}x, spread {r[0]:.2f}-{r[-1]:.2f}x "
              f"(runs: {', '.join(f'{x:.2f}' for x in r)})")


if __name__ == "__main__":
    main()
