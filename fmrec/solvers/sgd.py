"""SGD / AdaGrad epochs over a freshly shuffled row order (see ``_state`` for the objective)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from fmrec._kernels import sgd as _sgd
from fmrec.solvers._state import Diverged, FMState, penalty_scale

# AdaGrad epochs train on the parameters packed per feature (see ``_sgd.sgd_epoch``): two
# cache lines per non-zero instead of five, for two extra passes over the parameters per
# epoch. Packing a feature moves about as much memory as a few of its non-zeros touch, so an
# epoch with fewer non-zeros per feature than this (a small Dask partition over many
# features) keeps the flat arrays (an estimate, not a measured break-even); and the packed
# copy doubles the parameters' memory, so very large models keep them too.
PACK_MIN_NNZ_PER_FEATURE = 4
PACK_MAX_BYTES = 1 << 30


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
        d, k = state.V.shape
        size = _sgd.workspace_size(d, k)
        pack = (self.adagrad and X.nnz >= PACK_MIN_NNZ_PER_FEATURE * d
                and size * dt.itemsize <= PACK_MAX_BYTES)
        self.workspace = np.empty(size if pack else 0, dt)

    def epoch(self) -> tuple[float, float]:
        """One pass; returns (Σ s·loss measured before each row's update, Σ s)."""
        hp, st = self.hp, self.state
        order = self.rng.permutation(self.X.shape[0]).astype(np.intp)
        a0, aw, aV = self.accumulators
        loss_sum, weight_sum, n_bad = _sgd.sgd_epoch(
            self.X.indptr, self.X.indices, self.X.data, self.y, self.sw, order,
            st.w0, st.w, st.V, a0, aw, aV, self.loss, hp["learning_rate"], self.adagrad,
            self.reg_bias, hp["reg_linear"], hp["reg_factors"], self.reg_scale,
            hp["fit_intercept"], hp["fit_linear"], self.n_threads, self.workspace,
        )
        if n_bad or not np.isfinite(loss_sum):
            raise Diverged(f"{n_bad} rows had a non-finite output")
        return loss_sum, weight_sum
