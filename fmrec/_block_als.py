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


class BlockPart:
    """One relation block prepared for the sweeps: CSC over entities, its column range."""

    def __init__(self, matrix: sp.csr_matrix, index: np.ndarray, lo: int, hi: int, dtype):
        self.csr = sp.csr_matrix(matrix, dtype=dtype)
        csc = self.csr.tocsc()
        csc.sort_indices()
        self.indptr, self.indices = csc.indptr, csc.indices
        self.data = np.ascontiguousarray(csc.data, dtype=dtype)
        self.squared = self.csr.multiply(self.csr).tocsr()
        self.index = np.ascontiguousarray(index, dtype=np.int64)
        self.n_entities = self.csr.shape[0]
        self.lo, self.hi = lo, hi

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

    def sweep(self, state, r, q, y, sw, loss, reg_linear, reg_factors, fit_linear,
              gibbs: dict | None = None) -> None:
        """Linear weights, then factor after factor, each a pass over the block's columns.

        ``gibbs`` (square loss; fmrec._mcmc): draw every coordinate from its conditional
        instead, given per-column arrays over all columns: ``lambda_w``, ``mu_w``, ``z_w``
        (d,) and ``lambda_V``, ``mu_V``, ``z_V`` (d, k), and the noise precision ``alpha``.
        """
        at = self.index
        lo, hi = self.lo, self.hi
        w_b, V_b = state.w[lo:hi], state.V[lo:hi]
        dt = w_b.dtype
        if gibbs is None:
            reg_w, reg_v = reg_linear[lo:hi], reg_factors[lo:hi]
            lin_kw, alpha = {}, 1.0
        else:
            alpha = float(gibbs["alpha"])
            reg_w = np.ascontiguousarray(gibbs["lambda_w"][lo:hi], dtype=dt)
            lin_kw = {"mu": np.ascontiguousarray(gibbs["mu_w"][lo:hi]),
                      "z": np.ascontiguousarray(gibbs["z_w"][lo:hi]), "alpha": alpha}
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
        for f in range(V_b.shape[1]):
            qB_old = np.ascontiguousarray(QB[:, f])
            sums[:] = 0
            _als.block_entity_sums(at, r, y, sw, loss, q, f, qB_old, G, GQ, C, A, A2)
            qB = qB_old.copy()
            kw = {}
            if gibbs is not None:
                reg_v = np.ascontiguousarray(gibbs["lambda_V"][lo:hi, f], dtype=dt)
                kw = {"mu": np.ascontiguousarray(gibbs["mu_V"][lo:hi, f]),
                      "z": np.ascontiguousarray(gibbs["z_V"][lo:hi, f]), "alpha": alpha}
            sq_change[:] = 0
            _als.block_factor_pass(self.indptr, self.indices, self.data, V_b, f, reg_v,
                                   qB, G, GQ, C, A, A2, **kw, sq_change=sq_change)
            # Each row's output moves by its rest times the block's change, plus the change
            # of the block's own pairwise term ½(qB² − Σ v² x²).
            own = 0.5 * (qB**2 - qB_old**2 - sq_change)
            _als.block_push(at, r, q, f, qB_old, qB - qB_old, own)
