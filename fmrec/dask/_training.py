"""Data-parallel SGD on a Dask cluster: shards, local passes, averaging of touched rows.

Each worker holds a *shard*: its share of the partitions, validated, with the columns it
touches renumbered 0..m-1. A round sends every shard only the parameters of its own columns
(w, V and their AdaGrad sums: O(touched features · k) bytes, not O(all features · k)), runs
the single-machine SGD kernel over the shard's rows, and returns the updated rows. The client
then sets each touched row to the average of the shards' values, weighted by how often each
shard's rows use it (or, with ``combine="sum"``, adds up every shard's change); a feature one
shard alone touches takes that shard's value as it is.

Every task is a pure function of its inputs (the shard's partitions, the parameters, a seed
fixed by round and shard), so when a worker dies Dask recomputes its shard elsewhere from the
partitions' lineage and reruns the round's task: the fit goes on with the same result.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import dask
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmrec import _validation as v
from fmrec._links import sigmoid
from fmrec.dask._reduce import tree_reduce
from fmrec.metrics import log_loss
from fmrec.solvers._state import FMState, predict_csr
from fmrec.solvers.sgd import SGDSolver

# Per-row terms whose weighted mean is the metric (rmse: the square root of it).
_ROW_METRICS = ("rmse", "mae", "logloss")


@dataclass
class Shard:
    """One worker's share of the rows, over the columns it touches (``features``)."""

    features: np.ndarray  # sorted global column ids (int64)
    parts: list  # [(CSR over local columns, y, sample weights)], one per partition
    counts: np.ndarray  # Σ weights of the rows using each local column (float64)
    n_rows: int
    weight: float  # Σ sample weights
    y_sum: float  # Σ weight · y
    y_min: float
    y_max: float


def _partition_arrays(index: int, X, y, w, n_features: int, dtype, classes):
    """Validated (CSR, y, weights) of partition ``index``; errors name the partition."""
    where = f"partition {index}"
    if isinstance(X, pd.DataFrame):
        try:
            X = X.to_numpy(dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"X {where}: every column must be numeric ({exc})") from exc
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=dtype)
    else:
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X {where} must be 2-D, got shape {X.shape}")
        if X.dtype.kind not in "biuf":
            raise ValueError(f"X {where} must be numeric, got dtype {X.dtype}")
        X = sp.csr_matrix(X.astype(dtype, copy=False))
    if X.shape[1] != n_features:
        raise ValueError(f"X {where} has {X.shape[1]} columns, expected {n_features}")
    X = v.as_kernel_csr(X)
    if not np.isfinite(X.data).all():
        raise ValueError(f"X {where} contains NaN or infinity")
    n = X.shape[0]
    if y is not None:
        y = np.asarray(y.to_numpy() if isinstance(y, pd.Series | pd.DataFrame) else y)
        y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
        if y.shape != (n,):
            raise ValueError(f"y {where} has shape {y.shape}, X has {n} rows")
        y = _targets(y, classes, where)
        if classes is None:
            v.check_in_range(y, dtype, f"y {where}")
        y = y.astype(dtype)
    if w is None:
        w = np.ones(n, dtype)
    else:
        w = np.asarray(w.to_numpy() if isinstance(w, pd.Series) else w)
        w = v.check_array_1d_finite(f"sample_weight {where}", w, n, dtype)
        if (w < 0).any():
            raise ValueError(f"sample_weight {where} has negative values")
    return X, y, w


def _targets(y: np.ndarray, classes, where: str) -> np.ndarray:
    """Regression targets as floats, or labels as 0/1 given the two ``classes``."""
    if classes is None:
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"y {where} must be numeric for a regressor ({exc})") from exc
        if not np.isfinite(y).all():
            raise ValueError(f"y {where} contains NaN or infinity")
        return y
    unknown = ~np.isin(y, classes)
    if unknown.any():
        raise ValueError(f"y {where} has labels {pd.unique(y[unknown])[:5].tolist()} not "
                         f"among the classes {list(classes)}")
    return (y == classes[1]).astype(np.float64)


def build_shard(parts: list, indices: list[int], n_features: int, dtype, classes) -> Shard:
    """Validate a worker's partitions and renumber the columns they touch."""
    checked = [_partition_arrays(i, X, y, w, n_features, dtype, classes)
               for i, (X, y, w) in zip(indices, parts, strict=True)]
    counts = np.zeros(n_features)
    touched = np.zeros(n_features, bool)
    for X, _, w in checked:
        touched[X.indices] = True
        counts += np.bincount(X.indices, weights=np.repeat(w.astype(np.float64),
                                                           np.diff(X.indptr)),
                              minlength=n_features)
    features = np.flatnonzero(touched)
    local = np.full(n_features, -1, dtype=np.int64)
    local[features] = np.arange(len(features))
    if len(features) == n_features:
        # Every column is touched (the usual case for a large shard): the local numbering is
        # the global one, so keep the partitions' indices rather than a second copy of the
        # largest array (half of a float32 CSR), which would be alive beside the inputs.
        shard_parts = checked
    else:
        # The local matrix shares data and indptr with the partition: only indices are new.
        shard_parts = [(sp.csr_matrix((X.data, local[X.indices].astype(X.indices.dtype),
                                       X.indptr), shape=(X.shape[0], len(features))), y, w)
                       for X, y, w in checked]
    labelled = [(y, w) for _, y, w in checked if y is not None and len(y)]
    return Shard(features, shard_parts, counts[features],
                 n_rows=sum(X.shape[0] for X, _, _ in checked),
                 weight=float(sum(w.sum(dtype=np.float64) for _, _, w in checked)),
                 y_sum=float(sum(w.astype(np.float64) @ y.astype(np.float64)
                                 for y, w in labelled)),
                 y_min=min((float(y.min()) for y, _ in labelled), default=np.inf),
                 y_max=max((float(y.max()) for y, _ in labelled), default=-np.inf))


