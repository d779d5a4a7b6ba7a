"""The trainable parameters and what every solver derives from the data before its first epoch.

Every solver minimizes the same objective

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

from fmrec._kernels import predict as _predict

# Whole-array passes over the non-zeros run in pieces of this many entries, so that their
# temporaries (int64 casts, searchsorted results) stay small next to X.
CHUNK = 1 << 20


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
    rows_per_chunk = max(1, X.shape[0] * CHUNK // max(X.nnz, 1))
    for lo in range(0, X.shape[0], rows_per_chunk):
        hi = min(lo + rows_per_chunk, X.shape[0])
        a, b = X.indptr[lo], X.indptr[hi]
        weights = None if unit else np.repeat(sample_weight[lo:hi].astype(np.float64),
                                              np.diff(X.indptr[lo:hi + 1]))
        counts += np.bincount(X.indices[a:b], weights=weights, minlength=X.shape[1])
    return counts


def penalty_scale(counts: np.ndarray, power: float) -> np.ndarray:
    """n^power, with 0 for parameters no row touches (nothing to penalize against)."""
    out = np.zeros_like(counts)
    np.power(counts, power, out=out, where=counts > 0)
    return out


def predict_csr(X: sp.csr_matrix, w0: float, w: np.ndarray, V: np.ndarray,
                n_threads: int) -> np.ndarray:
    """ŷ of every row of a kernel-ready CSR ``X`` (float64), computed in ``V``'s dtype."""
    out = np.empty(X.shape[0], dtype=V.dtype)
    if X.shape[0]:
        _predict.predict(X.indptr, X.indices, X.data, float(w0), w, V, out, n_threads)
    return out.astype(np.float64)
