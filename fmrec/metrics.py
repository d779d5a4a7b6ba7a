"""Evaluation metrics for rating prediction and binary classification.

Each takes ``(y_true, y_pred, sample_weight=None)`` and returns a float; ``METRICS`` maps the
names accepted by ``eval_metric`` to (function, greater_is_better).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def rmse(y_true, y_pred, sample_weight=None) -> float:
    """Root mean squared error."""
    err = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    return float(np.sqrt(np.average(err**2, weights=sample_weight)))


def mae(y_true, y_pred, sample_weight=None) -> float:
    """Mean absolute error."""
    err = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    return float(np.average(np.abs(err), weights=sample_weight))


def log_loss(y_true, y_prob, sample_weight=None) -> float:
    """Mean negative log-likelihood of labels in {0, 1} given P(y=1), clipped away from 0/1."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.clip(np.asarray(y_prob, dtype=np.float64), 1e-15, 1 - 1e-15)
    return float(np.average(-(y * np.log(p) + (1 - y) * np.log1p(-p)), weights=sample_weight))


def auc(y_true, y_score, sample_weight=None) -> float:
    """Area under the ROC curve for labels in {0, 1}."""
    return float(roc_auc_score(y_true, y_score, sample_weight=sample_weight))


METRICS = {
    "rmse": (rmse, False),
    "mae": (mae, False),
    "logloss": (log_loss, False),
    "auc": (auc, True),
}
