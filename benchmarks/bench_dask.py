"""Dask benchmark: DaskFMRegressor on Parquet data larger than a worker, beside fmrec in memory.

Run by hand (not in CI):

    python benchmarks/bench_dask.py [--rows 20000000] [--partitions 40] [--features 200000]
                                    [--rounds 6] [--learning-rate 0.05] [--sample-rows N]
                                    [--combine average|sum]
                                    [--dir /tmp/fmrec_bench_dask] [--memory-limit 3GB] [--spill]
    python benchmarks/bench_dask.py --rows 400000 --partitions 8 --dir /tmp/fmrec_bench_dask_small
                                    # smoke run, ~16 s

Data (written once to ``--dir``; a ``manifest.json`` written last marks a complete set, which
later runs reuse): the distribution of ``shared/bench/gen_synthetic.py`` — 20 distinct
non-zeros per row, all 1, over ``--features`` (default 200,000) features with zipf-like
popularity p ∝ 1/j^0.8; y from a rank-8 FM (w0 = 3, w and V ~ N(0, 0.1)) plus N(0, 0.5)
noise — drawn chunk by chunk, one seeded chunk per Parquet file (int32 c0..c19 = the sorted
column ids, float32 y), so generating needs the memory of one chunk. 20M rows are 1.06 GB of
Parquet, 3.28 GB as float32 CSR with int32 indices (153 s to write). The 200,000 test rows come
from their own seed and stay in memory.

What runs, one after the other (never sharing the cores):

* fmrec.FMRegressor, 1 thread (``n_jobs=1``), on the first ``--sample-rows`` rows (default
  rows / 10: 2,000,000), read from the same Parquet files, in a process of its own so that its
  peak RSS is its own; setup = read + CSR build.
* DaskFMRegressor on every row, on ``LocalCluster(n_workers=2, threads_per_worker=1,
  memory_limit=--memory-limit)``: the 3 GB default is below the 3.28 GB the whole set takes
  as CSR, so no worker could hold it. Each Parquet partition is read once on the worker
  that trains on it and turned into a CSR chunk there (``dd.read_parquet(...).to_delayed()`` →
  ``frame_to_csr`` / ``frame_to_y``, both over the same read task). Setup = from ``fit`` to
  the start of the first round (read, CSR, shard build); train = the rounds, timed by
  wrapping ``DistributedSGD.epoch``; the task stream gives the SGD pass time on the workers.

Both fits: SGD with AdaGrad, rank 8, lr 0.05, reg_linear 2, reg_factors 4 (see
``model_params``), same number of epochs (``--rounds``), random_state 0; Dask folds the
shards' parameters by ``--combine`` (default "average", DaskFMRegressor's default). rows/s = rows ×
rounds / train seconds (and / (train + setup)). Peak memory is each process's ru_maxrss.

Spilling and pausing are off by default (``--spill`` restores Dask's 60/70/80 % thresholds).
A shard is the worker's whole share of the rows — one object of ~1.6 GB here, alive for the
whole fit — so with the 3 GB limit a worker sits at 2.0-2.3 GiB, above the spill (70 %) and
pause (80 %) thresholds. Measured on the full set with spilling on: setup took 31 s instead
of 10-12 s and rounds 19-31 s instead of 9-13 s, with 69 s of system time instead of 19 s (the
workers move managed data to disk and back) and nine pauses. With spilling off but pausing on,
one run of two went wrong: right after the shards were built a worker paused, the scheduler
gave its shard's round to the other worker, which fetched the 1.6 GB shard, passed 95 % of
its limit and was restarted; the other worker then stayed paused and the fit hung. The
nanny's restart at 95 % stays on, so the limit is still enforced.

Full run, 2026-11-25, 2 cores (``nproc`` = 2, AMD EPYC, shared with other sessions' jobs),
24 GB RAM, dask/distributed 2026.8.0, 20M rows, 40 partitions, 6 rounds:

    model: {'n_factors': 8, 'solver': 'sgd', 'n_epochs': 6, 'learning_rate': 0.05,
    'reg_linear': 2.0, 'reg_factors': 4.0, 'random_state': 0, 'n_jobs': 1}; Dask combine='average'
    (in memory = fmrec.FMRegressor, 1 thread, on the sample; Dask 2x1 = DaskFMRegressor on
    2 workers x 1 thread; RMSE on the test rows)
    setting           rows rounds setup s train s     rows/s   w/ setup peak MiB (limit)    RMSE
    --------------------------------------------------------------------------------------------
    in memory    2,000,000      6     1.4     8.9  1,354,753  1,174,297              991  0.6329
    Dask 2x1    20,000,000      6    11.9    60.9  1,971,753  1,648,464 2380/2379 (2861)  0.5396
    test RMSE: noise floor 0.5, predicting the training mean 0.7728; Dask final train RMSE 0.5243
    Dask round times (s): 12.5 11.8 8.4 9.4 8.8 9.9
    SGD passes on the workers: mean 9.7 s (12 passes)
    parameter traffic per round: 60.8 MB; Dask wall time with setup 72.8 s; spilling off

Ten times the rows bring the test RMSE from 0.633 to 0.540 in the same 6 epochs. With
``--combine sum`` (same run otherwise: 2.16M rows/s) the Dask test RMSE is 0.659, worse than
the 2M-row sample's: adding both shards' changes overshoots parameters that each shard's 10M
rows already settle (train RMSE 0.537 against 0.524). Speeds vary
by ~20 % from run to run on this shared machine: over five full runs of this setting Dask
trained 1.6-2.1M rows/s, 1.3-1.7x the single process's 1.1-1.4M. Each worker passes its 10M
rows in ~9-10 s (~1.0M rows/s, against 1.35M in the single process here: two processes share
the two cores' caches and memory bandwidth, and the client process needs some CPU too); the rest
of a round (~0.5 s) is the 61 MB of parameters sent and received (the touched rows of w, V and
their AdaGrad sums, i.e. every feature here) and their sum on the client. During the rounds
a worker's RSS is ~2100 MiB for a 1560 MiB share of the data (~0.5 GiB is the worker process
itself: Dask, pyarrow, fmrec, the parameters); building the shards adds ~300 MiB at the peak.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.sparse as sp

NNZ = 20  # non-zeros per row, all valued 1
RANK = 8  # rank of the true model and of the fitted ones
NOISE = 0.5  # standard deviation of the noise: the best reachable test RMSE
TEST_ROWS = 200_000
SEED = 0


# ----------------------------------------------------------------------------- data
def true_model(d: int) -> tuple[float, np.ndarray, np.ndarray]:
    """w0, w, V of the generating FM (shared/bench/gen_synthetic.py's distribution)."""
    rng = np.random.default_rng([SEED, 0])
    return 3.0, rng.normal(0, 0.1, d), rng.normal(0, 0.1, (d, RANK))


def popularity(d: int) -> np.ndarray:
    """Zipf-like feature popularity p ∝ 1/j^0.8."""
    p = 1.0 / np.arange(1, d + 1) ** 0.8
    return p / p.sum()


def draw_rows(n: int, d: int, stream: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows as sorted column ids (n, NNZ) int32 and their float32 targets.

    Each chunk has its own seed (``stream``), so the rows never depend on how many chunks came
    before and memory stays that of one chunk.
    """
    rng = np.random.default_rng([SEED, *stream])
    cols = np.sort(rng.choice(d, size=(n, NNZ), p=popularity(d)), axis=1)
    while True:  # popular features repeat inside a row: redraw the repeats uniformly
        dup = np.zeros(cols.shape, bool)
        dup[:, 1:] = cols[:, 1:] == cols[:, :-1]
        if not dup.any():
            break
        cols[dup] = rng.integers(0, d, size=int(dup.sum()))
        cols.sort(axis=1)
    w0, w, V = true_model(d)
    X = rows_to_csr(cols.astype(np.int32), d, np.float64)
    q = X @ V
    y = w0 + X @ w + 0.5 * ((q ** 2).sum(1) - X @ (V ** 2).sum(1)) + rng.normal(0, NOISE, n)
    return cols.astype(np.int32), y.astype(np.float32)


def rows_to_csr(cols: np.ndarray, d: int, dtype=np.float32) -> sp.csr_matrix:
    """CSR (int32 indices and indptr) of rows given as sorted distinct column ids."""
    n = cols.shape[0]
    indptr = np.arange(0, n * NNZ + 1, NNZ, dtype=np.int32)
    return sp.csr_matrix((np.ones(n * NNZ, dtype), cols.ravel(), indptr), shape=(n, d))


def partition_sizes(rows: int, partitions: int) -> list[int]:
    base, extra = divmod(rows, partitions)
    return [base + (i < extra) for i in range(partitions)]


def generate(folder: Path, rows: int, partitions: int, d: int) -> dict:
    """Write the partitions as Parquet (c0..c19 int32, y float32) unless already complete.

    The manifest is written last, so a set whose generation was interrupted is redone.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest_path = folder / "manifest.json"
    wanted = {"rows": rows, "partitions": partitions, "features": d, "nnz": NNZ,
              "rank": RANK, "seed": SEED}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if ({k: manifest.get(k) for k in wanted} == wanted
                and all((folder / f).exists() for f in manifest["files"])):
            print(f"data: {folder} already holds the set (manifest.json), not regenerated")
            return manifest
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        old.unlink()
    start = time.perf_counter()
    files = []
    for i, n in enumerate(partition_sizes(rows, partitions)):
        cols, y = draw_rows(n, d, stream=(1, i))
        table = pa.table({**{f"c{j}": cols[:, j] for j in range(NNZ)}, "y": y})
        files.append(f"part-{i:04d}.parquet")
        pq.write_table(table, folder / files[-1])
    manifest = dict(wanted, files=files, part_rows=partition_sizes(rows, partitions))
    manifest_path.write_text(json.dumps(manifest))
    size = sum((folder / f).stat().st_size for f in files)
    print(f"data: wrote {rows:,} rows in {partitions} Parquet files to {folder} "
          f"({size / 1e9:.2f} GB on disk) in {time.perf_counter() - start:.0f} s")
    return manifest


def frame_to_csr(frame, d: int) -> sp.csr_matrix:
    """One Parquet partition's column ids as float32 CSR, built where the partition lives."""
    cols = frame[[f"c{j}" for j in range(NNZ)]].to_numpy(dtype=np.int32)
    return rows_to_csr(cols, d)


def frame_to_y(frame) -> np.ndarray:
    return frame["y"].to_numpy(dtype=np.float32)


def csr_bytes(rows: int) -> int:
    """In-memory size of ``rows`` rows as float32 CSR with int32 indices and indptr."""
    return rows * NNZ * (4 + 4) + (rows + 1) * 4


# ----------------------------------------------------------------------------- models
def model_params(rounds: int, learning_rate: float) -> dict:
    """One setting for both fits: SGD with AdaGrad, 4x fmrec's default regularization.

    Chosen on the 2M-row sample (test RMSE after 6 epochs, 1 thread): the defaults
    (reg_linear=0.5, reg_factors=1) overfit from the second epoch (0.68 at lr 0.05, 0.70 at
    lr 0.1, 0.68 at lr 0.02); reg_linear=2, reg_factors=4 at lr 0.05 reach 0.633 and still
    improve; 5/10 reach 0.650; lr 0.02 with 2/4 0.648.
    """
    return dict(n_factors=RANK, solver="sgd", n_epochs=rounds, learning_rate=learning_rate,
                reg_linear=2.0, reg_factors=4.0, random_state=0, n_jobs=1)


def rmse(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - y) ** 2)))


