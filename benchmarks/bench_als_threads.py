"""ALS on two threads against one: recommender-shaped data, and what bounds it elsewhere
(issue 16).

Run by hand (not in CI):

    python benchmarks/bench_als_threads.py [--data /tmp/fmrec_bench/syn.npz] [--repeat 5]

First, the seconds per epoch of ``FMRegressor(solver="als")`` with ``n_jobs=1`` and ``2``,
taking turns, on recommender-shaped data: 2M rows of one user id (20,000 users, uniform) and
one item id (5,000 items, Zipf-popular), rank 8. Every id field is one conflict-free block,
so the threads share nearly the whole sweep. Prints the median speed-up and every run's.

Then a single-thread experiment on the synthetic set of bench_core.py.

An ALS sweep is exact coordinate descent: coordinates are updated one after another, each
from the residuals the previous ones left. Threads may only share the columns of a
*conflict-free block* (consecutive columns touching disjoint rows, whose updates commute), so
the result stays the same for any number of threads. How much of a sweep lies in such blocks
depends on the data, not on the machine: a shared 2-core VM times two threads too noisily to
tell (bench_core.py prints the two-thread speed-up; it varied 1.04-1.52x between runs here).

This script times, on one thread, the cache rebuild (parallel over rows) and the sweep
restricted (through ``als_sweep``'s skip mask) to each kind of block of the synthetic set of
bench_core.py (1M rows x 20 non-zeros over 200k zipf-popular features):

* blocks of >= 8 columns, which ``als_sweep`` can hand to threads;
* single-column blocks: the popular columns, which conflict with each other;
* blocks of 2-7 columns;

and prints Amdahl's bound for two threads: the time if the parallel parts ran exactly twice
as fast and the rest stayed serial, once for what the kernel shares today (the cache rebuild
and blocks above its ``PARALLEL_MIN_NNZ`` non-zeros) and once with every >= 8-column block
shared (and, optimistically, the rows of every popular column split between the threads).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fmrec import FMRegressor
from fmrec._kernels import als as _als
from fmrec.solvers._blocks import kernel_csc

HERE = Path(__file__).resolve().parent
K = 8


def load(path: Path) -> tuple[sp.csr_matrix, np.ndarray]:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shared = HERE.parent.parent / "shared"
        subprocess.run([sys.executable, str(shared / "bench" / "gen_synthetic.py"),
                        str(path.with_suffix("")), "1000000", "20", "200000", "8", "0"],
                       check=True)
    with np.load(path) as z:
        X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        return X, z["y"].astype(np.float32)


def one_hot_set(n_rows: int = 2_000_000, n_users: int = 20_000, n_items: int = 5_000):
    rng = np.random.default_rng(0)
    users = rng.integers(0, n_users, n_rows)
    items = rng.zipf(1.3, n_rows) % n_items
    X = sp.csr_matrix((np.ones(2 * n_rows, np.float32),
                       np.column_stack([users, n_users + items]).ravel(),
                       np.arange(0, 2 * n_rows + 1, 2)), shape=(n_rows, n_users + n_items))
    return X, rng.normal(3.0, 1.0, n_rows).astype(np.float32)


def seconds_per_epoch(X, y, n_jobs: int, epochs: int = 4) -> float:
    stamps: list[float] = []
    model = FMRegressor(n_factors=K, solver="als", n_epochs=epochs, random_state=0,
                        n_jobs=n_jobs)
    model.fit(X, y, callbacks=[lambda est, epoch, logs: stamps.append(time.perf_counter())])
    return float(np.median(np.diff(stamps)))  # the first epoch's set-up left out


def thread_speed_up(repeat: int) -> None:
    X, y = one_hot_set()
    ups = []
    for _ in range(repeat):
        one, two = seconds_per_epoch(X, y, 1), seconds_per_epoch(X, y, 2)
        ups.append(one / two)
    ups.sort()
    print(f"one-hot user + item ids, {X.shape[0]} rows: two threads "
          f"{statistics.median(ups):.2f}x faster than one "
          f"(runs: {', '.join(f'{u:.2f}' for u in ups)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/fmrec_bench/syn.npz"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    thread_speed_up(args.repeat)
    X, y = load(args.data)
    n, d = X.shape
    csc, values, codes = kernel_csc(X, np.float32)
    bounds = _als.conflict_free_blocks(csc.indptr, csc.indices, n)
    indptr = csc.indptr.astype(np.int64)
    widths = np.diff(bounds)
    block_nnz = indptr[bounds[1:]] - indptr[bounds[:-1]]
    kind = np.where(widths >= 8, 0, np.where(widths == 1, 1, 2))
    column_kind = np.repeat(kind, widths)
    shared_today = np.repeat((widths >= 8) & (block_nnz >= _als.PARALLEL_MIN_NNZ), widths)
    parts = {"blocks of >= 8 columns": column_kind == 0,
             "single-column blocks": column_kind == 1,
             "blocks of 2-7 columns": column_kind == 2,
             "shared by the kernel today": shared_today}

    rng = np.random.default_rng(0)
    w, V = np.zeros(d, np.float32), rng.normal(0, 0.1, (d, K)).astype(np.float32)
    w0, r, q = np.zeros(1, np.float32), np.empty(n, np.float32), np.empty((n, K), np.float32)
    reg, sw, whole = np.ones(d, np.float32), np.ones(n, np.float32), np.array([0, d])

    def caches() -> float:
        start = time.perf_counter()
        _als.compute_caches(X.indptr, X.indices, X.data, y, 0, 0.0, w, V, r, q, 1)
        return time.perf_counter() - start

    def sweep(columns: np.ndarray | None) -> float:
        skip = (np.empty(0, np.uint8) if columns is None
                else np.ascontiguousarray(~columns, dtype=np.uint8))
        caches()
        start = time.perf_counter()
        _als.als_sweep(csc.indptr, csc.indices, values, codes, y, sw, 0, w0, w, V, r, q, 1.0,
                       reg, reg, True, True, whole, 1, skip)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"cache rebuild": [], "whole sweep": []}
    times.update({name: [] for name in parts})
    for _ in range(args.repeat):  # the parts take turns, so a change of load hits all alike
        times["cache rebuild"].append(caches())
        times["whole sweep"].append(sweep(None))
        for name, columns in parts.items():
            times[name].append(sweep(columns))
    t = {name: statistics.median(values) for name, values in times.items()}

    print(f"synthetic set: {n} rows, {X.nnz} non-zeros, {d} features; "
          f"{len(widths)} conflict-free blocks; one thread, median of {args.repeat}")
    for name, columns in parts.items():
        share = indptr[1:][columns].sum() - indptr[:-1][columns].sum()
        print(f"  {name:28s} {share / X.nnz:6.1%} of non-zeros, {t[name]:.3f} s")
    print(f"  {'cache rebuild':28s} {'':>23} {t['cache rebuild']:.3f} s")
    print(f"  {'whole sweep':28s} {'':>23} {t['whole sweep']:.3f} s")
    epoch = t["cache rebuild"] + t["whole sweep"]
    today = epoch - 0.5 * (t["cache rebuild"] + t["shared by the kernel today"])
    wide = epoch - 0.5 * (t["cache rebuild"] + t["blocks of >= 8 columns"])
    popular = wide - 0.5 * t["single-column blocks"]
    print(f"Amdahl bound, two threads: {epoch / today:.2f}x with what is shared today, "
          f"{epoch / wide:.2f}x with every >= 8-column block shared, "
          f"{epoch / popular:.2f}x if the popular columns' rows were split too")


if __name__ == "__main__":
    main()
