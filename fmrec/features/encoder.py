"""FeatureEncoder: a pandas DataFrame to the one-hot CSR design matrix an FM expects.

Every output feature belongs to a *field*, the column it came from, and the features of a
field are contiguous, so ``field_slice`` can pick out e.g. the user block of ``V_``. A field
whose column had missing values at fit ends with its missing-value feature.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from fmrec._validation import check_choice, check_interval, resolve_dtype
from fmrec.features._arrays import read_state, state_arrays
from fmrec.features._columns import (
    UniqueColumnWarning,
    categorical_column,
    column_tokens,
    identifier_like,
    numeric_column,
    occurrences,
)
from fmrec.features._csr_build import Part, assemble, token_block
from fmrec.features._vocabulary import (
    KINDS,
    MAX_UNSEEN_SHOWN,
    MISSING,
    NORMALIZATIONS,
    Bins,
    Moments,
    ValueCounts,
    Vocabulary,
    as_columns,
    quantile_levels,
    typed,
)


class FeatureEncoder(BaseEstimator):
    """Encode a DataFrame as a sparse FM design matrix, one field per source column.

    Parameters
    ----------
    categorical : sequence of column names, default=()
        One feature per category seen at fit, with value 1. Any hashable dtype, including
        pandas ``category``, nullable (``boolean``, ``Int64``...) and Arrow-backed ones
        (``string[pyarrow]``...). Missing values (see Notes) seen at fit are a category of
        their own, ``"<col>=<missing>"``.
    numeric : sequence of column names, default=()
        One feature per column holding the value itself, unless the column is binned (see
        ``bins``). Any numeric dtype: NumPy, nullable (``Int64``, ``Float64``, ``boolean``)
        or Arrow-backed (``int64[pyarrow]``, ``double[pyarrow]``). Missing values are
        imputed (see Notes); infinity raises ``ValueError``.
    multi_valued : sequence of column names, default=()
        Cells are list-likes (list/tuple/set/ndarray) or ``delimiter``-joined strings such as
        ``"Action|Comedy"``. One feature per distinct token, weighted as ``normalize`` says
        (by default a row's weights in the field sum to 1). Empty cells, empty strings and
        missing cells are the empty set: no features.
    normalize : {"sum", "sqrt", "none"} or dict, default="sum"
        Weight of each token of a multi-valued row with n known tokens: ``"sum"`` gives 1/n
        (the row's weights sum to 1), ``"sqrt"`` gives 1/√n (SVD++-style implicit feedback,
        as libFM and myFM weight a user's set of rated items) and ``"none"`` gives 1. A dict
        maps multi-valued column names to one of these; columns it omits use ``"sum"``.
        Repeated tokens count in n and add up.
    handle_unknown : {"ignore", "error"}, default="ignore"
        What ``transform`` does with a category or token not seen at fit: no feature, or
        ``ValueError`` naming the column and up to five such values.
    min_frequency : int, optional
        Categories/tokens seen fewer times at fit share one ``"<col>=__infrequent__"`` feature.
    standardize : bool, default=False
        Center and scale numeric columns with the fit mean and standard deviation (binned
        columns are not affected).
    delimiter : str, default="|"
        Token separator of string cells in multi-valued columns.
    dtype : {np.float32, np.float64}, default=np.float32
        Data type of the output matrix.
    bins : dict, optional
        Turns numeric columns into one-hot fields of intervals. Maps columns that are also in
        ``numeric`` to either an int n >= 2, for n quantile bins of the fit data (edges at the
        1/n, ..., (n-1)/n quantiles, linearly interpolated), or a strictly increasing sequence
        of finite inner edges such as ``[18, 25, 35]``. Intervals are left-closed, so a value
        equal to an edge goes to the bin that edge opens, and the outer bins are open-ended:
        with those edges the features are ``"age=(-inf, 18)"``, ``"age=[18, 25)"``,
        ``"age=[25, 35)"`` and ``"age=[35, inf)"``. With quantile bins, ties can make edges
        coincide or fall on the minimum; such edges are dropped, so a column may get fewer than
        n bins (a constant column gets one, ``"(-inf, inf)"``). Edges are learnt by ``fit``
        (from the values that are not missing) and kept by ``extend``.
    drop_unique : bool, default=False
        Leave out categorical columns that identify rows rather than describe them (a
        title, free text): those with at least 20 non-missing values of which at least 95%
        are distinct. One feature per row would only repeat what a row's id says, and split
        its weight. Each such column gets a ``UniqueColumnWarning`` naming it and is listed
        in ``dropped_columns_``; ``transform`` does not read it. Numeric and multi-valued
        columns are never dropped. The :class:`~fmrec.Recommender` sets it.

    Attributes
    ----------
    fields_ : list
        Column names in field order: categorical, then numeric, then multi-valued.
    feature_names_ : ndarray of str
        Readable feature names such as ``"user_id=42"``, ``"genre=Comedy"``, ``"age"`` or,
        for a binned column, ``"age=[18, 25)"``.
    field_of_feature_ : ndarray of int
        Index into ``fields_`` of each feature.
    n_features_ : int
        Width of the output matrix.
    dropped_columns_ : list
        Categorical columns left out by ``drop_unique``.

    Notes
    -----
    Missing values are None, NaN, ``pd.NA`` and ``NaT`` (a NaN in a numeric column is
    missing; infinity is an error). What a missing value becomes depends on the column and
    on whether the fit data had missing values in it:

    - categorical: at fit, the category ``"<col>=<missing>"`` (the last feature of its
      field); at transform, that feature, or, when the fit data had none, what an unseen
      category gets (no feature, or ``ValueError`` with ``handle_unknown="error"``);
    - numeric: the fit mean of the column (0 once standardized), plus, when the fit data
      had missing values, the indicator feature ``"<col>=<missing>"`` (1 on imputed rows)
      so the model can learn what missingness itself says; with no indicator, a missing
      value at transform is just the mean;
    - binned numeric: the bin ``"<col>=<missing>"`` when the fit data had missing values,
      else no feature;
    - multi-valued: the empty set, no feature.

    The mean is of the non-missing fit values, and missing values take no part in the
    standardization statistics or the quantile bins.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"user": [1, 2, 1], "genre": ["A|B", "B", ""], "age": [20., 30., 20.]})
    >>> enc = FeatureEncoder(categorical=["user"], numeric=["age"], multi_valued=["genre"])
    >>> X = enc.fit_transform(df)
    >>> enc.feature_names_.tolist()
    ['user=1', 'user=2', 'age', 'genre=A', 'genre=B']
    >>> X.toarray()[0].tolist()
    [1.0, 0.0, 20.0, 0.5, 0.5]
    >>> binned = FeatureEncoder(numeric=["age"], bins={"age": [25]}).fit(df)
    >>> binned.feature_names_.tolist()
    ['age=(-inf, 25)', 'age=[25, inf)']
    >>> binned.transform(pd.DataFrame({"age": [24.9, 25.0]})).toarray().tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    >>> holes = pd.DataFrame({"city": ["Oslo", None, "Rome"], "age": [20.0, None, 40.0]})
    >>> enc = FeatureEncoder(categorical=["city"], numeric=["age"]).fit(holes)
    >>> enc.feature_names_.tolist()
    ['city=Oslo', 'city=Rome', 'city=<missing>', 'age', 'age=<missing>']
    >>> enc.transform(holes).toarray()[1].tolist()  # age imputed with its mean, 30
    [0.0, 0.0, 1.0, 30.0, 1.0]
    """

    def __init__(self, categorical=(), numeric=(), multi_valued=(), normalize="sum",
                 handle_unknown="ignore", min_frequency=None, standardize=False, delimiter="|",
                 dtype=np.float32, bins=None, drop_unique=False):
        self.categorical = categorical
        self.numeric = numeric
        self.multi_valued = multi_valued
        self.normalize = normalize
        self.handle_unknown = handle_unknown
        self.min_frequency = min_frequency
        self.standardize = standardize
        self.delimiter = delimiter
        self.dtype = dtype
        self.bins = bins
        self.drop_unique = drop_unique

    # ----------------------------------------------------------------------------- checks
    def _check_params(self) -> list[tuple]:
        check_choice("handle_unknown", self.handle_unknown, {"ignore", "error"})
        check_interval("min_frequency", self.min_frequency, low=1, integer=True,
                       allow_none=True)
        if not isinstance(self.delimiter, str) or not self.delimiter:
            raise ValueError(f"delimiter must be a non-empty string, got {self.delimiter!r}")
        if not isinstance(self.drop_unique, bool | np.bool_):
            raise TypeError(f"drop_unique must be True or False, got {self.drop_unique!r}")
        resolve_dtype(self.dtype)
        specs = [(c, kind) for kind in KINDS
                 for c in as_columns(getattr(self, kind), kind)]
        seen: dict = {}
        for c, kind in specs:
            if c in seen:
                raise ValueError(f"column {c!r} is listed twice (as {seen[c]} and as {kind})")
            seen[c] = kind
        if not specs:
            raise ValueError("no columns to encode: categorical, numeric and multi_valued "
                             "are all empty")
        self._normalizations([c for c, kind in specs if kind == "multi_valued"])
        self._bin_specs([c for c, kind in specs if kind == "numeric"])
        return specs

    def _bin_specs(self, numeric: list) -> dict:
        """The checked ``bins`` entry of every binned column: an int, or an array of edges."""
        if self.bins is None:
            return {}
        if not isinstance(self.bins, dict):
            raise ValueError(f"bins must be None or a dict mapping numeric column names to a "
                             f"bin count or a sequence of edges, got {self.bins!r}")
        extra = [c for c in self.bins if c not in numeric]
        if extra:
            raise ValueError(f"bins names column(s) {extra} that are not numeric columns "
                             f"{numeric}")
        specs = {}
        for c, spec in self.bins.items():
            if isinstance(spec, int | np.integer) and not isinstance(spec, bool):
                if spec >= 2:
                    specs[c] = int(spec)
                    continue
            elif not isinstance(spec, str | bool):
                try:
                    edges = np.asarray(spec, dtype=np.float64)
                except (TypeError, ValueError):
                    edges = np.array([np.nan])
                # No edges is allowed: the one bin a constant column gets from quantiles.
                if edges.ndim == 1 and np.isfinite(edges).all() and (np.diff(edges) > 0).all():
                    specs[c] = edges
                    continue
            raise ValueError(f"bins of column {c!r} must be an int >= 2 or a strictly "
                             f"increasing sequence of finite edges, got {spec!r}")
        return specs

    def _normalizations(self, multi_valued: list) -> dict:
        """The checked ``normalize`` mode of every multi-valued column."""
        norm = self.normalize
        if isinstance(norm, dict):
            extra = [c for c in norm if c not in multi_valued]
            if extra:
                raise ValueError(f"normalize names column(s) {extra} that are not multi_valued "
                                 f"columns {multi_valued}")
            modes = {c: norm.get(c, "sum") for c in multi_valued}
        else:
            modes = dict.fromkeys(multi_valued, norm)
        for c, mode in modes.items():
            if not isinstance(mode, str) or mode not in NORMALIZATIONS:
                raise ValueError(f"normalize must be one of {list(NORMALIZATIONS)} or a dict of "
                                 f"them, got {mode!r} for column {c!r}")
        return modes

    @staticmethod
    def _check_frame(df, columns: list) -> None:
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"expected a pandas DataFrame, got {type(df).__name__}")
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ValueError(f"DataFrame is missing column(s) {missing}; "
                             f"it has {list(df.columns)}")

    def _check_fitted(self) -> None:
        if not hasattr(self, "fields_"):
            raise ValueError("this FeatureEncoder is not fitted yet: call fit(df) first")

    # ---------------------------------------------------------------------------- fit
    def fit(self, df: pd.DataFrame, y=None) -> FeatureEncoder:
        """Learn vocabularies (and numeric mean/std, bin edges) from ``df``.

        Parameters
        ----------
        df : pandas.DataFrame
            Must hold every configured column; other columns are ignored.
        y : ignored

        Returns
        -------
        self : FeatureEncoder
        """
        stats = self._statistics(df)
        quantiles = {}
        for c, n in self._quantile_bins().items():
            if stats[c].n:
                x, missing = numeric_column(df, c)
                quantiles[c] = np.quantile(x[~missing], quantile_levels(n))
        return self._fit_statistics(stats, quantiles)

    # Fitting in two steps lets the statistics of the parts of a frame (e.g. the partitions
    # of a Dask DataFrame) be computed where they live and merged: only they travel.
    def _quantile_bins(self) -> dict:
        """Bin count of each column binned at quantiles of the fit data."""
        specs = self._check_params()
        return {c: spec for c, spec in self._bin_specs(
            [c for c, kind in specs if kind == "numeric"]).items() if isinstance(spec, int)}

    def _statistics(self, df: pd.DataFrame) -> dict:
        """Mergeable statistics of ``df``, one entry per configured column, in field order.

        ``ValueCounts`` of the categories or tokens of a categorical or multi-valued column,
        ``Moments`` of a numeric column (its mean imputes missing values). Both count the
        missing values. Their size grows with the vocabularies, not with the rows.
        """
        specs = self._check_params()
        self._check_frame(df, [c for c, _ in specs])
        stats: dict = {}
        for c, kind in specs:
            if kind == "categorical":
                stats[c] = ValueCounts.of(categorical_column(df, c)[0])
            elif kind == "multi_valued":
                units, owner, tokens = column_tokens(df, c, self.delimiter)
                stats[c] = ValueCounts.of(tokens, occurrences(units, owner))
            else:
                stats[c] = Moments.of(numeric_column(df, c)[0])
        return stats

    @staticmethod
    def _merge_statistics(pieces: list[dict]) -> dict:
        """The statistics of the concatenation of the frames ``pieces`` came from, in order.

        Associative, so pieces can be merged in any grouping (a reduction tree) as long as
        their order is kept: it decides the first-seen order of unsortable categories.
        """
        if not pieces:
            raise ValueError("no statistics to merge")
        merged = {}
        for c, first in pieces[0].items():
            parts = [p[c] for p in pieces]
            merged[c] = None if first is None else type(first).merge(parts)
        return merged

    def _fit_statistics(self, stats: dict, quantiles: dict | None = None) -> FeatureEncoder:
        """Set the fitted state from (merged) ``_statistics``.

        ``quantiles`` maps each quantile-binned column with data to the values of that
        column at ``quantile_levels(n)``: statistics of parts cannot give exact quantiles.
        """
        specs = self._check_params()
        missing = [c for c, _ in specs if c not in stats]
        if missing:
            raise ValueError(f"statistics are missing column(s) {missing}")
        bin_specs = self._bin_specs([c for c, kind in specs if kind == "numeric"])
        quantiles = quantiles or {}
        modes = self._normalizations([c for c, kind in specs if kind == "multi_valued"])
        kept, dropped, vocabs, means, stds, fills, missing = [], [], [], [], [], [], []
        for c, kind in specs:
            mean, std, fill, vocab, stat = 0.0, 1.0, 0.0, None, stats[c]
            if kind == "categorical" and self.drop_unique and identifier_like(stat):
                dropped.append(c)
                warnings.warn(
                    f"column {c!r} has {len(stat.values)} distinct values among its "
                    f"{int(stat.counts.sum())} non-missing ones: it identifies rows (like a "
                    "title or an id) rather than describing them, so it is not encoded; "
                    "leave it out of the table to silence this warning",
                    UniqueColumnWarning, stacklevel=3)
                continue
            if isinstance(bin_specs.get(c), np.ndarray):
                vocab = Bins(bin_specs[c])
            elif c in bin_specs:
                vocab = Bins.from_quantiles(quantiles[c], stat.low) if stat.n else Bins([])
            elif kind != "numeric":
                vocab = Vocabulary.from_counts(stat.values, stat.counts, self.min_frequency)
            elif stat.n:
                fill = stat.mean
                if self.standardize:
                    mean, std = stat.mean, stat.std
                    std = std if std > 0 else 1.0  # a constant column stays finite (all zeros)
            kept.append((c, kind))
            vocabs.append(vocab)
            means.append(mean)
            stds.append(std)
            fills.append(fill)
            # Missing cells of a multi-valued column are empty sets: they need no feature.
            missing.append(kind != "multi_valued" and stat.n_missing > 0)
        self._set_state([c for c, _ in kept], [k for _, k in kept], vocabs,
                        np.array(means, dtype=np.float64), np.array(stds, dtype=np.float64),
                        [modes.get(c, "") if k == "multi_valued" else "" for c, k in kept],
                        missing, np.array(fills, dtype=np.float64), dropped)
        return self

    def extend(self, df: pd.DataFrame) -> np.ndarray:
        """Add the categories and tokens of ``df`` not seen so far, keeping every feature.

        Use it when the data grows (new users, items, categories) and a fitted model should
        grow with it: a field's new features go after its existing ones (its shared
        infrequent feature, if any, stays last), and the returned positions tell
        ``FMRegressor.grow`` / ``FMClassifier.grow`` where to insert their parameters.
        Numeric means, standard deviations and bin edges are not updated (binned fields
        gain no features). With ``min_frequency``, a new value gets its own feature when it
        occurs at least that often in ``df``, and the rarer ones share the infrequent feature
        (created if the field had none). Missing values in a categorical field that had
        none at fit create its missing-value feature (numeric fields gain no indicator).

        Parameters
        ----------
        df : pandas.DataFrame
            Must hold every fitted column.

        Returns
        -------
        positions : ndarray of int64
            One entry per new feature: its insertion point in the old feature numbering
            (``numpy.insert`` semantics), in order.

        Examples
        --------
        >>> import pandas as pd
        >>> enc = FeatureEncoder(categorical=["user", "item"]).fit(
        ...     pd.DataFrame({"user": [1, 2], "item": ["a", "b"]}))
        >>> enc.extend(pd.DataFrame({"user": [3, 1], "item": ["c", "a"]})).tolist()
        [2, 4]
        >>> enc.feature_names_.tolist()
        ['user=1', 'user=2', 'user=3', 'item=a', 'item=b', 'item=c']
        """
        self._check_fitted()
        self._check_frame(df, self.fields_)
        state = self._state()
        vocabs, missing, positions = state["vocabs"], state["missing"], []
        for i, (c, kind) in enumerate(zip(self.fields_, self._kinds, strict=True)):
            if kind == "numeric":
                continue
            weights, na = None, None
            if kind == "categorical":
                values, na = categorical_column(df, c)
            else:
                units, owner, values = column_tokens(df, c, self.delimiter)
                weights = occurrences(units, owner)
            vocab = self._vocabs[i]
            try:
                vocabs[i], n_new, created = vocab.extend(values, self.min_frequency, weights)
            except ValueError as exc:
                raise ValueError(f"column {c!r}: {exc}") from None
            at = int(self._offsets[i]) + vocab.n_local - vocab.has_infrequent
            positions += [at] * (n_new + created)
            if na is not None and na.any() and not missing[i]:
                missing[i] = True  # after every other feature of the field
                positions.append(int(self._offsets[i]) + vocab.n_local)
        self._set_state(**state)
        return np.array(positions, dtype=np.int64)

    def _state(self) -> dict:
        """The fitted state, as ``_set_state`` takes it (lists copied)."""
        return {"fields": list(self.fields_), "kinds": list(self._kinds),
                "vocabs": list(self._vocabs), "means": self._means, "stds": self._stds,
                "norms": list(self._norms), "missing": list(self._missing),
                "fills": self._fills, "dropped": list(self.dropped_columns_)}

    def _set_state(self, fields, kinds, vocabs, means, stds, norms, missing=None, fills=None,
                   dropped=()) -> None:
        self.fields_ = list(fields)
        self._kinds = list(kinds)
        self._norms = list(norms)
        # One per field: a Vocabulary, a Bins for a binned numeric field, None otherwise.
        self._vocabs = vocabs
        self._means, self._stds = means, stds
        # Whether each field ends with a missing-value feature, and the value that imputes a
        # missing number (raw units; 0 for non-numeric fields).
        self._missing = [False] * len(fields) if missing is None else [bool(m) for m in missing]
        self._fills = (np.zeros(len(fields)) if fills is None
                       else np.asarray(fills, dtype=np.float64))
        self.dropped_columns_ = list(dropped)
        sizes = [(1 if v is None else v.n_local) + m
                 for v, m in zip(vocabs, self._missing, strict=True)]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n_features_ = int(self._offsets[-1])
        self.field_of_feature_ = np.repeat(np.arange(len(fields)), sizes)
        names = []
        for c, v, m in zip(fields, vocabs, self._missing, strict=True):
            names += [str(c)] if v is None else [f"{c}={value}" for value in v.feature_values()]
            names += [f"{c}={MISSING}"] if m else []
        self.feature_names_ = np.array(names, dtype=str)
        self._field_pos = {c: i for i, c in enumerate(fields)}

    # ---------------------------------------------------------------------- transform
    def transform(self, df: pd.DataFrame) -> sp.csr_matrix:
        """Encode ``df`` as a canonical CSR matrix of shape ``(len(df), n_features_)``.

        Parameters
        ----------
        df : pandas.DataFrame
            Must hold every fitted column, in any order.

        Returns
        -------
        X : scipy.sparse.csr_matrix
            ``dtype`` data, int32 indices when they fit, sorted indices, no duplicates.
        """
        self._check_fitted()
        self._check_frame(df, self.fields_)
        dtype = resolve_dtype(self.dtype)
        # Every field is encoded (and checked, in field order) before the matrix is allocated;
        # between the two only compact per-row codes are kept, never a per-field CSR.
        parts, starts = [], []
        for i in range(len(self.fields_)):
            for local, part in self._encode_field(df, i, dtype):
                parts.append(part)
                starts.append(int(self._offsets[i]) + local)
        return assemble(parts, starts, len(df), self.n_features_, dtype)

    def _encode_field(self, df: pd.DataFrame, i: int, dtype) -> list[tuple[int, Part]]:
        """The parts of field ``i``, each with the local feature it starts at."""
        c, kind, vocab = self.fields_[i], self._kinds[i], self._vocabs[i]
        if kind == "numeric":
            x, na = numeric_column(df, c)
            if isinstance(vocab, Bins):
                return [(0, self._one_hot(i, vocab.encode(x), na))]
            if na.any():  # np.where copies: x may be a view of the caller's frame
                x = np.where(na, self._fills[i], x)
            if self._means[i] != 0 or self._stds[i] != 1:  # x - 0 and x / 1 are x exactly
                x = (x - self._means[i]) / self._stds[i]
            parts = [(0, Part(None, None, None, x))]
            if self._missing[i] and na.any():  # the indicator, 1 where x was imputed
                parts.append((1, Part(na, None, None, None)))
            return parts
        if kind == "categorical":
            s, na = categorical_column(df, c)
            local = vocab.encode(s)
            part = self._one_hot(i, local, na)
            self._check_unknown(c, part.cols, s, na)
            return [(0, part)]
        units, owner, tokens = column_tokens(df, c, self.delimiter)
        local = vocab.encode(tokens)
        self._check_unknown(c, local, tokens)
        del tokens  # one Python string per token: the largest temporary when cells are split
        known = local >= 0
        if not known.all():
            owner, local = owner[known], local[known]
        n_units = len(df) if units is None else int(units.max(initial=-1)) + 1
        indptr, cols, data = token_block(owner, local, n_units,
                                               vocab.n_local, dtype, self._norms[i])
        if units is None:
            return [(0, Part(np.diff(indptr), indptr[:-1], cols, data))]
        # Each row takes its cell's entries; a row without a cell (unit -1) reads the empty
        # unit appended last.
        lengths, starts = np.diff(indptr), indptr[:-1]
        lengths, starts = (np.append(a, a.dtype.type(0)) for a in (lengths, starts))
        return [(0, Part(lengths[units], starts[units], cols, data))]

    def _one_hot(self, i: int, local: np.ndarray, na: np.ndarray) -> Part:
        """The part of a one-hot field from the local feature of each row (-1: none), whose
        missing rows go to the field's missing-value feature if it has one."""
        if na.any():
            local[na] = self._vocabs[i].n_local if self._missing[i] else -1
        known = local >= 0
        return Part(None if known.all() else known, None, local, None)

    def _check_unknown(self, column, local: np.ndarray, values, na=None) -> None:
        if self.handle_unknown != "error" or (local >= 0).all():
            return
        values = np.asarray(values, dtype=object)
        if na is not None and na.any():
            values = np.where(na, MISSING, values)  # one name for None, NaN, NA and NaT
        unseen = pd.unique(values[local < 0])
        shown = ", ".join(repr(v) for v in unseen[:MAX_UNSEEN_SHOWN])
        more = f" and {len(unseen) - MAX_UNSEEN_SHOWN} more" if len(unseen) > 5 else ""
        raise ValueError(f"column {column!r} has {len(unseen)} value(s) not seen at fit: "
                         f"{shown}{more} (use handle_unknown='ignore' to skip them)")

    def fit_transform(self, df: pd.DataFrame, y=None) -> sp.csr_matrix:
        """Fit on ``df`` and return its encoding; same as ``fit(df).transform(df)``."""
        return self.fit(df).transform(df)

    # -------------------------------------------------------------------------- lookup
    def _field(self, column) -> int:
        self._check_fitted()
        try:
            return self._field_pos[column]
        except (KeyError, TypeError):
            raise KeyError(f"column {column!r} is not a field of this encoder; "
                           f"fields are {self.fields_}") from None

    def field_slice(self, column) -> slice:
        """Slice of the feature indices of ``column`` (a field's features are contiguous)."""
        i = self._field(column)
        return slice(int(self._offsets[i]), int(self._offsets[i + 1]))

    def feature_index(self, column, value=None) -> int:
        """Index of the feature of ``value`` in ``column`` (unused for unbinned numeric).

        Infrequent values, and ``"__infrequent__"`` itself, map to the shared feature. For a
        binned column, ``value`` is a number (its bin) or an interval label such as
        ``"[18, 25)"``. A missing value (None, NaN, NA), or ``"<missing>"`` itself, maps to
        the field's missing-value feature; for an unbinned numeric column, ``"<missing>"``
        gives its missing-value indicator. Raises ``KeyError`` when there is no such feature.
        """
        i = self._field(column)
        vocab = self._vocabs[i]
        # None is "no value" for an unbinned numeric column: only the label names its
        # indicator. A category that happens to be spelt "<missing>" keeps its own feature.
        label = isinstance(value, str) and value == MISSING
        missing = label or (vocab is not None and _is_missing(value))
        if self._missing[i] and missing and (vocab is None or vocab.lookup(value) is None):
            return int(self._offsets[i + 1]) - 1  # the field's last feature
        if vocab is None:
            return int(self._offsets[i])
        local = vocab.lookup(value)
        if local is None and isinstance(vocab, Bins):
            raise KeyError(f"value {value!r} of binned column {column!r} is neither a finite "
                           f"number nor one of its interval labels {vocab.feature_values()}")
        if local is None:
            raise KeyError(f"value {value!r} of column {column!r} was not seen at fit "
                           f"(the field has {vocab.n_local} feature(s))")
        return int(self._offsets[i] + local)

    def feature_indices(self, column, values) -> np.ndarray:
        """Vectorized ``feature_index`` of a categorical, multi-valued or binned column.

        Returns an int64 array with the feature index of each value, -1 where the value was
        not seen at fit (no ``KeyError``). For a binned column, ``values`` are numbers: each
        gets its bin's feature, infinity gets -1. Missing values get the field's
        missing-value feature, -1 if it has none.
        """
        i = self._field(column)
        vocab = self._vocabs[i]
        if vocab is None:
            raise ValueError(f"column {column!r} is numeric: its value has one feature, "
                             f"{int(self._offsets[i])}")
        if isinstance(vocab, Bins):
            x = pd.Series(np.asarray(values, dtype=object).reshape(-1), dtype=object
                          ).to_numpy(dtype=np.float64, na_value=np.nan)
            finite = np.isfinite(x)
            local = np.where(finite, vocab.encode(np.where(finite, x, 0.0)), -1)
            na = np.isnan(x)
        else:
            if not isinstance(values, pd.Series | np.ndarray):
                # np.asarray would turn [1, "a"] into strings; keep each value's own type.
                values = typed(np.array(list(values) + [None], dtype=object)[:-1])
            local = vocab.encode(values).astype(np.int64)
            na = np.asarray(pd.isna(values), dtype=bool).reshape(-1)
        if self._missing[i]:
            local[na] = vocab.n_local
        return np.where(local >= 0, local + self._offsets[i], -1).astype(np.int64)

    def field_values(self, column) -> np.ndarray:
        """The value each feature of a categorical or multi-valued field stands for, in order.

        The inverse of ``feature_indices``: ``field_values(c)[feature_indices(c, v) -
        field_slice(c).start]`` gives back ``v`` (``"__infrequent__"`` for a shared feature,
        None for the missing-value feature). For a binned field, the interval labels, e.g.
        ``["(-inf, 18)", "[18, inf)"]``, and ``"<missing>"`` for its missing-value bin.
        """
        i = self._field(column)
        vocab = self._vocabs[i]
        if vocab is None:
            raise ValueError(f"column {column!r} is numeric: its feature stands for no value")
        if isinstance(vocab, Bins):
            return np.array(vocab.feature_values() + [MISSING] * self._missing[i], dtype=str)
        values = vocab.feature_values() + [None] * self._missing[i]
        return typed(np.array(values + [None], dtype=object)[:-1])

    def feature_name(self, index: int) -> str:
        """Readable name of feature ``index``, e.g. ``"user_id=42"``."""
        self._check_fitted()
        if not -self.n_features_ <= index < self.n_features_:
            raise IndexError(f"index must be in [0, {self.n_features_}), got {index!r}")
        return str(self.feature_names_[index])

    # --------------------------------------------------------------------- persistence
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted encoder as plain numeric/str arrays (``np.savez`` without pickle).

        Returns
        -------
        arrays : dict of str to ndarray
            Restore with ``FeatureEncoder.from_arrays``.
        """
        self._check_fitted()
        return state_arrays(self.get_params(), self._state())

    @classmethod
    def from_arrays(cls, arrays) -> FeatureEncoder:
        """Rebuild an encoder from ``to_arrays`` output (a dict or an ``np.load`` result).

        Quantile bins come back as their fitted edges, so ``bins`` of the result holds edge
        lists and refitting it keeps the same features; columns left out by ``drop_unique``
        are listed in ``categorical`` again, as they were configured.
        """
        params, state = read_state(arrays)
        enc = cls(**params)
        enc._set_state(**state)
        return enc


def _is_missing(value) -> bool:
    """Whether a single value is missing (None, NaN, pd.NA, NaT); False for containers."""
    try:
        return bool(pd.api.types.is_scalar(value) and pd.isna(value))
    except (TypeError, ValueError):
        return False