def single_process(folder: str, files: list[str], sample_rows: int, d: int, params: dict,
                   X_test: sp.csr_matrix, y_test: np.ndarray) -> dict:
    """fmrec.FMRegressor on the first ``sample_rows`` rows, in a process of its own (so that
    its peak RSS is its own). Setup = reading the Parquet files and building the CSR."""
    import pandas as pd

    from fmrec import FMRegressor

    start = time.perf_counter()
    frames, n = [], 0
    for f in files:
        if n >= sample_rows:
            break
        frames.append(pd.read_parquet(Path(folder) / f))
        n += len(frames[-1])
    frame = pd.concat(frames, ignore_index=True).iloc[:sample_rows]
    X, y = frame_to_csr(frame, d), frame_to_y(frame)
    del frames, frame
    setup = time.perf_counter() - start
    model = FMRegressor(**params)
    start = time.perf_counter()
    model.fit(X, y)
    train = time.perf_counter() - start
    return {"rows": X.shape[0], "setup": setup, "train": train,
            "rmse": rmse(model.predict(X_test), y_test), "y_mean": float(y.mean()),
            "peak_mb": [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]}


@contextmanager
def round_clock(stamps: list):
    """Record (start, end) of every round by wrapping DistributedSGD.epoch: the fit's first
    round starts once the shards are built, which separates setup from training time."""
    from fmrec.dask._training import DistributedSGD

    epoch = DistributedSGD.epoch

    def timed(self):
        start = time.perf_counter()
        out = epoch(self)
        stamps.append((start, time.perf_counter()))
        return out

    DistributedSGD.epoch = timed
    try:
        yield
    finally:
        DistributedSGD.epoch = epoch