def shard_summary(shard: Shard) -> dict:
    """What the client needs of a shard: O(touched features), never the rows."""
    return {"features": shard.features, "counts": shard.counts, "n_rows": shard.n_rows,
            "weight": shard.weight, "y_sum": shard.y_sum, "y_min": shard.y_min,
            "y_max": shard.y_max}


def shard_futures(client, partitions: list[tuple], n_shards: int | None, n_features: int,
                  dtype, classes) -> list:
    """Futures of the shards, shard s holding partitions s, s + S, s + 2S...

    Shard s and the partitions it reads are computed on the s-th worker (in address order), so
    no partition crosses the network; ``allow_other_workers`` lets Dask rebuild it anywhere
    when that worker is lost. The assignment does not depend on where data happened to land,
    so a seeded fit is reproducible on the same number of shards.
    """
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if not workers:
        raise RuntimeError("the Dask cluster has no workers")
    n = len(workers) if n_shards is None else int(n_shards)
    n = max(1, min(n, len(partitions)))
    futures = []
    for s in range(n):
        task = dask.delayed(build_shard, pure=True)(partitions[s::n],
                                                    list(range(s, len(partitions), n)),
                                                    n_features, dtype, classes)
        futures.append(client.compute(task, workers=[workers[s % len(workers)]],
                                      allow_other_workers=True))
    return futures


def distinct_labels(client, partitions: list) -> np.ndarray:
    """The sorted distinct labels of y, reduced on the cluster."""

    def labels(y):
        y = np.asarray(y.to_numpy() if isinstance(y, pd.Series | pd.DataFrame) else y)
        y = y.reshape(-1)
        if pd.isna(y).any():
            raise ValueError("y contains missing labels (NaN/None)")
        return np.unique(y)

    def union(arrays):
        return np.unique(np.concatenate(arrays))

    pieces = [dask.delayed(labels, pure=True)(y) for _, y, _ in partitions]
    return client.compute(tree_reduce(pieces, union)).result()


def local_pass(shard: Shard, params: tuple, counts, total_weight: float, hp: dict, loss: int,
               seed: int, n_jobs) -> tuple:
    """One SGD pass over a shard's rows (partitions in random order, rows shuffled in each),
    from the given parameters of its columns. Returns the updated ones and the loss sums.

    ``n_jobs`` is resolved here, on the worker: -1 means that machine's cores.
    """
    n_threads = v.resolve_n_jobs(n_jobs)
    w0, w, V, a0, aw, aV = (np.array(p, copy=True) for p in params)
    state = FMState(float(w0[0]), w, V)
    accumulators = (a0, aw, aV)
    rng = np.random.RandomState(seed)
    loss_sum = weight_sum = 0.0
    for j in rng.permutation(len(shard.parts)):
        X, y, sw = shard.parts[j]
        if X.shape[0] == 0:
            continue
        solver = SGDSolver(X, y, sw, loss, state, counts=counts, hp=hp, rng=rng,
                           n_threads=n_threads, accumulators=accumulators,
                           total_weight=total_weight)
        part_loss, part_weight = solver.epoch()
        loss_sum += part_loss
        weight_sum += part_weight
    return state.w0, state.w, state.V, a0, aw, aV, loss_sum, weight_sum


@contextmanager
def _parameters_in_tasks():
    """Let the round's parameters travel inside its tasks without a warning per round.

    They are in the tasks on purpose, not scattered: a task whose worker dies is rerun
    elsewhere from its own arguments, which scattered data (lost with the worker) would not
    allow. Their size is what ``sync_bytes_`` reports.
    """
    with dask.config.set({"distributed.admin.large-graph-warning-threshold": "2GiB"}):
        yield


