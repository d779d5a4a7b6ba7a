"""Design matrices whose repeated parts are stored once: a flat CSR plus relation blocks.

A recommender row is mostly copies: every rating of user u carries u's features (id,
demographics, the items u rated), every rating of item i carries i's. A :class:`RelationBlock`
stores each entity's features once, as one row of a small CSR, and every sample points at its
entity's row; the full row of sample r is ``[flat[r] | block_1[index_1[r]] | block_2[...]]``.
This is the structure of Rendle's "Scaling Factorization Machines to Relational Data" (2013),
libFM's ``--relation`` files and myFM's ``RelationBlock``; the solvers and the predictor work
per block row, so a user's 100 implicit features cost 100 non-zeros, not 100 per rating.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class RelationBlock:
    """One entity table (e.g. users) and, for every sample, which of its rows applies.

    Parameters
    ----------
    matrix : scipy.sparse matrix of shape (n_entities, n_block_features)
        Each entity's features, once.
    index : array-like of int, shape (n_samples,)
        ``index[r]`` is the row of ``matrix`` that sample r uses.
    """

    matrix: sp.csr_matrix
    index: np.ndarray

    def __post_init__(self):
        if not sp.issparse(self.matrix) and not isinstance(self.matrix, np.ndarray):
            raise TypeError(f"RelationBlock.matrix must be a sparse matrix or an array, got "
                            f"{type(self.matrix).__name__}")
        index = np.asarray(self.index)
        if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
            raise TypeError("RelationBlock.index must be a 1-D array of integers")
        n_entities = self.matrix.shape[0]
        if index.size and (index.min() < 0 or index.max() >= n_entities):
            bad = int(np.flatnonzero((index < 0) | (index >= n_entities))[0])
            raise ValueError(f"RelationBlock.index[{bad}] = {index[bad]} is outside the "
                             f"block's {n_entities} rows")
        object.__setattr__(self, "index", index.astype(np.intp, copy=False))

    @property
    def n_features(self) -> int:
        return int(self.matrix.shape[1])


class DesignMatrix:
    """Rows ``[flat[r] | block_1[index_1[r]] | …]``: an FM design with shared blocks.

    Every estimator in fmrec accepts a ``DesignMatrix`` wherever it accepts a sparse matrix;
    columns are numbered flat first, then each block in order. Predictions equal those on
    :meth:`to_csr`, which materializes the rows (what a solver without block support does).

    Parameters
    ----------
    flat : sparse matrix of shape (n_samples, n_flat_features), or None
        Per-sample features (context, or everything when there are no blocks). None means
        no flat columns, in which case ``blocks`` must be given.
    blocks : sequence of RelationBlock
        Entity tables; every block's index has one entry per sample.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from fmrec.design import DesignMatrix, RelationBlock
    >>> users = RelationBlock(sp.identity(3, format="csr"), np.array([0, 2, 2, 1]))
    >>> X = DesignMatrix(None, [users])
    >>> X.shape, X.to_csr().indices.tolist()
    ((4, 3), [0, 2, 2, 1])
    """

    def __init__(self, flat=None, blocks: Sequence[RelationBlock] = ()):
        self.blocks = tuple(blocks)
        for block in self.blocks:
            if not isinstance(block, RelationBlock):
                raise TypeError(f"blocks must hold RelationBlock objects, got "
                                f"{type(block).__name__}")
        if flat is None:
            if not self.blocks:
                raise ValueError("a DesignMatrix needs a flat part or at least one block")
            flat = sp.csr_matrix((len(self.blocks[0].index), 0),
                                 dtype=self.blocks[0].matrix.dtype)
        self.flat = sp.csr_matrix(flat)
        n = self.flat.shape[0]
        for i, block in enumerate(self.blocks):
            if len(block.index) != n:
                raise ValueError(f"block {i} indexes {len(block.index)} samples but the design "
                                 f"has {n} rows")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.flat.shape[0],
                self.flat.shape[1] + sum(block.n_features for block in self.blocks))

    def __len__(self) -> int:
        return self.flat.shape[0]

    @property
    def block_offsets(self) -> np.ndarray:
        """First column of the flat part and of each block, then the total width."""
        widths = [self.flat.shape[1]] + [block.n_features for block in self.blocks]
        return np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)

    @property
    def nnz(self) -> int:
        """Non-zeros as stored (blocks once), not of the materialized rows."""
        return int(self.flat.nnz + sum(sp.csr_matrix(b.matrix).nnz for b in self.blocks))

    def take(self, rows) -> DesignMatrix:
        """The design restricted to ``rows`` (blocks are shared, not copied)."""
        rows = np.asarray(rows)
        return DesignMatrix(self.flat[rows],
                            [RelationBlock(b.matrix, b.index[rows]) for b in self.blocks])

    def to_csr(self, dtype=np.float64) -> sp.csr_matrix:
        """The materialized rows as one CSR matrix (indices sorted within rows)."""
        parts = [self.flat.astype(dtype)]
        parts += [sp.csr_matrix(b.matrix, dtype=dtype)[b.index] for b in self.blocks]
        X = sp.hstack(parts, format="csr", dtype=dtype)
        X.sort_indices()
        return X

    def __repr__(self) -> str:
        blocks = ", ".join(f"{b.matrix.shape[0]}×{b.n_features}" for b in self.blocks)
        return (f"DesignMatrix(shape={self.shape}, flat nnz={self.flat.nnz}, "
                f"blocks=[{blocks}])")


def fm_output(X: DesignMatrix, w0: float, w: np.ndarray, V: np.ndarray,
              chunk_rows: int = 1 << 16) -> np.ndarray:
    """ŷ for every row of ``X`` (float64), computing each block row's sums once.

    The pairwise term is ½ Σ_f (q_f² − s_f) with q = Σ_j v_j x_j and s = Σ_j v_j² x_j²; both
    sums split over the flat part and the blocks, so each block contributes a gather of its
    precomputed per-entity sums.
    """
    offsets = X.block_offsets
    w = np.asarray(w, np.float64)
    V = np.asarray(V, np.float64)
    per_block = []
    for b, block in enumerate(X.blocks):
        cols = slice(offsets[b + 1], offsets[b + 2])
        B = sp.csr_matrix(block.matrix, dtype=np.float64)
        per_block.append((block.index, B @ w[cols], B @ V[cols], B.multiply(B) @ V[cols] ** 2))
    flat = sp.csr_matrix(X.flat, dtype=np.float64)
    flat_cols = slice(0, offsets[1])
    out = np.empty(X.shape[0])
    for lo in range(0, X.shape[0], chunk_rows):
        rows = slice(lo, min(lo + chunk_rows, X.shape[0]))
        part = flat[rows]
        linear = part @ w[flat_cols]
        q = part @ V[flat_cols]
        s = part.multiply(part) @ V[flat_cols] ** 2
        for index, b_linear, b_q, b_s in per_block:
            at = index[rows]
            linear += b_linear[at]
            q += b_q[at]
            s += b_s[at]
        out[rows] = w0 + linear + 0.5 * (q * q - s).sum(axis=1)
    return out


def column_counts(X: DesignMatrix, sample_weight: np.ndarray) -> np.ndarray:
    """n_j = Σ_r s_r [x_rj ≠ 0] over the materialized rows, without materializing them."""
    sw = np.asarray(sample_weight, np.float64)
    flat = sp.csr_matrix(X.flat)
    pattern = sp.csr_matrix((np.ones(flat.nnz), flat.indices, flat.indptr), flat.shape)
    parts = [pattern.T @ sw]
    for block in X.blocks:
        B = sp.csr_matrix(block.matrix)
        entity_weight = np.bincount(block.index, weights=sw, minlength=B.shape[0])
        pattern = sp.csr_matrix((np.ones(B.nnz), B.indices, B.indptr), B.shape)
        parts.append(pattern.T @ entity_weight)
    return np.concatenate(parts)


def part_terms(B, w: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t, q) of every row of ``B``: its linear + within-part pairwise term, and its q vector.

    ``w`` and ``V`` are the parameters of ``B``'s columns (float64). A row that is the sum of
    parts over disjoint columns scores t_a + t_b + q_a·q_b + ...: what lets the recommender and
    FMRanker score every (user, item) pair with one matrix product.
    """
    B = sp.csr_matrix(B, dtype=np.float64)
    q = B @ V
    s = B.multiply(B) @ (V * V)
    return B @ w + 0.5 * (q * q - s).sum(axis=1), np.asarray(q)