def dask_inputs(folder: Path, manifest: dict):
    """X (dask array of CSR chunks) and y from one read of each Parquet partition."""
    import dask
    import dask.array as da
    import dask.dataframe as dd

    d = manifest["features"]
    frames = dd.read_parquet(str(folder), columns=[f"c{j}" for j in range(NNZ)] + ["y"])
    parts = frames.to_delayed()
    if len(parts) != len(manifest["part_rows"]):
        raise RuntimeError(f"read_parquet gave {len(parts)} partitions, the manifest lists "
                           f"{len(manifest['part_rows'])}")
    meta = sp.csr_matrix((0, d), dtype=np.float32)
    # X and y of a partition are two tasks over the same read task: one read per file.
    X = da.concatenate([da.from_delayed(dask.delayed(frame_to_csr)(p, d), shape=(n, d),
                                        dtype=np.float32, meta=meta)
                        for p, n in zip(parts, manifest["part_rows"], strict=True)])
    y = da.concatenate([da.from_delayed(dask.delayed(frame_to_y)(p), shape=(n,),
                                        dtype=np.float32)
                        for p, n in zip(parts, manifest["part_rows"], strict=True)])
    return X, y


def worker_peaks(client) -> list[float]:
    """Peak resident set of each worker process in MiB (Linux reports ru_maxrss in KiB)."""
    peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return [peaks[w] for w in sorted(peaks)]


