"""Datasets: MovieLens 100K from a local copy, and synthetic data from a known FM.

MovieLens files are never shipped with fmrec (their licence forbids redistribution): they are
read from ``data_home`` (argument, else ``$FMREC_DATA_HOME``, else ``~/fmrec_data``), which
holds the unzipped ``ml-100k`` folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

ML100K_USERS, ML100K_ITEMS = 943, 1682
_RATING_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]


def data_home(data_home: str | os.PathLike | None = None) -> Path:
    """The folder datasets are read from: the argument, $FMREC_DATA_HOME or ~/fmrec_data."""
    if data_home is not None:
        return Path(data_home)
    return Path(os.environ.get("FMREC_DATA_HOME", Path.home() / "fmrec_data"))


def load_ml100k_split(fold: str = "u1", data_home_: str | os.PathLike | None = None):
    """Read one official MovieLens 100K split (``u1`` … ``u5``, ``ua``, ``ub``).

    Returns
    -------
    train, test : pandas.DataFrame
        Columns user_id, item_id (1-based, as in the files), rating, timestamp.

    Raises
    ------
    FileNotFoundError
        With the folders that were searched, when the split is not there.
    """
    if fold not in {"u1", "u2", "u3", "u4", "u5", "ua", "ub"}:
        raise ValueError(f"fold must be one of u1..u5, ua, ub; got {fold!r}")
    folder = data_home(data_home_) / "ml-100k"
    frames = []
    for part in ("base", "test"):
        path = folder / f"{fold}.{part}"
        if not path.is_file():
            raise FileNotFoundError(f"MovieLens 100K file {path} not found; set FMREC_DATA_HOME "
                                    "to the folder that contains ml-100k/")
        frames.append(pd.read_csv(path, sep="\t", names=_RATING_COLUMNS, dtype=np.int64))
    return frames[0], frames[1]


def one_hot_user_item(frame: pd.DataFrame, n_users: int = ML100K_USERS,
                      n_items: int = ML100K_ITEMS) -> sp.csr_matrix:
    """CSR rows with a 1 at the user's column and at n_users + the item's column (1-based ids)."""
    n = len(frame)
    cols = np.column_stack([frame["user_id"].to_numpy() - 1,
                            n_users + frame["item_id"].to_numpy() - 1]).ravel()
    return sp.csr_matrix((np.ones(2 * n, np.float32), cols.astype(np.int32),
                          np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
                         shape=(n, n_users + n_items))


def make_fm_regression(n_samples: int = 10_000, n_features: int = 500, n_factors: int = 4,
                       nnz_per_row: int = 5, noise: float = 0.1, factor_std: float = 0.3,
                       random_state: int | None = 0):
    """Sparse rows and targets drawn from a known FM plus Gaussian noise.

    Returns
    -------
    X : scipy.sparse.csr_matrix of shape (n_samples, n_features), float32
    y : ndarray of shape (n_samples,)
    truth : dict with w0, w, V (the generating parameters) and the noise level.
    """
    rng = np.random.default_rng(random_state)
    if not 1 <= nnz_per_row <= n_features:
        raise ValueError(f"nnz_per_row must be in [1, n_features], got {nnz_per_row}")
    cols = _distinct_columns(rng, n_samples, n_features, nnz_per_row)
    vals = rng.uniform(0.5, 1.5, size=cols.shape).astype(np.float32)
    X = sp.csr_matrix((vals.ravel(), cols.ravel().astype(np.int32),
                       np.arange(0, n_samples * nnz_per_row + 1, nnz_per_row)),
                      shape=(n_samples, n_features))
    truth = {"w0": 1.0, "w": rng.normal(0, 0.5, n_features),
             "V": rng.normal(0, factor_std, (n_features, n_factors)), "noise": noise}
    y = _fm_output(X, truth) + rng.normal(0, noise, n_samples)
    return X, y, truth


def make_fm_classification(n_samples: int = 10_000, n_features: int = 500, n_factors: int = 4,
                           nnz_per_row: int = 5, factor_std: float = 0.6,
                           random_state: int | None = 0):
    """Binary labels drawn as Bernoulli(σ(ŷ)) from a known FM; returns (X, y in {0, 1}, truth)."""
    rng = np.random.default_rng(random_state)
    X, _, truth = make_fm_regression(n_samples, n_features, n_factors, nnz_per_row, 0.0,
                                     factor_std, random_state)
    truth["w0"] = 0.0
    logits = _fm_output(X, truth)
    y = (rng.random(n_samples) < 1 / (1 + np.exp(-logits))).astype(np.int64)
    return X, y, truth


def _fm_output(X, truth) -> np.ndarray:
    q = X @ truth["V"]
    sq = X.multiply(X) @ truth["V"] ** 2
    return truth["w0"] + X @ truth["w"] + 0.5 * (q**2 - sq).sum(axis=1)


def _distinct_columns(rng, n, d, m):
    """Sorted rows of m distinct column indices, redrawing duplicates until none are left."""
    cols = np.sort(rng.integers(0, d, size=(n, m)), axis=1)
    while True:
        dup = np.zeros_like(cols, dtype=bool)
        dup[:, 1:] = cols[:, 1:] == cols[:, :-1]
        if not dup.any():
            return cols
        cols[dup] = rng.integers(0, d, size=int(dup.sum()))
        cols.sort(axis=1)
