"""The value-to-feature maps of FeatureEncoder's fields: category vocabularies (with the
infrequent bucket and growth) and numeric bins, plus the typed-string helpers that let both
persist without pickle."""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np
import pandas as pd

INFREQUENT = "__infrequent__"
# The value part of a missing-value feature's name: "gender=<missing>", "age=<missing>".
MISSING = "<missing>"
KINDS = ("categorical", "numeric", "multi_valued")
NORMALIZATIONS = ("sum", "sqrt", "none")
MAX_UNSEEN_SHOWN = 5
_INT64_MAX = np.iinfo(np.int64).max


def as_columns(columns, name: str) -> list:
    # A bare string is one column name, not a sequence of one-letter names.
    if isinstance(columns, str) or not isinstance(columns, Iterable):
        columns = [columns]
    columns = list(columns)
    for c in columns:
        if not isinstance(c, Hashable):
            raise ValueError(f"{name} must hold column names, got {c!r}")
    return columns


def typed(values: np.ndarray) -> np.ndarray:
    """Values as a plain typed array when they share one simple type, else as objects."""
    values = np.asarray(values)
    kind = pd.api.types.infer_dtype(values, skipna=False)
    if kind == "integer":
        return integers(values)
    if kind == "floating":
        return values.astype(np.float64)
    if kind == "boolean":
        return values.astype(bool)
    return values.astype(object)


def integers(values) -> np.ndarray:
    """Integer values (any integer dtype, or Python ints as objects) as int64, or as uint64
    when some reach 2**63 and none is negative, as 64-bit hashed ids do.

    NumPy's casts would wrap such values silently (2**63 to -2**63, merging two ids), so
    values that fit neither type raise ValueError instead.
    """
    values = np.asarray(values)
    if values.dtype.kind == "u" and values.size and values.max() > _INT64_MAX:
        return values.astype(np.uint64, copy=False)
    if values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    for dtype in (np.int64, np.uint64):
        try:
            return values.astype(dtype)
        except OverflowError:
            continue
    ints = values.tolist()
    big = next((v for v in ints if not -(2**63) <= v < 2**63), ints[0])
    low = next((v for v in ints if v < 0), None)
    why = (f"{big!r} is beyond 64 bits" if not -(2**63) <= big < 2**64
           else f"{big!r} needs unsigned 64 bits while {low!r} is negative")
    raise ValueError(f"integer values must all fit in int64 or all in uint64, but {why}; "
                     "give such values as strings")


def vocab_kind(values: np.ndarray, column) -> str:
    """The one-letter kind stored by ``to_arrays`` so a vocabulary comes back typed."""
    kind = pd.api.types.infer_dtype(np.asarray(values, dtype=object), skipna=False)
    kinds = {"integer": "i", "floating": "f", "boolean": "b", "string": "U", "empty": "U"}
    if kind not in kinds:
        raise ValueError(
            f"cannot store the vocabulary of column {column!r} without pickle: its values are "
            f"of inferred type {kind!r}; only ints, floats, bools and strings are supported")
    if kind == "string":
        # NumPy's fixed-width strings drop trailing NULs: "x\0" would load back as "x" and
        # merge with it.
        ends = [v for v in np.asarray(values, dtype=object) if v.endswith("\0")]
        if ends:
            raise ValueError(f"cannot store the vocabulary of column {column!r}: value "
                             f"{ends[0]!r} ends in a NUL character, which the file format "
                             "drops; strip or replace trailing NULs before fitting")
    return kinds[kind]


def from_str(values: np.ndarray, kind: str) -> np.ndarray:
    """The typed values ``to_str`` wrote (a file's strings): ValueError if they do not parse
    as ``kind``, one of ``vocab_kind``'s letters."""
    if kind not in ("i", "f", "b", "U"):
        raise ValueError(f"unknown vocabulary kind {kind!r}")
    if values.dtype.kind != "U":
        raise ValueError(f"vocabulary values must be strings, got dtype {values.dtype}")
    if kind == "b" and not np.isin(values, ("True", "False")).all():
        raise ValueError("boolean vocabulary values must be 'True' or 'False'")
    if kind == "i":
        try:
            return values.astype(np.int64)
        except OverflowError:  # ids of 2**63 and above, saved from a uint64 vocabulary
            return values.astype(np.uint64)
    if kind == "f":
        return values.astype(np.float64)
    if kind == "b":
        return values == "True"
    return values.astype(object)