def on_dask(folder: Path, manifest: dict, params: dict, args, X_test, y_test) -> dict:
    """DaskFMRegressor on every row, 2 single-threaded workers of ``--memory-limit`` each."""
    import dask
    from distributed import Client, LocalCluster, get_task_stream

    from fmrec.dask import DaskFMRegressor

    # Without --spill: no spilling and no pausing (see the module docstring for why); the
    # nanny still restarts a worker past 95% of its limit, so the limit is really enforced.
    memory = {f"distributed.worker.memory.{key}": (value if args.spill else False)
              for key, value in (("target", 0.6), ("spill", 0.7), ("pause", 0.8))}
    with dask.config.set(memory), \
            LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=args.memory_limit,
                         dashboard_address=":0") as cluster, Client(cluster) as client:
        X, y = dask_inputs(folder, manifest)
        model = DaskFMRegressor(client=client, combine=args.combine, **params)
        stamps: list = []
        start = time.perf_counter()
        with round_clock(stamps), get_task_stream(client) as stream:
            model.fit(X, y)
        end = time.perf_counter()
        peaks = worker_peaks(client)
        limits = [w["memory_limit"] for w in client.scheduler_info(n_workers=-1)["workers"]
                  .values()]
    train = sum(b - a for a, b in stamps)
    passes = [sum(t["stop"] - t["start"] for t in task["startstops"] if t["action"] == "compute")
              for task in stream.data if "local_pass" in str(task["key"])]
    return {"rounds_s": [b - a for a, b in stamps], "pass_s": passes,
            "rows": manifest["rows"], "setup": stamps[0][0] - start, "train": train,
            "total": end - start, "rmse": rmse(model.predict(X_test), y_test),
            "peak_mb": peaks, "limit_mb": [lim / 2**20 for lim in limits],
            "sync_mb": float(np.mean(model.sync_bytes_)) / 1e6,
            "train_rmse": float(np.sqrt(model.history_["train_loss"][-1]))}


