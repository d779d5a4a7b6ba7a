"""Reading the columns of a DataFrame for FeatureEncoder: categorical values, finite numbers,
and the tokens of multi-valued cells (split once per distinct cell when cells repeat)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmrec.features._csr_build import index_dtype
from fmrec.features._vocabulary import row_error, split_cells

# Multi-valued string cells are split once per distinct cell unless a sample of
# _SAMPLE_CELLS of them is more than _MAX_DISTINCT_SHARE distinct (then each cell is split).
_SAMPLE_CELLS = 4096
_MAX_DISTINCT_SHARE = 0.5


def categorical_column(df: pd.DataFrame, column) -> pd.Series:
    """A categorical column, checked for missing values."""
    s = df[column]
    na = s.isna().to_numpy()
    if na.any():
        # A missing value is not a category: mapping it to one would invent a signal.
        raise ValueError(
            f"categorical column {column!r} has {int(na.sum())} missing value(s) "
            f"(NaN/None), first at row {int(np.flatnonzero(na)[0])}; fill or drop them")
    return s


def numeric_column(df: pd.DataFrame, column) -> np.ndarray:
    """A numeric column as finite float64."""
    s = df[column]
    try:
        x = s.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"numeric column {column!r} has non-numeric values "
                         f"(dtype {s.dtype})") from exc
    bad = ~np.isfinite(x)
    if bad.any():
        raise row_error(column, s, bad, "is NaN or infinite")
    return x


def column_tokens(df: pd.DataFrame, column, delimiter: str
                  ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """The tokens of a multi-valued column in *units*: ``(units, owner, tokens)``.

    ``tokens[i]`` belongs to unit ``owner[i]`` (non-decreasing). When every row holds at
    most one string cell and cells repeat (a million genre cells are a few dozen distinct
    strings), a unit is a distinct cell, split once, and ``units`` is the unit of each
    row (-1: no cell). Otherwise ``units`` is None and the units are the rows. List-like
    cells are exploded, then every string is split on the delimiter, so a token never
    contains the delimiter whichever form the cell had.
    """
    s = df[column].reset_index(drop=True)
    rows = None  # None: value i is the cell of row i
    if pd.api.types.infer_dtype(s, skipna=True) not in ("string", "empty"):
        s = s.explode()  # string cells pass through as themselves
        rows = s.index.to_numpy(dtype=np.int64)
    values = s.to_numpy(dtype=object)
    present = ~pd.isna(values)
    if not present.all():
        rows = np.flatnonzero(present) if rows is None else rows[present]
        values = values[present]
    kind = pd.api.types.infer_dtype(values, skipna=False)
    one_per_row = rows is None or bool((rows[1:] != rows[:-1]).all())
    distinct = _distinct_cells(values) if kind == "string" and one_per_row else None
    if distinct is not None:
        # Size the hash table for the distinct cells: pandas sizes it for every value
        # otherwise (~50 MB for a million cells), and growing it is slow.
        codes, cells = pd.factorize(values, size_hint=distinct)
        units = codes.astype(index_dtype(len(cells)))
        if rows is not None:
            units = np.full(len(df), -1, dtype=units.dtype)
            units[rows] = codes
        del codes  # int64 per row: free it before the split
        owner, values = split_cells(np.asarray(cells, dtype=object), delimiter)
        return units, *_drop_empty(owner, values)
    rows = np.arange(len(values), dtype=np.int64) if rows is None else rows
    if kind == "string":
        owner, values = split_cells(values, delimiter)
        owner = rows[owner]
    elif kind.startswith("mixed"):  # strings among other tokens: the slow, general path
        split = pd.Series(values, index=rows, dtype=object).str.split(
            delimiter, regex=False)
        exploded = split.where(split.notna(), values).explode()
        owner, values = exploded.index.to_numpy(dtype=np.int64), exploded.to_numpy(object)
    else:  # no string among the tokens (e.g. item ids), so none is empty
        return None, rows, values
    return None, *_drop_empty(owner, values)


def _distinct_cells(values: np.ndarray) -> int | None:
    """Rough upper bound of the distinct values, or None when they hardly repeat.

    Estimated from a sample of ~4096 evenly spaced values: when more than
    ``_MAX_DISTINCT_SHARE`` of the sample is distinct, hashing every cell to split each
    distinct one once would cost more than splitting them all.
    """
    step = max(1, len(values) // _SAMPLE_CELLS)
    sample = values[::step]
    n_distinct = len(pd.unique(sample))
    if n_distinct > _MAX_DISTINCT_SHARE * len(sample):
        return None
    return min(len(values), n_distinct * step)


def _drop_empty(owner: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.asarray(tokens != "", dtype=bool)
    return (owner, tokens) if keep.all() else (owner[keep], tokens[keep])


def occurrences(units: np.ndarray | None, owner: np.ndarray) -> np.ndarray | None:
    """How often each token of ``column_tokens`` occurs: a token of a distinct cell occurs
    once per row holding that cell (None: once)."""
    return None if units is None else np.bincount(units[units >= 0])[owner]
