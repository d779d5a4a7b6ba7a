"""Every check of user input in one place: X, y, sample weights, eval sets, hyperparameters."""

from __future__ import annotations

import numbers
import os

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import _check_sample_weight, check_array, validate_data

from fmrec._kernels._openmp import openmp_enabled
from fmrec.design import DesignMatrix, RelationBlock

DTYPES = {"float32": np.float32, "float64": np.float64}


def resolve_dtype(dtype) -> type:
    """Map the ``dtype`` hyperparameter to np.float32 or np.float64."""
    try:
        key = np.dtype(dtype).name
    except TypeError as exc:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from exc
    if key not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return DTYPES[key]


def physical_memory() -> int | None:
    """Bytes of RAM on this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_model_size(n_features: int, n_factors: int, dtype) -> None:
    """Refuse, before allocating, a model whose training state would not fit in memory.

    Training holds the parameters (w and V) about twice (residual caches or AdaGrad sums)
    plus float64 column counts. A width past the RAM nearly always means sparse ids used
    as column indices (a libSVM index of 2e9 asks for 2e9 columns).
    """
    total = physical_memory()
    need = n_features * ((n_factors + 1) * 2 * np.dtype(dtype).itemsize + 8)
    if total is not None and need > total:
        raise ValueError(f"X has {n_features} columns: training {n_factors} factors on them "
                         f"needs about {need / 2**30:.1f} GiB, more than this machine's "
                         f"{total / 2**30:.1f} GiB; are the column indices sparse ids? "
                         "Number the features from 0 without gaps")


def as_kernel_csr(X) -> sp.csr_matrix:
    """Canonical CSR (from sparse or dense) for the kernels: no duplicates, sorted indices,
    int32/int64 indices."""
    X = sp.csr_matrix(X)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    if X.indices.dtype != X.indptr.dtype or X.indices.dtype not in (np.int32, np.int64):
        index_dtype = np.int64 if X.nnz > np.iinfo(np.int32).max else np.int32
        X.indices = X.indices.astype(index_dtype)
        X.indptr = X.indptr.astype(index_dtype)
    return X


def check_X(estimator, X, *, dtype, reset: bool) -> sp.csr_matrix | DesignMatrix:
    """Validate a design matrix (sparse in any format, or dense) into canonical CSR.

    A :class:`~fmrec.design.DesignMatrix` stays one, with canonical parts. Raises
    ``ValueError`` for NaN/inf, empty input and a width that differs from training.
    """
    if isinstance(X, DesignMatrix):
        return _check_design(estimator, X, dtype=dtype, reset=reset)
    X = validate_data(
        estimator, X, reset=reset, accept_sparse="csr", dtype=dtype, accept_large_sparse=True
    )
    return as_kernel_csr(X)


def check_X_y(estimator, X, y, *, dtype, reset: bool, y_numeric: bool):
    """Validate X as in ``check_X`` and y as a finite 1-D array of the same length."""
    if isinstance(X, DesignMatrix):
        X = _check_design(estimator, X, dtype=dtype, reset=reset)
        y = check_array(y, ensure_2d=False, dtype=np.float64 if y_numeric else None,
                        input_name="y")
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {y.shape}")
        return X, check_in_range(y, dtype) if y_numeric else y
    X, y = validate_data(
        estimator, X, y, reset=reset, accept_sparse="csr", dtype=dtype,
        accept_large_sparse=True, y_numeric=y_numeric, multi_output=False,
    )
    return as_kernel_csr(X), check_in_range(y, dtype) if y_numeric else y


def check_in_range(y: np.ndarray, dtype, what: str = "y") -> np.ndarray:
    """Targets the model's floats can hold: in float32 a value beyond ~3.4e38 becomes inf,
    and the fit would end as if it had diverged."""
    limit = np.finfo(dtype).max if np.issubdtype(np.dtype(dtype), np.floating) else None
    if limit is not None and len(y) and np.issubdtype(y.dtype, np.number):
        big = np.flatnonzero(np.abs(y) > limit)
        if len(big):
            raise ValueError(f"{what} holds {float(y[big[0]]):.6g} at row {int(big[0])}, "
                             f"beyond what {np.dtype(dtype).name} holds (±{limit:.3g}); use "
                             "dtype='float64' or rescale the targets")
    return y


def _check_design(estimator, X: DesignMatrix, *, dtype, reset: bool) -> DesignMatrix:
    """Each part of a DesignMatrix checked like a sparse X; the total width like n_features_in_."""
    if X.shape[0] == 0:
        raise ValueError("Found array with 0 sample(s) (shape=(0, ...)) while a minimum of 1 "
                         "is required.")
    flat = _finite_csr(X.flat, dtype, "the flat part of X")
    blocks = [RelationBlock(_finite_csr(b.matrix, dtype, f"block {i} of X"), b.index)
              for i, b in enumerate(X.blocks)]
    width = X.shape[1]
    if reset:
        estimator.n_features_in_ = width
        if hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    elif width != estimator.n_features_in_:
        raise ValueError(f"X has {width} features, but {type(estimator).__name__} is "
                         f"expecting {estimator.n_features_in_} features as input.")
    return DesignMatrix(flat, blocks)


def _finite_csr(matrix, dtype, what: str) -> sp.csr_matrix:
    matrix = as_kernel_csr(sp.csr_matrix(matrix, dtype=dtype))
    if not np.all(np.isfinite(matrix.data)):
        raise ValueError(f"{what} contains NaN or infinity")
    return matrix


def check_sample_weight(sample_weight, X, dtype) -> np.ndarray:
    """Finite, non-negative weights, not all zero (ones when None)."""
    sw = _check_sample_weight(sample_weight, X, dtype=dtype, ensure_non_negative=True)
    if not np.all(np.isfinite(sw)):
        bad = int(np.flatnonzero(~np.isfinite(sw))[0])
        raise ValueError(f"sample_weight must be finite; row {bad} has {sw[bad]}")
    if not np.any(sw > 0):
        raise ValueError("sample_weight is zero for every row: nothing to fit")
    return np.ascontiguousarray(sw, dtype=dtype)


def check_eval_set(eval_set):
    """Unpack ``eval_set=(X_val, y_val)`` or ``(X_val, y_val, sample_weight_val)``."""
    if eval_set is None:
        return None
    if isinstance(eval_set, list) and len(eval_set) == 1 and isinstance(eval_set[0], tuple):
        eval_set = eval_set[0]
    if not isinstance(eval_set, tuple) or len(eval_set) not in (2, 3):
        raise TypeError("eval_set must be a tuple (X_val, y_val) or (X_val, y_val, sample_weight)")
    return eval_set if len(eval_set) == 3 else (*eval_set, None)


def check_frame(df, columns, what: str) -> None:
    """``df`` is a DataFrame with every one of ``columns``; one error lists all it lacks."""
    import pandas as pd  # only the DataFrame-facing modules need pandas here

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} is missing column(s) {missing}; it has {list(df.columns)}")


def check_interval(name: str, value, *, low=None, high=None, low_open=False, integer=False,
                   allow_none=False):
    """Check one numeric hyperparameter; the message names it and the offending value."""
    if value is None and allow_none:
        return
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an integer" if integer else "a number"
        raise TypeError(f"{name} must be {what}, got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        op = ">" if low_open else ">="
        raise ValueError(f"{name} must be {op} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


def resolve_n_jobs(n_jobs) -> int:
    """scikit-learn meaning: None is 1, -1 every core, -2 all but one; 1 without OpenMP."""
    if n_jobs is None:
        n_jobs = 1
    check_interval("n_jobs", n_jobs, integer=True)
    if n_jobs == 0:
        raise ValueError("n_jobs must not be 0 (use 1 for one thread, -1 for every core)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = n_jobs if n_jobs > 0 else max(1, (cores or 1) + 1 + n_jobs)
    return threads if openmp_enabled() else 1


def check_array_1d_finite(name: str, values, n_rows: int, dtype) -> np.ndarray:
    """A finite 1-D array of length n_rows (used for eval-set targets)."""
    arr = check_array(values, ensure_2d=False, dtype=dtype, input_name=name)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ValueError(f"{name} must have shape ({n_rows},), got {arr.shape}")
    return arr
