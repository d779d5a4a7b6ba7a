"""MCMC speed benchmark: fmrec's Gibbs sweep beside myFM's Gibbs iteration, in one run.

Run by hand (not in CI):

    python benchmarks/bench_mcmc.py [--shared ../shared] [--data /tmp/fmrec_bench/syn.npz]
                                    [--sweeps 6] [--repeat 3] [--ml-sweeps 200]
                                    [--myfm-python PATH]

Two data sets:

* the synthetic set of ``shared/bench/gen_synthetic.py`` (1,000,000 rows x 20 non-zeros over
  200,000 features, zipf-0.8 popularity, rank-8 FM plus noise, seed 0; generated once);
* MovieLens 100K u1.base, ids only (one-hot user + item), from ``FMREC_DATA_HOME`` or
  ``shared/datasets``; here both libraries also run ``--ml-sweeps`` sweeps to report the
  u1.test RMSE (one group for all features, and user/item groups).

Each measurement runs in a subprocess of its own (separate peak memory), ``--repeat`` times;
the reported figure is the median over repeats of the median steady-state sweep time (the
first sweep carries one-off set-up and is left out). fmrec runs with one thread (myFM's
sampler is single-threaded) and with two. The fmrec subprocess imports the fmrec of this
checkout. Rank 8, default priors in both libraries. Machines differ: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

LOAD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, scipy.sparse as sp
    def load(path):
        with np.load(path) as z:
            X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
            y = z["y"]
            test = None
            if "t_data" in z:
                test = (sp.csr_matrix((z["t_data"], z["t_indices"], z["t_indptr"]),
                                      shape=tuple(z["t_shape"])), z["t_y"], z["groups"])
        return X, y, test
    X, y, test = load(sys.argv[1])
    sweeps, mode = int(sys.argv[2]), sys.argv[3]
""")

FMREC_RUN = LOAD + textwrap.dedent("""
    from fmrec import FMRegressor
    n_jobs = int(sys.argv[4])
    stamps = []
    cb = lambda est, epoch, logs: stamps.append(time.perf_counter())
    groups = test[2] if mode == "groups" else None
    model = FMRegressor(n_factors=8, solver="mcmc", n_epochs=sweeps, n_burn_in=min(5, sweeps - 1),
                        random_state=0, n_jobs=n_jobs, groups=groups)
    start = time.perf_counter()
    model.fit(X, y.astype(np.float32), callbacks=[cb])
    out = {"fit": time.perf_counter() - start,
           "median": float(np.median(np.diff(stamps))) if len(stamps) > 1 else stamps[0] - start}
    if test is not None and mode != "speed":
        pred = model.predict(test[0])
        out["rmse"] = float(np.sqrt(np.mean((pred - test[1]) ** 2)))
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
""")

# myfm 0.4.0 imports pkg_resources, gone from recent setuptools: a stub is enough.
MYFM_RUN = textwrap.dedent("""
    import sys, types
    stub = types.ModuleType("pkg_resources")
    stub.DistributionNotFound = type("DistributionNotFound", (Exception,), {})
    stub.get_distribution = lambda name: types.SimpleNamespace(version="0.4.0")
    sys.modules.setdefault("pkg_resources", stub)
""") + LOAD + textwrap.dedent("""
    import myfm
    stamps = []
    def cb(i, fm, hyper, history):
        stamps.append(time.perf_counter())
        return False, None
    kw = {}
    if mode == "groups":
        kw["grouping"] = [int(g) for g in test[2]]
    model = myfm.MyFMRegressor(rank=8, random_seed=0)
    start = time.perf_counter()
    model.fit(X, y, n_iter=sweeps, n_kept_samples=max(1, sweeps - 5), callback=cb, **kw)
    out = {"fit": time.perf_counter() - start, "median": float(np.median(np.diff(stamps)))}
    if test is not None and mode != "speed":
        pred = model.predict(test[0])
        out["rmse"] = float(np.sqrt(np.mean((pred - test[1]) ** 2)))
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
""")