def to_str(values: np.ndarray, kind: str) -> np.ndarray:
    # repr keeps every bit of a float; str of a Python or NumPy scalar is its plain form.
    values = np.asarray(values, dtype=object)
    if kind == "f":
        return np.array([repr(float(v)) for v in values], dtype=str)
    return np.array([str(v) for v in values], dtype=str).reshape(len(values))


def row_error(column, series: pd.Series, bad: np.ndarray, what: str) -> ValueError:
    row = int(np.flatnonzero(bad)[0])
    return ValueError(
        f"column {column!r} {what} at row {row} (index label {series.index[row]!r}); "
        f"{int(bad.sum())} row(s) affected")


class Vocabulary:
    """Seen values of one field and the local feature each maps to.

    ``categories`` holds every value seen at fit (sorted when sortable); ``local[i]`` is the
    feature of ``categories[i]`` inside the field. Infrequent values all share the last one.
    """

    def __init__(self, categories: np.ndarray, local: np.ndarray, n_local: int,
                 has_infrequent: bool):
        self.categories = typed(categories)
        self.local = np.asarray(local, dtype=np.int64)
        self.n_local = int(n_local)
        self.has_infrequent = bool(has_infrequent)
        self._index = pd.Index(self.categories, tupleize_cols=False)
        if not self._index.is_unique:
            # Distinct Python values that hash alike (True and 1, False and 0.0): lookups
            # could not tell them apart.
            same = self._index[self._index.duplicated()][0]
            raise ValueError(f"the value {same!r} and another one are the same key "
                             "(booleans and numbers such as True and 1 compare equal); give "
                             "the column one type")
        # ``local`` with -1 appended, so position -1 ("not found") reads as unseen; int32
        # keeps the per-row codes of a million-row transform at half the size.
        small = self.n_local <= np.iinfo(np.int32).max
        self._local_or_unseen = np.append(self.local, -1).astype(np.int32 if small else np.int64)
        self._lookup: dict | None = None

    @classmethod
    def fit(cls, values, min_frequency: int | None, weights=None) -> Vocabulary:
        """Vocabulary of ``values``, ``values[i]`` occurring ``weights[i]`` times (default 1)."""
        counted = ValueCounts.of(values, weights)
        return cls.from_counts(counted.values, counted.counts, min_frequency)

    @classmethod
    def from_counts(cls, uniques: np.ndarray, counts: np.ndarray,
                    min_frequency: int | None) -> Vocabulary:
        """Vocabulary of distinct ``uniques`` (first-seen order) seen ``counts`` times each."""
        uniques, counts = typed(uniques), np.asarray(counts, dtype=np.int64)
        try:
            order = np.argsort(uniques, kind="stable")
        except TypeError:  # mixed types do not compare: keep first-seen order
            order = np.arange(len(uniques))
        uniques, counts = uniques[order], counts[order]
        frequent = counts >= (min_frequency or 0)
        local = np.cumsum(frequent) - 1
        n_frequent = int(frequent.sum())
        local[~frequent] = n_frequent
        return cls(uniques, local, n_frequent + int(not frequent.all()),
                   not frequent.all())

    def extend(self, values, min_frequency: int | None,
               weights=None) -> tuple[Vocabulary, int, bool]:
        """A vocabulary that also holds the values of ``values`` not seen so far.

        Existing features keep their local index, except a shared infrequent feature, which
        stays last. ``weights`` are occurrence counts as in ``fit``. Returns (new vocabulary,
        new frequent features, infrequent one created).
        """
        codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=True)
        counts = _counts(codes, uniques, weights)
        uniques = typed(np.asarray(uniques))
        known = self.encode(uniques) >= 0
        new, counts = uniques[~known], counts[~known]
        try:
            order = np.argsort(new, kind="stable")
        except TypeError:  # as in fit: unorderable values keep first-seen order
            order = np.arange(len(new))
        new, counts = new[order], counts[order]
        frequent = counts >= (min_frequency or 0)
        n_frequent_old = self.n_local - self.has_infrequent
        n_new = int(frequent.sum())
        create_infrequent = bool((~frequent).any() and not self.has_infrequent)
        has_infrequent = self.has_infrequent or create_infrequent
        infrequent = n_frequent_old + n_new  # the shared feature stays last
        local = self.local.copy()
        local[local >= n_frequent_old] = infrequent
        new_local = np.full(len(new), infrequent, dtype=np.int64)
        new_local[frequent] = n_frequent_old + np.arange(n_new)
        categories = np.concatenate([self.categories.astype(object), new.astype(object)])
        vocab = Vocabulary(categories, np.concatenate([local, new_local]),
                            infrequent + has_infrequent, has_infrequent)
        return vocab, n_new, create_infrequent

    def feature_values(self) -> list:
        """The value each local feature stands for (``INFREQUENT`` for the shared one)."""
        n_frequent = self.n_local - self.has_infrequent
        frequent = self.local < n_frequent
        # Category order after fit, but ``extend`` appends: order by feature, not by category.
        out = self.categories[frequent][np.argsort(self.local[frequent], kind="stable")].tolist()
        if self.has_infrequent:
            out.append(INFREQUENT)
        return out

    def encode(self, values) -> np.ndarray:
        """Local feature of each value (int32 unless huge), -1 for values not seen at fit."""
        if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
            # Look up each category once, then broadcast through the integer codes.
            per_cat = self.encode(np.asarray(values.cat.categories))
            per_cat = np.append(per_cat, per_cat.dtype.type(-1))  # code -1 (missing): unseen
            return per_cat[values.cat.codes.to_numpy()]
        # Objects are looked up as they are: given an object array (or the object array of a
        # string column), pandas would first infer a dtype and copy the values into it, for
        # the same matches (5x the peak memory).
        target = values if isinstance(values, pd.Series) else np.asarray(values)
        if isinstance(target, np.ndarray) and target.dtype == object:
            target = pd.Index(target, dtype=object, copy=False)
        return self._local_or_unseen[self._index.get_indexer(target)]

    def lookup(self, value) -> int | None:
        if self._lookup is None:
            self._lookup = dict(zip(self.categories.tolist(), self.local.tolist(), strict=True))
        if self.has_infrequent and isinstance(value, str) and value == INFREQUENT:
            return self.n_local - 1
        try:
            return self._lookup.get(value)
        except TypeError:  # unhashable value: certainly not a category
            return None


