"""Instruction counts (callgrind) of one BPR epoch on MovieLens 100K: FMRanker's kernel and
implicit's BPR, the repeatable figure behind bench_bpr.py's noisy timings (issue 16).

FMRanker: collection is switched on only inside the kernel's parallel body
(``--toggle-collect='*run_epoch*_omp_fn*'``), one epoch. implicit's library is stripped, so
its epoch is (whole run with 3 iterations - whole run with 1) / 2, which also catches whatever
varies between two runs outside its kernel (four runs here gave 47.5, 48.3, 48.4 and 67.2M):
repeat it and take the low figure. FMRanker's count repeats exactly. One thread, k = 64.

    python benchmarks/callgrind_bpr.py [--configs default,nc1,nc1-constant,popularity]
                                       [--general | --features]

About 4 minutes with the default --configs default (three callgrind runs).

``--general`` makes FMRanker take its general (merged sparse rows) path on the same one-hot
data; ``--features`` gives it the users' and items' side features beside the ids (the
general path, as ``Recommender`` with user and item features takes it). Each callgrind run
takes about a minute (Python starts under valgrind).
"""

from __future__ import annotations

import argparse
import os
import sys

CONFIGS = {"default": {}, "nc1": {"n_candidates": 1},
           "nc1-constant": {"n_candidates": 1, "lr_schedule": "constant"},
           "popularity": {"negative_sampling": "popularity"}}


def run_one(which: str, epochs: int, config: str, rows: str) -> None:
    """The program run under valgrind: ``epochs`` epochs of one library."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_bpr import K, ml100k, ml100k_features, one_hot, pattern
    train, _, n_users, n_items = ml100k()
    if which == "fmrec":
        import fmrec.solvers.bpr as solver
        from fmrec.models.ranker import FMRanker
        if rows == "general":
            solver.is_one_hot = lambda U, I: False  # noqa: E741
        if rows == "features":
            U, I, *train = ml100k_features()  # noqa: E741
        else:
            U, I = one_hot(n_users, n_items)  # noqa: E741
        FMRanker(K, n_epochs=epochs, random_state=0, n_jobs=1, **CONFIGS[config]).fit(
            U, I, train[0], train[1])
    else:
        from implicit.cpu.bpr import BayesianPersonalizedRanking
        BayesianPersonalizedRanking(factors=K, iterations=epochs, random_state=0,
                                    num_threads=1).fit(pattern(train, n_users, n_items),
                                                       show_progress=False)


def instructions(args: list[str], toggle: str | None) -> int:
    """Instructions of one run of this script's ``--inner`` mode under callgrind."""
    from callgrind_sgd import counts
    return counts([sys.executable, os.path.abspath(__file__), "--inner", *args], toggle)["Ir"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="default",
                    help="comma-separated, of default, nc1, nc1-constant, popularity (about "
                         "80 s each)")
    rows = ap.add_mutually_exclusive_group()
    rows.add_argument("--general", action="store_true")
    rows.add_argument("--features", action="store_true",
                      help="FMRanker on the ids plus side features (bench_bpr.ml100k_features)")
    ap.add_argument("--inner", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        which, epochs, config, rows = args.inner
        run_one(which, int(epochs), config, rows)
        return
    rows = "general" if args.general else "features" if args.features else "ids"
    one = instructions(["implicit", "1", "default", "ids"], None)
    three = instructions(["implicit", "3", "default", "ids"], None)
    implicit_epoch = (three - one) / 2
    print("implicit BPR (k=64, one thread): " f"{implicit_epoch / 1e6:.1f}M instructions/epoch")
    for config in args.configs.split(","):
        ir = instructions(["fmrec", "1", config, rows], "*run_epoch*_omp_fn*")
        label = {"ids": "", "general": " (general path)", "features": " (side features)"}[rows]
        print(f"FMRanker {config}{label}: "
              f"{ir / 1e6:.1f}M instructions/epoch, {ir / implicit_epoch:.2f}x implicit's",
              flush=True)


if __name__ == "__main__":
    main()
