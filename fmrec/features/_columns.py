"""Reading the columns of a DataFrame for FeatureEncoder: categorical values and numbers with
where they are missing, the tokens of multi-valued cells (split once per distinct cell when
cells repeat), and the rule that tells an identifier-like column from a feature."""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from fmrec.features._csr_build import index_dtype
from fmrec.features._vocabulary import ValueCounts, integers, row_error, split_cells

# Multi-valued string cells are split once per distinct cell unless a sample of
# _SAMPLE_CELLS of them is more than _MAX_DISTINCT_SHARE distinct (then each cell is split).
_SAMPLE_CELLS = 4096
_MAX_DISTINCT_SHARE = 0.5

# A categorical column is identifier-like when at least this share of its non-missing values
# are distinct, over at least UNIQUE_MIN_VALUES of them (fewer say nothing: five items may
# well have five colours).
UNIQUE_SHARE = 0.95
UNIQUE_MIN_VALUES = 20


class UniqueColumnWarning(UserWarning):
    """A categorical column has (nearly) one distinct value per row, like a title or an id,
    and is not encoded (``FeatureEncoder(drop_unique=True)``, as the Recommender does).

    Examples
    --------
    >>> import warnings
    >>> import pandas as pd
    >>> from fmrec import FeatureEncoder, UniqueColumnWarning
    >>> films = pd.DataFrame({"title": [f"Film {i}" for i in range(30)], "kind": ["a", "b"] * 15})
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", UniqueColumnWarning)
    ...     enc = FeatureEncoder(categorical=["title", "kind"], drop_unique=True).fit(films)
    >>> enc.dropped_columns_, enc.feature_names_.tolist()
    (['title'], ['kind=a', 'kind=b'])
    """


def categorical_column(df: pd.DataFrame, column) -> tuple[pd.Series, np.ndarray]:
    """A categorical column and where it is missing (None, NaN, pd.NA, NaT).

    Raises ValueError naming the column and row for a cell that cannot be a category (a
    list, dict or set: those belong in a multi-valued column) and for integers that fit no
    64-bit type.
    """
    s = df[column]
    if s.dtype == object:
        kind = pd.api.types.infer_dtype(s, skipna=True)
        if kind == "integer":
            try:
                integers(s.dropna().to_numpy())
            except ValueError as exc:
                raise ValueError(f"column {column!r}: {exc}") from None
        elif kind.startswith("mixed"):
            cells = s.map(_cell_kind).to_numpy()  # one pass over the (Python) cells
            unhashable = cells == _UNHASHABLE
            if unhashable.any():
                cell = s.iloc[int(np.flatnonzero(unhashable)[0])]
                raise row_error(column, s, unhashable,
                                f"holds a {type(cell).__name__} cell, which cannot be a "
                                "category (list-like cells go in a multi-valued column)")
            booleans = cells == _BOOL
            if booleans.any() and (cells == _NUMBER).any():
                # pandas hashes True as 1 and False as 0: two categories would merge.
                raise row_error(column, s, booleans,
                                "mixes booleans with numbers (True and 1 are one key to "
                                "pandas); give the column one type")
    return s, s.isna().to_numpy()


_OTHER, _BOOL, _NUMBER, _UNHASHABLE = range(4)


def _cell_kind(value) -> int:
    """What a categorical cell is, for the checks above."""
    if isinstance(value, bool | np.bool_):
        return _BOOL
    if isinstance(value, numbers.Number):
        return _NUMBER
    try:
        hash(value)
    except TypeError:
        return _UNHASHABLE
    return _OTHER


def numeric_column(df: pd.DataFrame, column) -> tuple[np.ndarray, np.ndarray]:
    """A numeric column as float64 (NaN where missing) and where it is missing.

    Any numeric dtype, NumPy, nullable (``Int64``, ``Float64``, ``boolean``) or Arrow-backed;
    None, NaN and pd.NA are missing. Infinity is not a missing value: it raises ValueError.
    """
    s = df[column]
    try:
        x = s.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"numeric column {column!r} has non-numeric values "
                         f"(dtype {s.dtype})") from exc
    missing = np.isnan(x)
    infinite = np.isinf(x)
    if infinite.any():
        raise ValueError(f"{row_error(column, s, infinite, 'is infinite')}: infinity is not "
                         "a missing value (None/NaN/NA are imputed); clip or drop it")
    return x, missing


def identifier_like(counts: ValueCounts) -> bool:
    """Whether a categorical column's values (their ``ValueCounts``) identify rows rather
    than describe them: see ``UNIQUE_SHARE`` and ``UNIQUE_MIN_VALUES``."""
    n_values = int(counts.counts.sum())
    return n_values >= UNIQUE_MIN_VALUES and len(counts.values) >= UNIQUE_SHARE * n_values


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
