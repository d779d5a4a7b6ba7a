"""Seconds per sweep of ``FMClassifier``'s default solver (ALS: a Newton step per coordinate
under the log loss), and its instruction counts under callgrind.

Two data sets from MovieLens 100K (``FMREC_DATA_HOME``), float32, rank 16:

* ``demo``: what ``fmrec demo``'s "rated vs 4 sampled unrated, features" model trains on,
  ``Recommender(target=None, negatives=4, user_features=users, item_features=items)`` over
  ``u1.base``: 400,000 rows; the user ids and demographics are a relation block (swept per
  entity), the item ids and genres ordinary columns.
* ``ids``: one-hot user and item ids of all 100,000 ratings, label rating >= 4.

Each repeat fits ``n_jobs=1`` and ``n_jobs=2`` in turn (20 sweeps); the medians and ranges of
fit seconds per sweep are printed. With ``--callgrind`` one sweep of each set also runs under
``valgrind --tool=callgrind`` with collection on only inside the ALS kernel's entry points,
and the instruction count is printed with the share spent in sigmoids (the vector sigmoid,
or glibc's exp() where a build calls it).

    python benchmarks/bench_logistic_als.py [--repeats 5] [--callgrind]

About a minute without callgrind, three more with it.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fmrec import FMClassifier, Recommender
from fmrec.datasets import load_movielens

SWEEPS = 20
TOGGLES = ("*als_sweep*", "*compute_caches*", "*block_*")
# callgrind_annotate's lines of the vector sigmoid, and of glibc's exp() and its wrapper
SIGMOID_LINES = re.compile(r"sigmoid_many|__ieee754_exp|exp@")


@functools.cache
def movielens():
    """MovieLens 100K from ``FMREC_DATA_HOME`` (else ../shared/datasets), read once."""
    home = Path(os.environ.get("FMREC_DATA_HOME",
                               Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    return load_movielens("100k", home, download=False)


def fit(name: str, n_jobs: int, sweeps: int = SWEEPS) -> float:
    """Seconds of one fit of ``sweeps`` sweeps on the set ``name``."""
    ml = movielens()
    model = FMClassifier(n_factors=16, n_epochs=sweeps, random_state=0, n_jobs=n_jobs)
    if name == "demo":
        train = ml.splits["u1"][0]
        items = ml.items.drop(columns=["title"], errors="ignore")
        rec = Recommender(target=None, negatives=4, user_features=ml.users,
                          item_features=items, model=model, random_state=0)
        start = time.perf_counter()
        rec.fit(train)
        return time.perf_counter() - start
    r = ml.ratings
    users = r["user_id"].astype("category").cat.codes.to_numpy()
    items = r["item_id"].astype("category").cat.codes.to_numpy()
    rows = np.repeat(np.arange(len(r)), 2)
    cols = np.column_stack([users, users.max() + 1 + items]).ravel()
    X = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)))
    y = (r["rating"].to_numpy() >= 4).astype(int)
    start = time.perf_counter()
    model.fit(X, y)
    return time.perf_counter() - start


def callgrind(name: str) -> tuple[int, int]:
    """(instructions in the ALS kernel for one sweep, of which in sigmoids) under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
               *[f"--toggle-collect={t}" for t in TOGGLES],
               sys.executable, __file__, "--inner", name]
        subprocess.run(cmd, check=True, capture_output=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        text = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", out],
                              check=True, capture_output=True, text=True).stdout
    total = sigmoid = 0
    for line in text.splitlines():
        count = line.split(maxsplit=1)[0].replace(",", "") if line.strip() else ""
        if not count.isdigit():
            continue
        if "PROGRAM TOTALS" in line:
            total = int(count)
        elif SIGMOID_LINES.search(line):
            sigmoid += int(count)
    return total, sigmoid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        fit(args.inner, n_jobs=1, sweeps=1)
        return
    for name in ("demo", "ids"):
        fit(name, 1, sweeps=1)  # warm: the tables' first read, the kernels' first call
        per_sweep = {1: [], 2: []}
        for _ in range(args.repeats):
            for n_jobs in (1, 2):
                per_sweep[n_jobs].append(fit(name, n_jobs) / SWEEPS)
        for n_jobs, times in per_sweep.items():
            print(f"{name}: n_jobs={n_jobs}: {statistics.median(times) * 1e3:.1f} ms a sweep "
                  f"(runs {min(times) * 1e3:.1f}-{max(times) * 1e3:.1f}, {SWEEPS} sweeps a fit)",
                  flush=True)
        ratios = [a / b for a, b in zip(per_sweep[1], per_sweep[2], strict=True)]
        print(f"{name}: two threads {statistics.median(ratios):.2f}x over one "
              f"(runs {min(ratios):.2f}-{max(ratios):.2f})", flush=True)
        if args.callgrind:
            total, sigmoid = callgrind(name)
            print(f"{name}: one sweep under callgrind: {total / 1e6:.0f}M instructions in the "
                  f"ALS kernel, {sigmoid / 1e6:.0f}M ({sigmoid / total:.0%}) in sigmoids",
                  flush=True)


if __name__ == "__main__":
    main()
