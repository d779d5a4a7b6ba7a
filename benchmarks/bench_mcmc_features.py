"""Bayesian FM with side and implicit features: fmrec's Recommender beside myFM, one run.

Run by hand (not in CI):

    python benchmarks/bench_mcmc_features.py [--data-home DIR] [--sweeps 200] [--repeat 3]

MovieLens 100K, official u1 split. The features are built once, by ``fmrec.Recommender``
(train-only): user block = user id, gender, occupation (and age with ``--age``) and, with
implicit sets, the items the user rated in u1.base at 1/√n; item block = item id and genres
(1/n), and with ``--implicit both`` the users who rated the item. myFM gets the very same
relation blocks (``myfm.RelationBlock``) and the same hyperprior groups (one per field), so
both libraries sample the same model; rank 8, ``--sweeps`` sweeps, 5 of burn-in, default
priors, one thread for fmrec (myFM's sampler is single-threaded). Prints the u1.test RMSE and
the fit time of each (median over ``--repeat`` runs, the two libraries taking turns), the
median of the runs' time ratios and their range (the spread of a shared machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fmrec import FMRegressor, Recommender
from fmrec.datasets import load_movielens
from fmrec.metrics import rmse

REPO = Path(__file__).resolve().parents[1]


def import_myfm():
    # myfm 0.4.0 imports pkg_resources, gone from recent setuptools: a stub is enough.
    stub = types.ModuleType("pkg_resources")
    stub.DistributionNotFound = type("DistributionNotFound", (Exception,), {})
    stub.get_distribution = lambda name: types.SimpleNamespace(version="0.4.0")
    sys.modules.setdefault("pkg_resources", stub)
    import myfm

    return myfm


def build(data, implicit, age):
    user_cols = ["user_id", "gender", "occupation"] + (["age"] if age else [])
    rec = Recommender(target="rating", implicit=implicit, random_state=0,
                      user_features=data.users[user_cols],
                      item_features=data.items[["item_id", "genres"]],
                      model=FMRegressor(n_factors=8, solver="mcmc", n_epochs=2, n_burn_in=1))
    train, test = data.splits["u1"]
    dataset = rec.make_dataset().fit(train)  # the rows the Recommender would train on
    X, y = dataset.training_rows(train)
    X_test = dataset.design(test["user_id"].to_numpy(), test["item_id"].to_numpy())
    return rec, X, y, X_test, test["rating"].to_numpy(np.float64), dataset.feature_fields()


def run_fmrec(X, y, X_test, y_test, groups, sweeps, n_jobs):
    model = FMRegressor(n_factors=8, solver="mcmc", n_epochs=sweeps, n_burn_in=5,
                        groups=groups, random_state=0, n_jobs=n_jobs)
    start = time.perf_counter()
    model.fit(X, y)
    seconds = time.perf_counter() - start
    return rmse(y_test, model.predict(X_test)), seconds


def run_myfm(myfm, X, y, X_test, y_test, groups, sweeps):
    def blocks(D):
        return [myfm.RelationBlock(b.index.astype(np.int64),
                                   sp.csr_matrix(b.matrix, dtype=np.float64))
                for b in D.blocks]

    fm = myfm.MyFMRegressor(rank=8, random_seed=0)
    stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # myFM's progress bar
    empty = sp.csr_matrix((X.shape[0], 0), dtype=np.float64)
    start = time.perf_counter()
    fm.fit(empty, y, X_rel=blocks(X), n_iter=sweeps, n_kept_samples=sweeps - 5,
           grouping=[int(g) for g in groups])
    seconds = time.perf_counter() - start
    sys.stderr.close()
    sys.stderr = stderr
    pred = fm.predict(sp.csr_matrix((X_test.shape[0], 0), dtype=np.float64),
                      X_rel=blocks(X_test))
    return rmse(y_test, np.clip(pred, 1, 5)), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=os.environ.get(
        "FMREC_DATA_HOME", str(REPO.parent / "shared" / "datasets")))
    parser.add_argument("--sweeps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--age", action="store_true", help="add the age column to users")
    parser.add_argument("--n-jobs", type=int, default=1, help="fmrec's threads (default 1)")
    parser.add_argument("--implicit", nargs="+", default=["none", "users", "both"],
                        choices=["none", "users", "both"])
    args = parser.parse_args()
    data = load_movielens("100k", args.data_home, download=False)
    myfm = import_myfm()
    print(f"MovieLens 100K u1, rank 8, {args.sweeps} sweeps, median of {args.repeat} runs, "
          f"fmrec on {args.n_jobs} thread(s)")
    print(f"{'features':34} {'fmrec RMSE':>10} {'fit s':>7} {'myFM RMSE':>10} {'fit s':>7} "
          f"{'speed-up':>8} {'range':>12}")
    for implicit in [False if name == "none" else name for name in args.implicit]:
        _, X, y, X_test, y_test, groups = build(data, implicit, args.age)
        # Interleaved, so that a change of the machine's load hits both libraries alike;
        # the speed-up is the median of the runs' ratios.
        ours, theirs = [], []
        for _ in range(args.repeat):
            ours.append(run_fmrec(X, y, X_test, y_test, groups, args.sweeps, args.n_jobs))
            theirs.append(run_myfm(myfm, X, y, X_test, y_test, groups, args.sweeps))
        o_t, m_t = (statistics.median(t for _, t in runs) for runs in (ours, theirs))
        ratios = [m[1] / o[1] for o, m in zip(ours, theirs, strict=True)]
        label = f"side + implicit={implicit}" if implicit else "side features, no implicit"
        print(f"{label:34} {ours[0][0]:10.4f} {o_t:7.2f} {theirs[0][0]:10.4f} {m_t:7.2f} "
              f"{statistics.median(ratios):7.2f}x {min(ratios):5.2f}-{max(ratios):.2f}x",
              flush=True)


if __name__ == "__main__":
    main()
