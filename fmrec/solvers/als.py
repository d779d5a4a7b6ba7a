"""Coordinate-descent (ALS) sweeps: exact for the square loss, Newton steps for the log loss."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from fmrec._kernels import als as _als
from fmrec._links import SQUARE, loss_value
from fmrec.design import DesignMatrix
from fmrec.solvers._blocks import column_blocks_and_caches, kernel_csc, split_design
from fmrec.solvers._state import Diverged, FMState, penalty_scale


class ALSSolver:
    """Coordinate-descent sweeps (exact for the square loss, Newton steps for the log loss).

    X is a CSR matrix or a DesignMatrix; a DesignMatrix's blocks are swept per entity
    (fmrec.solvers._blocks) after its flat columns.
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
            sq_sum = part.sweep(st, self.r, self.q, self.y, self.sw, self.loss,
                                self.reg_linear, self.reg_factors, hp["fit_linear"])
        if self.block_parts:
            if sq_sum is not None:  # the last block's push summed the rows after all blocks
                loss_sum = 0.5 * sq_sum
            else:
                out = self.r.astype(np.float64) + (self.y if self.loss == SQUARE else 0)
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
