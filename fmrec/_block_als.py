"""The relation-block half of an ALS sweep (see fmrec.design and the block passes in als.pyx).

Row caches stay what the flat sweep uses: r (residual for the square loss, output for the
logistic loss) and q (factor sums, blocks included). A block's pass reduces the rows to
per-entity sums, updates the block's coordinates from those in the kernel, and pushes the
change of every entity's contribution back to its rows: O(n + nnz of the block) per pass
instead of O(rows × features per entity).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from fmrec._kernels import als as _als
from fmrec._reference import SQUARE, loss_curvature, loss_gradient


class BlockPart:
    """One relation block prepared for the sweeps: CSC over entities, its column range."""

    def __init__(self, matrix: sp.csr_matrix, index: np.ndarray, lo: int, hi: int, dtype):
        self.csr = sp.csr_matrix(matrix, dtype=dtype)
        csc = self.csr.tocsc()
        csc.sort_indices()
        self.indptr, self.indices = csc.indptr, csc.indices
        self.data = np.ascontiguousarray(csc.data, dtype=dtype)
        self.squared = self.csr.multiply(self.csr).tocsr()
        self.index = np.ascontiguousarray(index, dtype=np.intp)
        self.n_entities = self.csr.shape[0]
        self.lo, self.hi = lo, hi

    def entity_sums(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.index, weights=values, minlength=self.n_entities)

    def add_to_caches(self, w, V, r, q) -> None:
        """Add the block's share of every row's output to r and of its factor sums to q."""
        Vb = V[self.lo:self.hi].astype(np.float64)
        linear = self.csr @ w[self.lo:self.hi].astype(np.float64)
        qB = self.csr @ Vb
        sB = self.squared @ Vb**2
        rows_q = q.astype(np.float64)
        at = self.index
        r += (linear[at] + np.einsum("ij,ij->i", rows_q, qB[at])
              + 0.5 * (qB**2 - sB).sum(axis=1)[at]).astype(r.dtype)
        q += qB[at].astype(q.dtype)

    def sweep(self, state, r, q, y, sw, loss, reg_linear, reg_factors, fit_linear) -> None:
        """Linear weights, then factor after factor, each a pass over the block's columns."""
        at = self.index
        w_b, V_b = state.w[self.lo:self.hi], state.V[self.lo:self.hi]
        reg_w, reg_v = reg_linear[self.lo:self.hi], reg_factors[self.lo:self.hi]
        if fit_linear:
            g, c = _gradient_curvature(loss, r, y, sw)
            before = w_b.astype(np.float64)
            G = self.entity_sums(g)
            _als.block_linear_pass(self.indptr, self.indices, self.data, w_b, reg_w, G,
                                   self.entity_sums(c))
            change = self.csr @ (w_b.astype(np.float64) - before)
            r += change[at].astype(r.dtype)
        for f in range(V_b.shape[1]):
            g, c = _gradient_curvature(loss, r, y, sw)
            old_v = V_b[:, f].astype(np.float64)
            qB_old = self.csr @ old_v
            rest = q[:, f].astype(np.float64) - qB_old[at]
            qB = qB_old.copy()
            G, GQ = self.entity_sums(g), self.entity_sums(g * rest)
            C, A, A2 = (self.entity_sums(c), self.entity_sums(c * rest),
                        self.entity_sums(c * rest * rest))
            _als.block_factor_pass(self.indptr, self.indices, self.data, V_b, f, reg_v,
                                   qB, G, GQ, C, A, A2)
            new_v = V_b[:, f].astype(np.float64)
            # Output change of each row: its rest times the block's change, plus the change
            # of the block's own pairwise term ½(qB² − Σ v² x²).
            own = 0.5 * (qB**2 - qB_old**2 - self.squared @ (new_v**2 - old_v**2))
            dq = qB - qB_old
            r += (rest * dq[at] + own[at]).astype(r.dtype)
            q[:, f] += dq[at].astype(q.dtype)


def _gradient_curvature(loss, r, y, sw):
    """s·g and s·c per row from the caches (r is ŷ − y for the square loss, ŷ otherwise)."""
    if loss == SQUARE:
        return sw * r.astype(np.float64), sw.astype(np.float64)
    r64 = r.astype(np.float64)
    return sw * loss_gradient(loss, r64, y), sw * loss_curvature(loss, r64)
