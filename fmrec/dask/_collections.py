"""Dask collections in, lists of per-partition Delayed objects out (nothing is computed)."""

from __future__ import annotations

import dask.array as da
import dask.dataframe as dd
import numpy as np
from dask.base import is_dask_collection
from dask.delayed import Delayed


def is_dask(obj) -> bool:
    """A dask array, dataframe, series or delayed object."""
    return is_dask_collection(obj)


def row_partitions(obj, name: str) -> list[Delayed]:
    """One Delayed per row partition of a dask array (1-D or 2-D), DataFrame or Series.

    A 2-D array split over columns is first joined into one column chunk per row block: a
    partition must hold whole rows.
    """
    if isinstance(obj, da.Array):
        if obj.ndim == 2:
            if len(obj.chunks[1]) > 1:
                obj = obj.rechunk({1: -1})
            return list(obj.to_delayed()[:, 0])
        if obj.ndim == 1:
            return list(obj.to_delayed())
        raise ValueError(f"{name} must be a 1-D or 2-D dask array, got {obj.ndim} dimensions")
    if isinstance(obj, dd.DataFrame | dd.Series):
        return list(obj.to_delayed())
    raise TypeError(f"{name} must be a dask array, DataFrame or Series, got "
                    f"{type(obj).__name__}")


def n_columns(X) -> int:
    """Width of a dask design: the array's second dimension or the DataFrame's columns."""
    if isinstance(X, da.Array):
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D dask array, got {X.ndim} dimensions")
        if np.isnan(X.shape[1]):
            raise ValueError("X has an unknown number of columns; give its chunks a known "
                             "width (e.g. X.compute_chunk_sizes())")
        return int(X.shape[1])
    if isinstance(X, dd.DataFrame):
        return len(X.columns)
    raise TypeError(f"X must be a dask array or a dask DataFrame, got {type(X).__name__}")


def column_names(X) -> np.ndarray | None:
    """String column names of a dask DataFrame (the ``feature_names_in_`` sklearn keeps)."""
    if isinstance(X, dd.DataFrame) and all(isinstance(c, str) for c in X.columns):
        return np.asarray(X.columns, dtype=object)
    return None


def aligned_partitions(X, y=None, sample_weight=None) -> list[tuple]:
    """``[(X_part, y_part, w_part), ...]`` with matching partition counts (None where absent)."""
    xs = row_partitions(X, "X")
    ys = [None] * len(xs) if y is None else row_partitions(y, "y")
    ws = [None] * len(xs) if sample_weight is None else row_partitions(sample_weight,
                                                                        "sample_weight")
    if not len(ys) == len(ws) == len(xs):
        raise ValueError(f"X, y and sample_weight must have the same partitions: X has "
                         f"{len(xs)}, y {len(ys)}, sample_weight {len(ws)} (repartition them "
                         "alike, e.g. build them from one DataFrame)")
    return list(zip(xs, ys, ws, strict=True))
