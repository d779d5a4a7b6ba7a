"""Loss codes and link functions shared by the kernels' callers, the models and the scorers.

The codes match ``SQUARE`` and ``LOGISTIC`` in ``fmrec/_kernels/_common.pxd``.
"""

from __future__ import annotations

import numpy as np

SQUARE, LOGISTIC = 0, 1


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + e^-z), written with tanh so that it never overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def loss_value(loss: int, yhat, y) -> np.ndarray:
    """Pointwise loss: ½(ŷ - y)², or the log loss of σ(ŷ) for y ∈ {0, 1} (float64)."""
    yhat, y = np.asarray(yhat, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if loss == SQUARE:
        return 0.5 * (yhat - y) ** 2
    margin = np.where(y > 0.5, yhat, -yhat)
    return np.logaddexp(0.0, -margin)