class ValueCounts:
    """Distinct values of a field in first-seen order, with how often each occurs, and how
    many values were missing.

    The mergeable statistic a vocabulary is built from: merging the counts of the parts of
    a column, in order, gives the counts (and first-seen order) of the whole column.
    """

    def __init__(self, values: np.ndarray, counts: np.ndarray, n_missing: int = 0):
        self.values, self.counts, self.n_missing = values, counts, int(n_missing)

    @classmethod
    def of(cls, values, weights=None) -> ValueCounts:
        """Counts of ``values``, ``values[i]`` occurring ``weights[i]`` times; NA is counted
        apart, as ``n_missing`` (unweighted)."""
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        uniques = typed(np.asarray(uniques))
        return cls(uniques, _counts(codes, uniques, weights), int((codes < 0).sum()))

    @classmethod
    def merge(cls, pieces: list[ValueCounts]) -> ValueCounts:
        dtypes = {p.values.dtype for p in pieces if len(p.values)}
        # Concatenating ints with strings would turn the ints into strings: mixed (or no)
        # dtypes are joined as objects and typed again after the merge.
        dtype = dtypes.pop() if len(dtypes) == 1 else object
        values = np.concatenate([np.asarray(p.values, dtype=dtype) for p in pieces])
        counts = np.concatenate([np.asarray(p.counts, dtype=np.int64) for p in pieces])
        merged = cls.of(values, counts)
        merged.n_missing = sum(p.n_missing for p in pieces)
        return merged

    def __repr__(self) -> str:
        return (f"ValueCounts({len(self.values)} values, {int(self.counts.sum())} occurrences, "
                f"{self.n_missing} missing)")


class Moments:
    """Count, mean, sum of squared deviations (M2) and minimum of the values of a numeric
    column, and how many of its values were missing (NaN).

    Parts merge with Chan et al.'s pairwise update ("Updating formulae and a pairwise
    algorithm for computing sample variances", 1979), which, unlike summing squares, does
    not lose the variance of a column far from zero to cancellation.
    """

    def __init__(self, n: int, mean: float, m2: float, low: float, n_missing: int = 0):
        self.n, self.mean, self.m2, self.low = int(n), float(mean), float(m2), float(low)
        self.n_missing = int(n_missing)

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        """Moments of the non-NaN values of ``x``; NaN are counted as missing."""
        missing = np.isnan(x)
        n_missing = int(missing.sum())
        if n_missing:
            x = x[~missing]
        if not len(x):
            return cls(0, 0.0, 0.0, np.inf, n_missing)
        mean = x.mean()
        d = x - mean
        # np.std's own arithmetic, so a one-part fit keeps np.std's bits.
        return cls(len(x), mean, np.sum(d * d), x.min(), n_missing)

    @classmethod
    def merge(cls, pieces: list[Moments]) -> Moments:
        n, mean, m2, low = 0, 0.0, 0.0, np.inf
        n_missing = sum(p.n_missing for p in pieces)
        for p in pieces:
            if not p.n:
                continue
            total = n + p.n
            delta = p.mean - mean
            mean += delta * p.n / total
            m2 += p.m2 + delta * delta * n * p.n / total
            n, low = total, min(low, p.low)
        return cls(n, mean, m2, low, n_missing)

    @property
    def std(self) -> float:
        """Population standard deviation (``ddof=0``), as ``np.std``."""
        return float(np.sqrt(self.m2 / self.n)) if self.n else 0.0

    def __repr__(self) -> str:
        return (f"Moments(n={self.n}, mean={self.mean!r}, std={self.std!r}, min={self.low!r}, "
                f"missing={self.n_missing})")


