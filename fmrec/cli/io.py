"""File reading and writing for the command line: tables (CSV, Parquet) and libSVM text.

Every failure a user can cause (a missing file, an empty one, a missing Parquet engine, a
column that is not there) is raised as ``FileNotFoundError`` or ``ValueError`` with a message
that names the file or the column, so the CLI can print it on one line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

PARQUET_SUFFIXES = (".parquet", ".pq")
LIBSVM_SUFFIXES = (".libfm", ".libsvm", ".svm")


def _suffix(path: str | os.PathLike) -> str:
    """The format-bearing suffix, looking through a compression suffix (``x.csv.gz``)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst", ".zip") and len(suffixes) > 1:
        return suffixes[-2]
    return suffixes[-1] if suffixes else ""


def is_libsvm(path: str | os.PathLike, fmt: str | None = None) -> bool:
    """True when ``fmt`` says libsvm, or when it is unset and the suffix is a libSVM one.

    Examples
    --------
    >>> is_libsvm("train.libfm"), is_libsvm("train.csv"), is_libsvm("x.txt", "libsvm")
    (True, False, True)
    """
    if fmt is not None:
        return fmt == "libsvm"
    return _suffix(path) in LIBSVM_SUFFIXES


def _check_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} not found")
    return path


def _parquet_engine_check() -> None:
    # pandas names the missing engine in a multi-line message; one line with the fix is kinder.
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ValueError("reading or writing Parquet needs pyarrow: pip install pyarrow, "
                         "or use CSV") from None


def read_table(path: str | os.PathLike, what: str = "input file",
               fmt: str | None = None) -> pd.DataFrame:
    """Read a CSV (any other suffix) or Parquet (``.parquet``/``.pq``) file with a header row.

    Parameters
    ----------
    path : str or os.PathLike
        The file; ``.tsv`` is read tab-separated, compressed CSV (``.csv.gz``) works.
    what : str
        How error messages call the file.
    fmt : {"csv", "parquet"}, optional
        Overrides the suffix.

    Returns
    -------
    pandas.DataFrame
        At least one row.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When it is empty, unparsable, or Parquet without pyarrow.
    """
    path = _check_file(path, what)
    suffix = _suffix(path)
    parquet = fmt == "parquet" or (fmt is None and suffix in PARQUET_SUFFIXES)
    try:
        if parquet:
            _parquet_engine_check()
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"cannot read {what} {str(path)!r}: {_one_line(exc)}") from None
    if frame.empty:
        raise ValueError(f"{what} {str(path)!r} has no data rows")
    return frame


def write_table(frame: pd.DataFrame, path: str | os.PathLike | None) -> None:
    """Write ``frame`` as CSV (stdout when ``path`` is None) or Parquet by suffix."""
    if path is None:
        frame.to_csv(sys.stdout, index=False)
        return
    check_output(path, "output file")
    if _suffix(path) in PARQUET_SUFFIXES:
        _parquet_engine_check()
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, sep="\t" if _suffix(path) == ".tsv" else ",")


def read_libsvm(path: str | os.PathLike, n_features: int | None = None, what: str = "input file"):
    """Read ``label idx:val ...`` lines with zero-based indices (libSVM / libFM text).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    n_features : int, optional
        Width of the returned matrix (a model's ``n_features_in_``); an index beyond it is an
        error.
    what : str
        How error messages call the file.

    Returns
    -------
    X : scipy.sparse.csr_matrix
    y : ndarray of float64
    """
    from sklearn.datasets import load_svmlight_file

    path = _check_file(path, what)
    try:
        X, y = load_svmlight_file(os.fspath(path), n_features=n_features, zero_based=True)
    except ValueError as exc:
        raise ValueError(f"cannot read {what} {str(path)!r} as libSVM: {_one_line(exc)}") from None
    except OverflowError:  # an index past 2**31 - 1, which sklearn's reader cannot hold
        raise ValueError(f"cannot read {what} {str(path)!r} as libSVM: a feature index is "
                         f"{np.iinfo(np.int32).max + 1} or more; number the features from 0 "
                         "without gaps") from None
    if X.shape[0] == 0:
        raise ValueError(f"{what} {str(path)!r} has no data rows")
    return X, y


def write_lines(values: Iterable, path: str | os.PathLike | None) -> None:
    """One value per line to ``path`` or stdout, floats with full precision."""
    text = "".join(f"{v:.10g}\n" if isinstance(v, float | np.floating) else f"{v}\n"
                   for v in values)
    if path is None:
        sys.stdout.write(text)
        return
    check_output(path, "output file")
    Path(path).write_text(text)


def require_columns(frame: pd.DataFrame, columns: Iterable, what: str) -> None:
    """Raise a ValueError naming the first of ``columns`` that ``frame`` lacks."""
    for column in columns:
        if column is not None and column not in frame.columns:
            raise ValueError(f"unknown column {column!r} in {what}; it has columns "
                             f"{', '.join(map(str, frame.columns))}")


def split_multi_valued(frame: pd.DataFrame, separator: str = "|") -> pd.DataFrame:
    """Turn text columns such as ``"Action|Comedy"`` into lists, the form list-valued features take.

    A CSV cannot hold lists, so the CLI writes and reads them joined by ``separator``; only
    columns where some value contains it are converted.
    """
    out = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if not (pd.api.types.is_string_dtype(values) or values.dtype == object):
            continue
        text = values.dropna()
        if not text.map(lambda s: isinstance(s, str) and separator in s).any():
            continue
        out[column] = [[] if not isinstance(s, str) or s == "" else s.split(separator)
                       for s in values]
    return out


def check_output(path: str | os.PathLike, what: str) -> None:
    """Refuse an output file that is a folder before any work is done, and make its folder."""
    if Path(path).is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder; give a file name")
    Path(path).parent.mkdir(parents=True, exist_ok=True)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def read_ids(path: str | os.PathLike, column: str) -> list[str]:
    """Ids from a file: one per line, or a CSV whose header names ``column``.

    Returns them as text; the caller maps them onto the model's own ids.
    """
    path = _check_file(path, "users file")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"users file {str(path)!r} has no ids")
    header = [cell.strip() for cell in lines[0].split(",")]
    if column in header:
        frame = read_table(path, "users file")
        return frame[column].dropna().astype(str).tolist()
    return lines


def truth_pairs(relevant: pd.DataFrame, user_col: str, item_col: str) -> pd.DataFrame:
    """Relevant pairs under the column names of ``recommend``'s output."""
    return relevant[[user_col, item_col]].set_axis(["user", "item"], axis=1)
