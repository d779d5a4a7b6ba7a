"""Solver drivers: turn validated arrays into kernel calls, one epoch at a time.

Both solvers minimize the same objective

    J = Σ_i s_i loss(ŷ_i, y_i) + ½ Σ_θ reg_θ n_θ^p θ²

where n_θ = Σ_i s_i [row i touches θ] is the weighted count of rows that involve the parameter
(all rows for w0; the rows where x_ij ≠ 0 for w_j and v_j) and p is ``reg_power``. p = 0 is
libFM's constant L2 penalty; p = 1 penalizes every occurrence (what plain SGD does, and
ALS-WR). SGD spreads each penalty over its parameter's occurrences (n^p / n per row), so the
same ``reg_*`` and ``reg_power`` mean the same objective for both solvers.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from fmrec._block_als import BlockPart
from fmrec._kernels import als as _als
from fmrec._kernels import sgd as _sgd
from fmrec._reference import loss_value
from fmrec.design import DesignMatrix

# Whole-array passes over the non-zeros run in pieces of this many entries, so that their
# temporaries (int64 casts, searchsorted results) stay small next to X.
_CHUNK = 1 << 20


class Diverged(ArithmeticError):
    """An epoch produced a non-finite output or loss."""


class FMState:
    """The trainable parameters, as arrays the kernels update in place."""

    def __init__(self, w0: float, w: np.ndarray, V: np.ndarray):
        self.w0 = np.array([w0], dtype=w.dtype)
        self.w = w
        self.V = V

    def copy(self) -> FMState:
        return FMState(float(self.w0[0]), self.w.copy(), self.V.copy())

    def assign(self, other: FMState) -> None:
        self.w0[:] = other.w0
        self.w[:] = other.w
        self.V[:] = other.V

    def is_finite(self) -> bool:
        return bool(np.isfinite(self.w0).all() and np.isfinite(self.w).all()
                    and np.isfinite(self.V).all())


def weighted_column_counts(X: sp.csr_matrix, sample_weight: np.ndarray) -> np.ndarray:
    """n_j = Σ_i s_i [x_ij ≠ 0] for every column j (float64).

    Works through ~1M non-zeros at a time: np.bincount would otherwise make a full int64
    copy of the indices (twice the size of int32 ones).
    """
    unit = bool(np.all(sample_weight == 1))
    counts = np.zeros(X.shape[1])
    rows_per_chunk = max(1, X.shape[0] * _CHUNK // max(X.nnz, 1))
    for lo in range(0, X.shape[0], rows_per_chunk):
        hi = min(lo + rows_per_chunk, X.shape[0])
        a, b = X.indptr[lo], X.indptr[hi]
        weights = None if unit else np.repeat(sample_weight[lo:hi].astype(np.float64),
                                              np.diff(X.indptr[lo:hi + 1]))
        counts += np.bincount(X.indices[a:b], weights=weights, minlength=X.shape[1])
    return counts


def value_table(values: np.ndarray, max_size: int = 256) -> np.ndarray | None:
    """The sorted distinct values, or None when there are more than ``max_size``.

    Reads ~1M values at a time, sorting only values not already in the table.
    """
    table = np.empty(0, values.dtype)
    for lo in range(0, len(values), _CHUNK):
        chunk = values[lo:lo + _CHUNK]
        if len(table):
            at = np.minimum(np.searchsorted(table, chunk), len(table) - 1)
            chunk = chunk[table[at] != chunk]
        if len(chunk):
            table = np.union1d(table, chunk)
            if len(table) > max_size:
                return None
    return table


def penalty_scale(counts: np.ndarray, power: float) -> np.ndarray:
    """n^power, with 0 for parameters no row touches (nothing to penalize against)."""
    out = np.zeros_like(counts)
    np.power(counts, power, out=out, where=counts > 0)
    return out


# Relation blocks whose materialized rows average at most this many non-zeros are swept as
# ordinary columns (see split_design).
BLOCK_MIN_ROW_NNZ = 4.0


def split_design(X: DesignMatrix, dtype, max_row_nnz: float | None = None):
    """(CSR over all columns, block parts, skip mask) for an ALS sweep of a DesignMatrix.

    A block whose materialized rows would hold at most ``max_row_nnz`` (default
    ``BLOCK_MIN_ROW_NNZ``) non-zeros on average
    (ids, a few categories) is cheaper as ordinary CSR columns: the flat sweep touches them
    once per non-zero and in parallel, whereas a block pass costs a few passes over all rows
    per factor. Longer blocks (implicit feedback sets) are swept per entity; their columns
    are empty in the CSR and marked in the skip mask.
    """
    max_row_nnz = BLOCK_MIN_ROW_NNZ if max_row_nnz is None else max_row_nnz
    offsets = X.block_offsets
    d = int(offsets[-1])
    parts, columns, skip = [], [X.flat], np.zeros(d, np.uint8)
    for i, block in enumerate(X.blocks):
        matrix = sp.csr_matrix(block.matrix, dtype=dtype)
        lo, hi = int(offsets[i + 1]), int(offsets[i + 2])
        row_nnz = np.diff(matrix.indptr)[block.index]
        if row_nnz.mean() <= max_row_nnz:
            columns.append(matrix[block.index])
        else:
            parts.append(BlockPart(matrix, block.index, lo, hi, dtype))
            columns.append(sp.csr_matrix((len(block.index), hi - lo), dtype=dtype))
            skip[lo:hi] = 1
    flat = sp.hstack(columns, format="csr", dtype=dtype)
    flat.sort_indices()
    if flat.indices.dtype != flat.indptr.dtype:
        flat.indptr = flat.indptr.astype(flat.indices.dtype)
    return flat, parts, (skip if skip.any() else np.empty(0, np.uint8))


def kernel_csc(X: sp.csr_matrix, dt):
    """(CSC with sorted indices, values, codes): the column form ``als_sweep`` reads.

    Recommender matrices hold few distinct values (one-hot 1s, 1/n weights): their CSC copy
    keeps a byte per value into a small table (``codes``), or no values at all when every one
    is 1. Only other matrices pay for a full copy of the values.
    """
    table = value_table(X.data)
    if table is None:
        csc = X.tocsc()
        values, codes = csc.data, np.empty(0, np.uint8)
    else:
        codes = np.empty(X.nnz, np.uint8)
        for lo in range(0, X.nnz, _CHUNK):
            codes[lo:lo + _CHUNK] = np.searchsorted(table, X.data[lo:lo + _CHUNK])
        csc = sp.csr_matrix((codes, X.indices, X.indptr), X.shape).tocsc()
        del codes
        if len(table) == 1 and table[0] == 1:
            values, codes = np.empty(0, dt), np.empty(0, np.uint8)
        else:
            values, codes = table.astype(dt), csc.data
    csc.sort_indices()
    return csc, values, codes


def column_blocks_and_caches(csc: sp.csc_matrix, k: int, n_threads: int, dtype):
    """The column blocks of a sweep and its empty row caches r (n,) and q (n, k).

    Threads share the columns of blocks that touch disjoint rows (e.g. one one-hot field):
    exact, and the same result for any number of threads. One thread sweeps one block.
    """
    n, d = csc.shape
    if n_threads > 1:
        blocks = _als.conflict_free_blocks(csc.indptr, csc.indices, n)
    else:
        blocks = np.array([0, d], dtype=np.int64)
    return blocks, np.empty(n, dtype), np.empty((n, k), dtype)


class SGDSolver:
    """SGD or AdaGrad epochs over a freshly shuffled row order (Hogwild on several threads)."""

    def __init__(self, X: sp.csr_matrix, y, sample_weight, loss: int, state: FMState, *,
                 counts: np.ndarray, hp: dict, rng: np.random.RandomState, n_threads: int,
                 accumulators=None, total_weight: float | None = None):
        self.X, self.y, self.sw, self.loss, self.state = X, y, sample_weight, loss, state
        self.hp, self.rng, self.n_threads = hp, rng, n_threads
        self.adagrad = hp["lr_schedule"] == "adagrad"
        dt = state.w.dtype
        if accumulators is None:
            accumulators = (np.zeros(1, dt), np.zeros_like(state.w), np.zeros_like(state.V))
        self.accumulators = accumulators
        # Each row carries n^p / n of a parameter's penalty; p = 1 needs no per-feature scale.
        # A pass over part of the data (a Dask shard) passes the whole data's counts and
        # total weight, so that it minimizes the same objective.
        power = hp["reg_power"]
        total = (float(sample_weight.sum(dtype=np.float64)) if total_weight is None
                 else float(total_weight))
        self.reg_bias = hp["reg_bias"] * total ** (power - 1.0)
        if power == 1.0:
            self.reg_scale = np.empty(0, dt)
        else:
            self.reg_scale = penalty_scale(counts, power - 1.0).astype(dt)

    def epoch(self) -> tuple[float, float]:
        """One pass; returns (Σ s·loss measured before each row's update, Σ s)."""
        hp, st = self.hp, self.state
        order = self.rng.permutation(self.X.shape[0]).astype(np.intp)
        a0, aw, aV = self.accumulators
        loss_sum, weight_sum, n_bad = _sgd.sgd_epoch(
            self.X.indptr, self.X.indices, self.X.data, self.y, self.sw, order,
            st.w0, st.w, st.V, a0, aw, aV, self.loss, hp["learning_rate"], self.adagrad,
            self.reg_bias, hp["reg_linear"], hp["reg_factors"], self.reg_scale,
            hp["fit_intercept"], hp["fit_linear"], self.n_threads,
        )
        if n_bad or not np.isfinite(loss_sum):
            raise Diverged(f"{n_bad} rows had a non-finite output")
        return loss_sum, weight_sum


class ALSSolver:
    """Coordinate-descent sweeps (exact for the square loss, Newton steps for the log loss).

    X is a CSR matrix or a DesignMatrix; a DesignMatrix's blocks are swept per entity
    (fmrec._block_als) after its flat columns.
    """

    def __init__(self, X: sp.csr_matrix | DesignMatrix, y, sample_weight, loss: int,
                 state: FMState, *, counts: np.ndarray, hp: dict, n_threads: int):
        dt = state.w.dtype
        self.block_parts, self.skip = [], np.empty(0, np.uint8)
        if isinstance(X, DesignMatrix):
            X, self.block_parts, self.skip = split_design(X, dt)
        self.X, self.y, self.sw, self.loss, self.state = X, y, sample_weight, loss, state
        self.hp, self.n_threads = hp, n_threads
        self.csc, self.csc_values, self.csc_codes = kernel_csc(X, dt)
        scale = penalty_scale(counts, hp["reg_power"])
        self.reg_linear = (hp["reg_linear"] * scale).astype(dt)
        self.reg_factors = (hp["reg_factors"] * scale).astype(dt)
        total = float(sample_weight.sum(dtype=np.float64))
        self.reg_bias = hp["reg_bias"] * total ** hp["reg_power"]
        self.blocks, self.r, self.q = column_blocks_and_caches(self.csc, state.V.shape[1],
                                                               n_threads, dt)

    def epoch(self) -> tuple[float, float]:
        hp, st = self.hp, self.state
        # Caches are rebuilt every sweep so rounding never accumulates across sweeps.
        _als.compute_caches(self.X.indptr, self.X.indices, self.X.data, self.y, self.loss,
                            float(st.w0[0]), st.w, st.V, self.r, self.q, self.n_threads)
        for part in self.block_parts:
            part.add_to_caches(st.w, st.V, self.r, self.q)
        loss_sum, weight_sum, bad = _als.als_sweep(
            self.csc.indptr, self.csc.indices, self.csc_values, self.csc_codes, self.y, self.sw,
            self.loss,
            st.w0, st.w, st.V, self.r, self.q, self.reg_bias, self.reg_linear,
            self.reg_factors, hp["fit_intercept"], hp["fit_linear"], self.blocks,
            self.n_threads, self.skip,
        )
        for part in self.block_parts:
            part.sweep(st, self.r, self.q, self.y, self.sw, self.loss, self.reg_linear,
                       self.reg_factors, hp["fit_linear"])
        if self.block_parts:
            out = self.r.astype(np.float64) + (self.y if self.loss == 0 else 0)
            loss_sum = float(self.sw @ loss_value(self.loss, out, self.y))
            bad = bad or not np.isfinite(loss_sum)
        if bad or not st.is_finite():
            raise Diverged("the coordinate updates produced non-finite values")
        return loss_sum, weight_sum

    def objective(self, loss_sum: float) -> float:
        """J after the sweep, from the loss sum the sweep returned."""
        st = self.state
        penalty = (self.reg_bias * float(st.w0[0]) ** 2
                   + float(self.reg_linear.astype(np.float64) @ st.w.astype(np.float64) ** 2)
                   + float(self.reg_factors.astype(np.float64)
                           @ (st.V.astype(np.float64) ** 2).sum(axis=1)))
        return loss_sum + 0.5 * penalty
