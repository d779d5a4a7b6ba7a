"""Dask benchmark: DaskFMRegressor on Parquet data larger than a worker, beside fmrec in memory.

Run by hand (not in CI):

    python benchmarks/bench_dask.py [--rows 20000000] [--partitions 40] [--features 200000]
                                    [--rounds 6] [--dir /tmp/fmrec_bench_dask]
                                    [--memory-limit 3GB] [--spill]
    python benchmarks/bench_dask.py --rows 400000 --partitions 8    # smoke run, < 1 minute

FIGURES (filled in below from the full run).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time
import warnings
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
    """Peak resident set of each worker process in MB (Linux reports ru_maxrss in KB)."""
    peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return [peaks[w] for w in sorted(peaks)]


def on_dask(folder: Path, manifest: dict, params: dict, args, X_test, y_test) -> dict:
    """DaskFMRegressor on every row, 2 single-threaded workers of ``--memory-limit`` each."""
    import dask
    from distributed import Client, LocalCluster

    from fmrec.dask import DaskFMRegressor

    memory = {"distributed.worker.memory.target": 0.6 if args.spill else False,
              "distributed.worker.memory.spill": 0.7 if args.spill else False}
    # Every round ships the touched rows of w and V (and their AdaGrad sums) inside the task:
    # that is the parameter traffic reported below, not a mistake to warn about.
    warnings.filterwarnings("ignore", message="Sending large graph")
    with dask.config.set(memory), \
            LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=args.memory_limit,
                         dashboard_address=":0") as cluster, Client(cluster) as client:
        X, y = dask_inputs(folder, manifest)
        model = DaskFMRegressor(client=client, **params)
        stamps: list = []
        start = time.perf_counter()
        with round_clock(stamps):
            model.fit(X, y)
        end = time.perf_counter()
        peaks = worker_peaks(client)
        limits = [w["memory_limit"] for w in client.scheduler_info(n_workers=-1)["workers"]
                  .values()]
    train = sum(b - a for a, b in stamps)
    return {"rows": manifest["rows"], "setup": stamps[0][0] - start, "train": train,
            "total": end - start, "rmse": rmse(model.predict(X_test), y_test),
            "peak_mb": peaks, "limit_mb": [lim / 2**20 for lim in limits],
            "sync_mb": float(np.mean(model.sync_bytes_)) / 1e6,
            "train_rmse": float(np.sqrt(model.history_["train_loss"][-1]))}


# ----------------------------------------------------------------------------- report
def print_table(results: dict, rounds: int) -> None:
    head = (f"{'setting':34s} {'rows':>11s} {'rounds':>6s} {'setup s':>8s} {'train s':>8s} "
            f"{'rows/s':>10s} {'rows/s+setup':>12s} {'peak MB per worker (limit)':>27s} "
            f"{'test RMSE':>9s}")
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        seen = r["rows"] * rounds
        limit = (" (" + "/".join(f"{m:.0f}" for m in r["limit_mb"]) + ")") if "limit_mb" in r \
            else ""
        peak = "/".join(f"{m:.0f}" for m in r["peak_mb"]) + limit
        print(f"{name:34s} {r['rows']:>11,} {rounds:>6d} {r['setup']:>8.1f} {r['train']:>8.1f} "
              f"{seen / r['train']:>10,.0f} {seen / (r['train'] + r['setup']):>12,.0f} "
              f"{peak:>27s} {r['rmse']:>9.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--partitions", type=int, default=40)
    parser.add_argument("--features", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=6, help="SGD epochs of both fits")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--sample-rows", type=int, default=None,
                        help="rows of the single-process fit (default: rows / 10)")
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
    print(f"model: {params}")

    results = {}
    # The single-process fit runs first, alone, so that it and the workers never share cores.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        local = pool.submit(single_process, str(args.dir), manifest["files"], sample,
                            args.features, params, X_test, y_test).result()
    results["fmrec in memory, 1 thread, sample"] = local
    results["DaskFMRegressor, 2 workers x 1 thread"] = on_dask(args.dir, manifest, params,
                                                               args, X_test, y_test)
    print_table(results, args.rounds)
    dask_run = results["DaskFMRegressor, 2 workers x 1 thread"]
    print(f"test RMSE: noise floor {NOISE}, predicting the training mean "
          f"{rmse(np.full(len(y_test), local['y_mean']), y_test):.4f}; Dask final train "
          f"RMSE {dask_run['train_rmse']:.4f}")
    print(f"parameter traffic per round: {dask_run['sync_mb']:.1f} MB; Dask wall time with "
          f"setup {dask_run['total']:.1f} s; spilling {'on' if args.spill else 'off'}")


if __name__ == "__main__":
    main()