def _counts(codes: np.ndarray, uniques, weights) -> np.ndarray:
    # How often each factorized value occurs: once per code, or its summed weights.
    present = codes >= 0
    if weights is None:
        return np.bincount(codes[present], minlength=len(uniques))
    w = np.asarray(weights)[present]
    return np.bincount(codes[present], weights=w, minlength=len(uniques)).astype(np.int64)


def split_cells(cells: np.ndarray, delimiter: str) -> tuple[np.ndarray, np.ndarray]:
    """Cell of each token and the tokens of delimiter-joined string ``cells``, in order."""
    # One join and one split beat many small splits (~5x); the delimiter count of each cell
    # says which cell each token came from.
    if not len(cells):  # "".join([]).split() would invent one empty token
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=object)
    counts = np.strings.count(cells.astype(np.dtypes.StringDType()), delimiter)
    owner = np.repeat(np.arange(len(cells)), counts + 1)
    return owner, np.array(delimiter.join(cells).split(delimiter), dtype=object)


def quantile_levels(n_bins: int) -> np.ndarray:
    """The 1/n, ..., (n-1)/n quantile levels whose values are the inner edges of n bins."""
    return np.arange(1, n_bins) / n_bins


def edge_str(edge: float) -> str:
    # Shortest repr that round-trips, so distinct edges always give distinct names; "18.0"
    # reads better as "18".
    s = repr(float(edge))
    return s[:-2] if s.endswith(".0") else s


class Bins:
    """Inner edges of a binned numeric field: the stand-in for a vocabulary.

    Bin ``j`` is the left-closed interval ``[edges[j-1], edges[j])``; the first bin is open
    below and the last open above, so every finite value falls in exactly one bin.
    """

    def __init__(self, edges):
        # + 0.0 turns an edge of -0.0 into 0.0 so it is not named "-0".
        self.edges = np.asarray(edges, dtype=np.float64).reshape(-1) + 0.0
        self.n_local = len(self.edges) + 1
        self.has_infrequent = False
        bounds = ["-inf", *map(edge_str, self.edges), "inf"]
        self._labels = [f"({bounds[0]}, {bounds[1]})"] + [
            f"[{lo}, {hi})" for lo, hi in zip(bounds[1:-1], bounds[2:], strict=True)]

    @classmethod
    def fit(cls, x: np.ndarray, spec) -> Bins:
        """Bins of ``x``: ``spec`` is a checked bin count or an array of inner edges."""
        if isinstance(spec, np.ndarray):
            return cls(spec)
        if not len(x):
            return cls([])
        return cls.from_quantiles(np.quantile(x, quantile_levels(spec)), x.min())

    @classmethod
    def from_quantiles(cls, quantiles: np.ndarray, low: float) -> Bins:
        """Bins with edges at ``quantiles`` of data whose minimum is ``low``."""
        edges = np.unique(np.asarray(quantiles, dtype=np.float64))
        # Ties make quantiles coincide (np.unique merges them); an edge at the minimum would
        # leave the first bin, the values below it, empty on the fit data.
        return cls(edges[edges > low])

    def feature_values(self) -> list[str]:
        """Interval label of each bin, e.g. ``"(-inf, 18)"``, ``"[18, 25)"``, ``"[25, inf)"``."""
        return list(self._labels)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Bin of each finite value (side="right": a value equal to an edge opens its bin)."""
        return np.searchsorted(self.edges, x, side="right").astype(np.int64, copy=False)

    def lookup(self, value) -> int | None:
        """Bin of a number, or of an interval label; None for NaN/inf or an unknown label."""
        if isinstance(value, str):
            return self._labels.index(value) if value in self._labels else None
        try:
            x = float(value)
        except (TypeError, ValueError):
            return None
        return int(self.encode(np.array([x]))[0]) if np.isfinite(x) else None
