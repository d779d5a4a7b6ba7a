"""What a coordinate sweep (ALS, MCMC) reads: the column form of X and its relation blocks.

The relation-block half of a sweep (see fmrec.design and the block passes in als.pyx):

Row caches stay what the flat sweep uses: r (residual for the square loss, output for the
logistic loss) and q (factor sums, blocks included). A block's pass reduces the rows to
per-entity sums, updates the block's coordinates from those in the kernel, and pushes the
change of every entity's contribution back to its rows: O(n + nnz of the block) per pass
instead of O(rows × features per entity). Under the square loss (ALS and MCMC) the whole
block sweep reads the rows once and writes them once (``block_sweep``): the rest of every
row stays fixed while a block is swept, so per-entity first and second moments of it carry
every pass's sums; the logistic loss keeps one reduction and one push per pass.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from fmrec._kernels import als as _als
from fmrec._links import SQUARE
from fmrec.design import DesignMatrix
from fmrec.solvers._state import CHUNK

# block_sweep keeps k² + 4k + 9 doubles per entity (the rests' second moments among them).
# Where that outgrows both this many bytes and twice the row caches (entities nearly as many
# as rows, a large k), the square loss takes the per-pass path instead, whose sums are O(n
# entities) whatever k.
MOMENTS_MAX_BYTES = 1 << 26


class BlockPart:
    """One relation block prepared for the sweeps: CSC over entities, its column range."""

    def __init__(self, matrix: sp.csr_matrix, index: np.ndarray, lo: int, hi: int, dtype):
        self.csr = sp.csr_matrix(matrix, dtype=dtype)
        csc = self.csr.tocsc()
        csc.sort_indices()
        self.indptr, self.indices = csc.indptr, csc.indices
        self.data = np.ascontiguousarray(csc.data, dtype=dtype)
        self.index = np.ascontiguousarray(index, dtype=np.int64)
        self.n_entities = self.csr.shape[0]
        # the rows grouped by entity (block_sweep gathers each entity's rows)
        self.order = np.argsort(self.index, kind="stable").astype(np.int64, copy=False)
        self.starts = np.zeros(self.n_entities + 1, np.int64)
        np.cumsum(np.bincount(self.index, minlength=self.n_entities), out=self.starts[1:])
        self.lo, self.hi = lo, hi
        self.work = None  # block_sweep's per-entity records, allocated on first use

    def add_to_caches(self, w, V, r, q) -> None:
        """Add the block's share of every row's output to r and of its factor sums to q."""
        lo, hi = self.lo, self.hi
        _als.block_add_to_caches(self.indptr, self.indices, self.data, self.index, w[lo:hi],
                                 V[lo:hi], r, q, self._work(self.n_entities * (V.shape[1] + 1)),
                                 self.n_entities)

    def _work(self, size: int) -> np.ndarray:
        """At least ``size`` float64 of per-entity scratch (kept between sweeps)."""
        if self.work is None or len(self.work) < size:
            self.work = np.empty(size)
        return self.work

    def moments_fit(self, k: int, q: np.ndarray) -> bool:
        """Whether block_sweep's workspace is within bounds (see MOMENTS_MAX_BYTES)."""
        size = 8 * _als.block_workspace_size(self.n_entities, k)
        return size <= max(MOMENTS_MAX_BYTES, 2 * q.nbytes)

    def sweep(self, state, r, q, y, sw, loss, reg_linear, reg_factors, fit_linear,
              gibbs: dict | None = None, per_pass: bool = False) -> float | None:
        """Linear weights, then factor after factor, each a pass over the block's columns.

        ``gibbs`` (square loss; fmrec.solvers.mcmc): draw every coordinate from its conditional
        instead, given the sweep's ``normals``, column ``groups`` and ``prior`` table (as
        ``als_sweep`` reads them, over all columns) and the noise precision ``alpha``.

        The square loss is swept by ``block_sweep`` from per-entity statistics (two passes
        over the rows), unless ``per_pass`` asks for the general path (or the statistics
        would not fit, see MOMENTS_MAX_BYTES): per-entity sums taken from the rows and pushed
        back to them in every pass (2(k + 1) row passes), which the logistic loss needs (its
        quadratic model is refreshed every pass). Returns Σ s r² after the sweep for the
        square loss's fast path, else None.
        """
        lo, hi = self.lo, self.hi
        w_b, V_b = state.w[lo:hi], state.V[lo:hi]
        k = V_b.shape[1]
        if loss == SQUARE and not per_pass and self.moments_fit(k, q):
            work = self._work(_als.block_workspace_size(self.n_entities, k))
            if gibbs is None:
                return _als.block_sweep(self.indptr, self.indices, self.data, self.index,
                                        self.order, self.starts, r, q, sw, w_b, V_b,
                                        fit_linear, work, reg_linear[lo:hi],
                                        reg_factors[lo:hi])
            return _als.block_sweep(self.indptr, self.indices, self.data, self.index,
                                    self.order, self.starts, r, q, sw, w_b, V_b, fit_linear,
                                    work, col0=lo,
                                    normals=gibbs["normals"], groups=gibbs["groups"],
                                    prior=gibbs["prior"], alpha=float(gibbs["alpha"]))
        self._sweep_per_pass(state, r, q, y, sw, loss, reg_linear, reg_factors, fit_linear,
                             gibbs)
        return None

    def _sweep_per_pass(self, state, r, q, y, sw, loss, reg_linear, reg_factors, fit_linear,
                        gibbs) -> None:
        at = self.index
        lo, hi = self.lo, self.hi
        w_b, V_b = state.w[lo:hi], state.V[lo:hi]
        dt = w_b.dtype
        k = V_b.shape[1]
        if gibbs is None:
            reg_w, reg_v = reg_linear[lo:hi], reg_factors[lo:hi]
            lin_kw, alpha = {}, 1.0
        else:
            alpha = float(gibbs["alpha"])
            prior = gibbs["prior"][gibbs["groups"][lo:hi]]
            z = gibbs["normals"][1:].reshape(-1, k + 1)[lo:hi]
            reg_w = np.ascontiguousarray(prior[:, 0], dtype=dt)
            lin_kw = {"mu": np.ascontiguousarray(prior[:, 1]),
                      "z": np.ascontiguousarray(z[:, 0]), "alpha": alpha}
        sums = np.zeros((5, self.n_entities))
        G, GQ, C, A, A2 = sums
        if fit_linear:
            unused = np.empty(0)  # the f < 0 (linear) forms read no factor sums
            _als.block_entity_sums(at, r, y, sw, loss, q, -1, unused, G, GQ, C, A, A2)
            before = w_b.astype(np.float64)
            _als.block_linear_pass(self.indptr, self.indices, self.data, w_b, reg_w, G, C,
                                   **lin_kw)
            change = self.csr @ (w_b.astype(np.float64) - before)
            _als.block_push(at, r, q, -1, unused, unused, change)
        # The block's share of every row's q, for all factors at once: factor f's column
        # only moves in f's own pass, so these are each pass's starting values.
        QB = np.asarray(self.csr @ V_b.astype(np.float64))
        sq_change = np.empty(self.n_entities)
        for f in range(k):
            qB_old = np.ascontiguousarray(QB[:, f])
            sums[:] = 0
            _als.block_entity_sums(at, r, y, sw, loss, q, f, qB_old, G, GQ, C, A, A2)
            qB = qB_old.copy()
            kw = {}
            if gibbs is not None:
                reg_v = np.ascontiguousarray(prior[:, 2 + f], dtype=dt)
                kw = {"mu": np.ascontiguousarray(prior[:, 2 + k + f]),
                      "z": np.ascontiguousarray(z[:, 1 + f]), "alpha": alpha}
            sq_change[:] = 0
            _als.block_factor_pass(self.indptr, self.indices, self.data, V_b, f, reg_v,
                                   qB, G, GQ, C, A, A2, **kw, sq_change=sq_change)
            # Each row's output moves by its rest times the block's change, plus the change
            # of the block's own pairwise term ½(qB² − Σ v² x²).
            own = 0.5 * (qB**2 - qB_old**2 - sq_change)
            _als.block_push(at, r, q, f, qB_old, qB - qB_old, own)


def value_table(values: np.ndarray, max_size: int = 256) -> np.ndarray | None:
    """The sorted distinct values, or None when there are more than ``max_size``.

    Reads ~1M values at a time, sorting only values not already in the table.
    """
    table = np.empty(0, values.dtype)
    for lo in range(0, len(values), CHUNK):
        chunk = values[lo:lo + CHUNK]
        if len(table):
            at = np.minimum(np.searchsorted(table, chunk), len(table) - 1)
            chunk = chunk[table[at] != chunk]
        if len(chunk):
            table = np.union1d(table, chunk)
            if len(table) > max_size:
                return None
    return table


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
        for lo in range(0, X.nnz, CHUNK):
            codes[lo:lo + CHUNK] = np.searchsorted(table, X.data[lo:lo + CHUNK])
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
