"""Solver drivers: turn validated arrays into kernel calls, one epoch at a time.

Both solvers minimize the same objective

    J = Σ_i s_i [ loss(ŷ_i, y_i)
                 + ½ reg_bias w0² + ½ Σ_{j ∈ x_i} (reg_linear w_j² + reg_factors |v_j|²) ]

i.e. each row regularizes the parameters it touches (per-occurrence regularization, what SGD
does naturally; for ALS it is a per-feature penalty proportional to the feature's weighted
frequency, as in ALS-WR). The same ``reg_*`` values therefore mean the same thing for both.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from fmrec._kernels import als as _als
from fmrec._kernels import sgd as _sgd


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


class SGDSolver:
    """SGD or AdaGrad epochs over a freshly shuffled row order (Hogwild on several threads)."""

    def __init__(self, X: sp.csr_matrix, y, sample_weight, loss: int, state: FMState, *,
                 hp: dict, rng: np.random.RandomState, n_threads: int, accumulators=None):
        self.X, self.y, self.sw, self.loss, self.state = X, y, sample_weight, loss, state
        self.hp, self.rng, self.n_threads = hp, rng, n_threads
        self.adagrad = hp["lr_schedule"] == "adagrad"
        dt = state.w.dtype
        if accumulators is None:
            accumulators = (np.zeros(1, dt), np.zeros_like(state.w), np.zeros_like(state.V))
        self.accumulators = accumulators

    def epoch(self) -> tuple[float, float]:
        """One pass; returns (Σ s·loss measured before each row's update, Σ s)."""
        hp, st = self.hp, self.state
        order = self.rng.permutation(self.X.shape[0]).astype(np.intp)
        a0, aw, aV = self.accumulators
        loss_sum, weight_sum, n_bad = _sgd.sgd_epoch(
            self.X.indptr, self.X.indices, self.X.data, self.y, self.sw, order,
            st.w0, st.w, st.V, a0, aw, aV, self.loss, hp["learning_rate"], self.adagrad,
            hp["reg_bias"], hp["reg_linear"], hp["reg_factors"],
            hp["fit_intercept"], hp["fit_linear"], self.n_threads,
        )
        if n_bad or not np.isfinite(loss_sum):
            raise Diverged(f"{n_bad} rows had a non-finite output")
        return loss_sum, weight_sum


class ALSSolver:
    """Coordinate-descent sweeps (exact for the square loss, Newton steps for the log loss)."""

    def __init__(self, X: sp.csr_matrix, y, sample_weight, loss: int, state: FMState, *,
                 hp: dict, n_threads: int):
        self.X, self.y, self.sw, self.loss, self.state = X, y, sample_weight, loss, state
        self.hp, self.n_threads = hp, n_threads
        self.csc = X.tocsc()
        self.csc.sort_indices()
        dt = state.w.dtype
        # Per-occurrence regularization: feature j's penalty scales with Σ_i s_i [x_ij ≠ 0].
        if np.all(sample_weight == 1):
            occurrences = np.diff(self.csc.indptr).astype(np.float64)
        else:
            occurrences = np.zeros(X.shape[1])
            nonempty = np.diff(self.csc.indptr) > 0
            occurrences[nonempty] = np.add.reduceat(
                sample_weight[self.csc.indices].astype(np.float64),
                self.csc.indptr[:-1][nonempty])
        self.reg_linear = (hp["reg_linear"] * occurrences).astype(dt)
        self.reg_factors = (hp["reg_factors"] * occurrences).astype(dt)
        self.reg_bias = hp["reg_bias"] * float(sample_weight.sum(dtype=np.float64))
        n, k = X.shape[0], state.V.shape[1]
        self.r = np.empty(n, dt)
        self.q = np.empty((n, k), dt)

    def epoch(self) -> tuple[float, float]:
        hp, st = self.hp, self.state
        # Caches are rebuilt every sweep so rounding never accumulates across sweeps.
        _als.compute_caches(self.X.indptr, self.X.indices, self.X.data, self.y, self.loss,
                            float(st.w0[0]), st.w, st.V, self.r, self.q, self.n_threads)
        loss_sum, weight_sum, bad = _als.als_sweep(
            self.csc.indptr, self.csc.indices, self.csc.data, self.y, self.sw, self.loss,
            st.w0, st.w, st.V, self.r, self.q, self.reg_bias, self.reg_linear,
            self.reg_factors, hp["fit_intercept"], hp["fit_linear"],
        )
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