class DistributedSGD:
    """The ``solver`` of an estimator's epoch loop: one round over every shard per epoch.

    ``state`` and ``accumulators`` live on the client and are updated in place.
    """

    def __init__(self, client, shards: list, summaries: list[dict], state: FMState,
                 accumulators: tuple, counts: np.ndarray, hp: dict, loss: int, seed: int,
                 n_jobs, first_epoch: int = 0):
        self.client, self.shards, self.summaries = client, shards, summaries
        self.state, self.accumulators, self.counts = state, accumulators, counts
        self.hp, self.loss, self.seed, self.n_jobs = hp, loss, seed, n_jobs
        self.total_weight = float(sum(s["weight"] for s in summaries))
        self.epoch_number = first_epoch
        self.sync_bytes: list[int] = []

    def _seed(self, shard: int) -> int:
        sequence = np.random.SeedSequence(self.seed, spawn_key=(self.epoch_number, shard))
        return int(sequence.generate_state(1)[0])

    def epoch(self) -> tuple[float, float]:
        st, (a0, aw, aV) = self.state, self.accumulators
        futures, sent = [], 0
        with _parameters_in_tasks():
            for s, (shard, summary) in enumerate(zip(self.shards, self.summaries,
                                                     strict=True)):
                f = summary["features"]
                params = (st.w0, st.w[f], st.V[f], a0, aw[f], aV[f])
                sent += sum(p.nbytes for p in params) + summary["counts"].nbytes
                futures.append(self.client.submit(
                    local_pass, shard, params, self.counts[f], self.total_weight, self.hp,
                    self.loss, self._seed(s), self.n_jobs, pure=False))
        results = self.client.gather(futures)
        received = sum(r[i].nbytes for r in results for i in range(6))
        self.sync_bytes.append(sent + received)
        self._combine(results)
        self.epoch_number += 1
        return (float(sum(r[6] for r in results)), float(sum(r[7] for r in results)))

    def _combine(self, results: list[tuple]) -> None:
        """Fold the shards' parameters into the client's, touched rows only.

        "sum" adds every shard's change of a row (w, V and the AdaGrad sums); "average" sets
        a row to the average of the shards' values, weighted by how often each shard's rows
        use it. A row one shard alone touches takes that shard's value either way.
        """
        st, acc = self.state, self.accumulators
        add = self.hp["combine"] == "sum"
        old = (st.w0, st.w, st.V, *acc)  # w0, w, V and their AdaGrad sums
        scalars = (0, 3)  # w0 and its sum: every shard touches them
        total = [np.zeros(p.shape) for p in old]
        row_weight = np.zeros(st.w.shape[0])
        shard_weight = 0.0
        for summary, result in zip(self.summaries, results, strict=True):
            f, c = summary["features"], summary["counts"]
            row_weight[f] += c
            shard_weight += summary["weight"]
            for i in range(6):
                after = np.asarray(result[i], dtype=np.float64)
                if i in scalars:
                    total[i] += after - old[i] if add else summary["weight"] * after
                elif add:
                    total[i][f] += after - old[i][f]
                else:
                    total[i][f] += (c if after.ndim == 1 else c[:, None]) * after
        used = row_weight > 0
        for i, param in enumerate(old):
            if i in scalars:
                if add:
                    param += total[i].astype(param.dtype)
                elif shard_weight > 0:
                    param[:] = total[i] / shard_weight
            elif add:
                param[used] += total[i][used].astype(param.dtype)
            else:
                norm = row_weight[used] if param.ndim == 1 else row_weight[used, None]
                param[used] = total[i][used] / norm


def evaluate_shard(shard: Shard, params: tuple, metric: str, y_range, link: str) -> tuple:
    """(Σ weight · per-row metric term, Σ weight) of a shard under the given parameters."""
    w0, w, V = params
    num = den = 0.0
    for X, y, sw in shard.parts:
        if X.shape[0] == 0:
            continue
        out = predict_csr(X, w0, w, V, 1)
        yy, ww = y.astype(np.float64), sw.astype(np.float64)
        if link == "sigmoid":
            term = log_loss(yy, sigmoid(out), ww) * ww.sum()
        else:
            if y_range is not None:
                out = np.clip(out, *y_range)
            err = out - yy
            term = float(ww @ (err ** 2 if metric == "rmse" else np.abs(err)))
        num += term
        den += float(ww.sum())
    return num, den


class DistributedEval:
    """A validation set kept in shards on the workers; ``score`` reduces its metric."""

    def __init__(self, client, shards: list, summaries: list[dict], metric: str, link: str):
        if metric not in _ROW_METRICS:
            raise ValueError(f"eval_metric={metric!r} is not available on Dask (it does not "
                             f"split into per-row sums); use one of {list(_ROW_METRICS)}")
        self.client, self.shards, self.summaries = client, shards, summaries
        self.metric, self.link = metric, link

    def score(self, w0: float, w: np.ndarray, V: np.ndarray, y_range) -> float:
        futures = []
        with _parameters_in_tasks():
            for shard, summary in zip(self.shards, self.summaries, strict=True):
                f = summary["features"]
                futures.append(self.client.submit(evaluate_shard, shard, (w0, w[f], V[f]),
                                                  self.metric, y_range, self.link,
                                                  pure=False))
        sums = self.client.gather(futures)
        num, den = sum(s[0] for s in sums), sum(s[1] for s in sums)
        if den <= 0:
            raise ValueError("the eval_set has no rows with positive weight")
        mean = num / den
        return float(np.sqrt(mean)) if self.metric == "rmse" else float(mean)