# ----------------------------------------------------------------------------- report
def print_table(results: dict, rounds: int) -> None:
    head = (f"{'setting':10s} {'rows':>11s} {'rounds':>6s} {'setup s':>7s} {'train s':>7s} "
            f"{'rows/s':>10s} {'w/ setup':>10s} {'peak MiB (limit)':>16s} {'RMSE':>7s}")
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        seen = r["rows"] * rounds
        peak = "/".join(f"{m:.0f}" for m in r["peak_mb"])
        if "limit_mb" in r:
            peak += f" ({max(r['limit_mb']):.0f})"
        print(f"{name:10s} {r['rows']:>11,} {rounds:>6d} {r['setup']:>7.1f} {r['train']:>7.1f} "
              f"{seen / r['train']:>10,.0f} {seen / (r['train'] + r['setup']):>10,.0f} "
              f"{peak:>16s} {r['rmse']:>7.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--partitions", type=int, default=40)
    parser.add_argument("--features", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=6, help="SGD epochs of both fits")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--sample-rows", type=int, default=None,
                        help="rows of the single-process fit (default: rows / 10)")
    parser.add_argument("--combine", choices=("average", "sum"), default="average",
                        help="how DaskFMRegressor folds the shards' parameters each round")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/fmrec_bench_dask"))
    parser.add_argument("--memory-limit", default="3GB", help="per Dask worker")
    parser.add_argument("--spill", action="store_true",
                        help="keep Dask's default spilling to disk (off by default)")
    args = parser.parse_args()

    manifest = generate(args.dir, args.rows, args.partitions, args.features)
    sample = args.sample_rows or args.rows // 10
    cols, y_test = draw_rows(TEST_ROWS, args.features, stream=(2, 0))
    X_test = rows_to_csr(cols, args.features)
    params = model_params(args.rounds, args.learning_rate)
    whole = csr_bytes(args.rows)
    from dask.utils import parse_bytes

    limit = parse_bytes(args.memory_limit)
    print(f"data: {args.rows:,} rows x {NNZ} non-zeros over {args.features:,} features = "
          f"{whole / 1e9:.2f} GB as float32/int32 CSR; worker memory limit {limit / 1e9:.2f} GB "
          f"({'below' if limit < whole else 'NOT below'} the whole set)")
    print(f"model: {params}; Dask combine={args.combine!r}")

    results = {}
    # The single-process fit runs first, alone, so that it and the workers never share cores.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        local = pool.submit(single_process, str(args.dir), manifest["files"], sample,
                            args.features, params, X_test, y_test).result()
    results["in memory"] = local
    results["Dask 2x1"] = on_dask(args.dir, manifest, params, args, X_test, y_test)
    print("in memory = fmrec.FMRegressor, 1 thread, on the sample; Dask 2x1 = DaskFMRegressor "
          "on 2 workers x 1 thread; RMSE on the test rows")
    print_table(results, args.rounds)
    dask_run = results["Dask 2x1"]
    print(f"test RMSE: noise floor {NOISE}, predicting the training mean "
          f"{rmse(np.full(len(y_test), local['y_mean']), y_test):.4f}; Dask final train "
          f"RMSE {dask_run['train_rmse']:.4f}")
    print("Dask round times (s): " + " ".join(f"{t:.1f}" for t in dask_run["rounds_s"]))
    print(f"SGD passes on the workers: mean {np.mean(dask_run['pass_s']):.1f} s "
          f"({len(dask_run['pass_s'])} passes)")
    print(f"parameter traffic per round: {dask_run['sync_mb']:.1f} MB; Dask wall time with "
          f"setup {dask_run['total']:.1f} s; spilling {'on' if args.spill else 'off'}")


if __name__ == "__main__":
    main()