ML_WRITE = textwrap.dedent("""
    import sys
    import numpy as np
    from fmrec.datasets import (ML100K_ITEMS, ML100K_USERS, load_ml100k_split,
                                one_hot_user_item)
    train, test = load_ml100k_split("u1", sys.argv[1])
    X, Xt = one_hot_user_item(train), one_hot_user_item(test)
    groups = np.r_[np.zeros(ML100K_USERS, int), np.ones(ML100K_ITEMS, int)]
    np.savez(sys.argv[2], data=X.data, indices=X.indices, indptr=X.indptr, shape=X.shape,
             y=train["rating"].to_numpy(np.float64), t_data=Xt.data, t_indices=Xt.indices,
             t_indptr=Xt.indptr, t_shape=Xt.shape, t_y=test["rating"].to_numpy(np.float64),
             groups=groups)
""")


def run(python: str, script: str, *args, fmrec: bool) -> dict:
    env = dict(os.environ)
    if fmrec:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([python, "-c", script, *map(str, args)], capture_output=True,
                          text=True, env=env)
    if proc.returncode:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def repeated(n: int, python: str, script: str, *args, fmrec: bool) -> dict:
    results = [run(python, script, *args, fmrec=fmrec) for _ in range(n)]
    out = {key: statistics.median(r[key] for r in results) for key in results[0]}
    out["all"] = [round(r["median"], 4) for r in results]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--data", type=Path, default=Path("/tmp/fmrec_bench/syn.npz"))
    parser.add_argument("--sweeps", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ml-sweeps", type=int, default=200)
    parser.add_argument("--myfm-python", default=sys.executable)
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args()

    if not args.skip_synthetic:
        if not args.data.exists():
            args.data.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, str(args.shared / "bench" / "gen_synthetic.py"),
                            str(args.data.with_suffix("")), "1000000", "20", "200000", "8",
                            "0"], check=True)
        report("synthetic 1M x 20 nnz, 200k features", args.data, args.sweeps, args)

    home = Path(os.environ.get("FMREC_DATA_HOME", args.shared / "datasets"))
    if (home / "ml-100k" / "u1.base").is_file():
        ml = args.data.parent / "ml100k_u1.npz"
        ml.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        subprocess.run([sys.executable, "-c", ML_WRITE, str(home), str(ml)], check=True,
                       env=env)
        report("ml-100k u1 ids only", ml, max(args.sweeps, 20), args)
        for mode in ("plain", "groups"):
            fm = run(sys.executable, FMREC_RUN, ml, args.ml_sweeps, mode, 1, fmrec=True)
            my = run(args.myfm_python, MYFM_RUN, ml, args.ml_sweeps, mode, fmrec=False)
            print(f"  {args.ml_sweeps} sweeps, {mode:6s}: u1.test RMSE fmrec {fm['rmse']:.4f} "
                  f"(fit {fm['fit']:.2f} s), myFM {my['rmse']:.4f} (fit {my['fit']:.2f} s)")
    else:
        print(f"MovieLens 100K not found under {home}: skipped")


def report(title: str, path: Path, sweeps: int, args) -> None:
    print(f"{title}: median over {args.repeat} runs of the median sweep time ({sweeps} sweeps)")
    fm1 = repeated(args.repeat, sys.executable, FMREC_RUN, path, sweeps, "speed", 1, fmrec=True)
    fm2 = repeated(args.repeat, sys.executable, FMREC_RUN, path, sweeps, "speed", 2, fmrec=True)
    try:
        my = repeated(args.repeat, args.myfm_python, MYFM_RUN, path, sweeps, "speed",
                      fmrec=False)
    except RuntimeError as exc:
        my = None
        print("  myFM not measured:", exc)
    for name, r in (("fmrec 1 thread ", fm1), ("fmrec 2 threads", fm2), ("myFM           ", my)):
        if r is None:
            continue
        ratio = f", {my['median'] / r['median']:.2f}x faster than myFM" if my and r is not my \
            else ""
        print(f"  {name} {r['median'] * 1e3:9.2f} ms/sweep (runs {r['all']}), peak "
              f"{r['peak_mb']:.0f} MB{ratio}")


if __name__ == "__main__":
    main()
