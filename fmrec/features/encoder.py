"""FeatureEncoder: a pandas DataFrame to the one-hot CSR design matrix an FM expects.

Every output feature belongs to a *field*, the column it came from, and the features of a
field are contiguous, so ``field_slice`` can pick out e.g. the user block of ``V_``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from fmrec._validation import check_choice, check_interval, resolve_dtype
from fmrec.features._columns import categorical_column, column_tokens, numeric_column, occurrences
from fmrec.features._csr_build import Part, assemble, token_block
from fmrec.features._vocabulary import (
    KINDS,
    MAX_UNSEEN_SHOWN,
    NORMALIZATIONS,
    Bins,
    Moments,
    ValueCounts,
    Vocabulary,
    as_columns,
    from_str,
    quantile_levels,
    to_str,
    typed,
    vocab_kind,
)


class FeatureEncoder(BaseEstimator):
    """Encode a DataFrame as a sparse FM design matrix, one field per source column.

    Parameters
    ----------
    categorical : sequence of column names, default=()
        One feature per category seen at fit, with value 1. Any hashable dtype, including
        pandas ``category``. Missing values (NaN/None) raise ``ValueError``.
    numeric : sequence of column names, default=()
        One feature per column holding the value itself, unless the column is binned (see
        ``bins``). NaN/inf raise ``ValueError``.
    multi_valued : sequence of column names, default=()
        Cells are list-likes (list/tuple/set/ndarray) or ``delimiter``-joined strings such as
        ``"Action|Comedy"``. One feature per distinct token, weighted as ``normalize`` says
        (by default a row's weights in the field sum to 1). Empty cells, empty strings and
        NaN/None give no features.
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
        and kept by ``extend``.

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
    """

    def __init__(self, categorical=(), numeric=(), multi_valued=(), normalize="sum",
                 handle_unknown="ignore", min_frequency=None, standardize=False, delimiter="|",
                 dtype=np.float32, bins=None):
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

    # ----------------------------------------------------------------------------- checks
    def _check_params(self) -> list[tuple]:
        check_choice("handle_unknown", self.handle_unknown, {"ignore", "error"})
        check_interval("min_frequency", self.min_frequency, low=1, integer=True,
                       allow_none=True)
        if not isinstance(self.delimiter, str) or not self.delimiter:
            raise ValueError(f"delimiter must be a non-empty string, got {self.delimiter!r}")
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
        quantiles = {c: np.quantile(numeric_column(df, c), quantile_levels(n))
                     for c, n in self._quantile_bins().items() if stats[c].n}
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
        ``Moments`` of a standardized or quantile-binned numeric column, None for any other
        numeric column (checked for NaN/inf all the same). Their size grows with the
        vocabularies, not with the rows.
        """
        specs = self._check_params()
        self._check_frame(df, [c for c, _ in specs])
        bin_specs = self._bin_specs([c for c, kind in specs if kind == "numeric"])
        stats: dict = {}
        for c, kind in specs:
            if kind == "categorical":
                stats[c] = ValueCounts.of(categorical_column(df, c))
            elif kind == "multi_valued":
                units, owner, tokens = column_tokens(df, c, self.delimiter)
                stats[c] = ValueCounts.of(tokens, occurrences(units, owner))
            elif isinstance(bin_specs.get(c), int) or (self.standardize and c not in bin_specs):
                stats[c] = Moments.of(numeric_column(df, c))
            else:
                numeric_column(df, c)
                stats[c] = None
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
        vocabs, means, stds = [], [], []
        for c, kind in specs:
            mean, std, vocab, stat = 0.0, 1.0, None, stats[c]
            if isinstance(bin_specs.get(c), np.ndarray):
                vocab = Bins(bin_specs[c])
            elif c in bin_specs:
                vocab = Bins.from_quantiles(quantiles[c], stat.low) if stat.n else Bins([])
            elif kind != "numeric":
                vocab = Vocabulary.from_counts(stat.values, stat.counts, self.min_frequency)
            elif stat is not None and stat.n:
                mean, std = stat.mean, stat.std
                std = std if std > 0 else 1.0  # a constant column stays finite (all zeros)
            vocabs.append(vocab)
            means.append(mean)
            stds.append(std)
        modes = self._normalizations([c for c, kind in specs if kind == "multi_valued"])
        self._set_state([c for c, _ in specs], [k for _, k in specs], vocabs,
                        np.array(means), np.array(stds),
                        [modes.get(c, "") if k == "multi_valued" else "" for c, k in specs])
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
        (created if the field had none).

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
        vocabs, positions = list(self._vocabs), []
        for i, (c, kind) in enumerate(zip(self.fields_, self._kinds, strict=True)):
            if kind == "numeric":
                continue
            weights = None
            if kind == "categorical":
                values = categorical_column(df, c)
            else:
                units, owner, values = column_tokens(df, c, self.delimiter)
                weights = occurrences(units, owner)
            vocab = self._vocabs[i]
            vocabs[i], n_new, created = vocab.extend(values, self.min_frequency, weights)
            at = int(self._offsets[i]) + vocab.n_local - vocab.has_infrequent
            positions += [at] * (n_new + created)
        self._set_state(self.fields_, self._kinds, vocabs, self._means, self._stds,
                        self._norms)
        return np.array(positions, dtype=np.int64)

    def _set_state(self, fields, kinds, vocabs, means, stds, norms) -> None:
        self.fields_ = list(fields)
        self._kinds = list(kinds)
        self._norms = list(norms)
        # One per field: a Vocabulary, a Bins for a binned numeric field, None otherwise.
        self._vocabs = vocabs
        self._means, self._stds = means, stds
        sizes = [1 if v is None else v.n_local for v in vocabs]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n_features_ = int(self._offsets[-1])
        self.field_of_feature_ = np.repeat(np.arange(len(fields)), sizes)
        names = []
        for c, v in zip(fields, vocabs, strict=True):
            names += [str(c)] if v is None else [f"{c}={value}" for value in v.feature_values()]
        self.feature_names_ = np.array(names, dtype=str)
        self._field_pos = {c: i for i, c in enumerate(fields)}

    # ---------------------------------------------------------------------- transform
    def transform(self, df: pd.DataFrame) -> sp.csr_matrix:
        """Encode ``df`` as a canonical CSR matrix of shape (len(df), n_features_).

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
        parts = [self._encode_field(df, i, dtype) for i in range(len(self.fields_))]
        return assemble(parts, len(df), self.n_features_, self._offsets, dtype)

    def _encode_field(self, df: pd.DataFrame, i: int, dtype) -> Part:
        c, kind, vocab = self.fields_[i], self._kinds[i], self._vocabs[i]
        if isinstance(vocab, Bins):
            return Part(None, None, vocab.encode(numeric_column(df, c)), None)
        if kind == "numeric":
            x = numeric_column(df, c)
            if self._means[i] != 0 or self._stds[i] != 1:  # x - 0 and x / 1 are x exactly
                x = (x - self._means[i]) / self._stds[i]
            return Part(None, None, None, x)
        if kind == "categorical":
            s = categorical_column(df, c)
            local = vocab.encode(s)
            self._check_unknown(c, local, s)
            known = local >= 0
            return Part(None if known.all() else known, None, local, None)
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
            return Part(np.diff(indptr), indptr[:-1], cols, data)
        # Each row takes its cell's entries; a row without a cell (unit -1) reads the empty
        # unit appended last.
        lengths, starts = np.diff(indptr), indptr[:-1]
        lengths, starts = (np.append(a, a.dtype.type(0)) for a in (lengths, starts))
        return Part(lengths[units], starts[units], cols, data)

    def _check_unknown(self, column, local: np.ndarray, values) -> None:
        if self.handle_unknown != "error" or (local >= 0).all():
            return
        unseen = pd.unique(np.asarray(values)[local < 0])
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
        ``"[18, 25)"``. Raises ``KeyError`` when there is no such feature.
        """
        i = self._field(column)
        vocab = self._vocabs[i]
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
        gets its bin's feature, NaN/inf get -1.
        """
        i = self._field(column)
        vocab = self._vocabs[i]
        if vocab is None:
            raise ValueError(f"column {column!r} is numeric: it has one feature, "
                             f"{int(self._offsets[i])}")
        if isinstance(vocab, Bins):
            x = np.asarray(values, dtype=np.float64).reshape(-1)
            finite = np.isfinite(x)
            return np.where(finite, vocab.encode(np.where(finite, x, 0.0)) + self._offsets[i],
                            -1).astype(np.int64)
        if not isinstance(values, pd.Series | np.ndarray):
            # np.asarray would turn [1, "a"] into strings; keep each value's own type.
            values = typed(np.array(list(values) + [None], dtype=object)[:-1])
        local = vocab.encode(values)
        return np.where(local >= 0, local + self._offsets[i], -1).astype(np.int64)

    def field_values(self, column) -> np.ndarray:
        """The value each feature of a categorical or multi-valued field stands for, in order.

        The inverse of ``feature_indices``: ``field_values(c)[feature_indices(c, v) -
        field_slice(c).start]`` gives back ``v`` (``"__infrequent__"`` for a shared feature).
        For a binned field, the interval labels, e.g. ``["(-inf, 18)", "[18, inf)"]``.
        """
        vocab = self._vocabs[self._field(column)]
        if vocab is None:
            raise ValueError(f"column {column!r} is numeric: its feature stands for no value")
        if isinstance(vocab, Bins):
            return np.array(vocab.feature_values(), dtype=str)
        return typed(np.array(vocab.feature_values() + [None], dtype=object)[:-1])

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
        dtype = np.dtype(resolve_dtype(self.dtype)).name
        field_kind = vocab_kind(np.array(self.fields_, dtype=object), "<field names>")
        out = {
            "fields": to_str(np.array(self.fields_, dtype=object), field_kind),
            "fields_kind": np.array(field_kind),
            "kinds": np.array(self._kinds, dtype=str),
            "handle_unknown": np.array(str(self.handle_unknown)),
            "min_frequency": np.array(-1 if self.min_frequency is None
                                      else int(self.min_frequency), dtype=np.int64),
            "standardize": np.array(bool(self.standardize)),
            "delimiter": np.array(self.delimiter),
            "dtype": np.array(dtype),
            "normalize": np.array(self._norms, dtype=str),
            "means": np.asarray(self._means, dtype=np.float64),
            "stds": np.asarray(self._stds, dtype=np.float64),
        }
        for i, vocab in enumerate(self._vocabs):
            if vocab is None:
                continue
            if isinstance(vocab, Bins):
                out[f"bins_{i}"] = vocab.edges.copy()
                continue
            kind = vocab_kind(vocab.categories, self.fields_[i])
            out[f"vocab_{i}"] = to_str(vocab.categories, kind)
            out[f"vocab_kind_{i}"] = np.array(kind)
            out[f"local_{i}"] = vocab.local.copy()
            out[f"n_local_{i}"] = np.array([vocab.n_local, vocab.has_infrequent],
                                           dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays) -> FeatureEncoder:
        """Rebuild an encoder from ``to_arrays`` output (a dict or an ``np.load`` result).

        Quantile bins come back as their fitted edges, so ``bins`` of the result holds edge
        lists and refitting it keeps the same features.
        """
        a = {k: np.asarray(arrays[k]) for k in arrays}
        fields = from_str(a["fields"], str(a["fields_kind"])).tolist()
        kinds = [str(k) for k in a["kinds"]]
        by_kind = {k: [f for f, fk in zip(fields, kinds, strict=True) if fk == k]
                   for k in KINDS}
        mf = int(a["min_frequency"])
        # Files written before ``normalize`` existed hold sum-normalized fields only.
        norms = ([str(x) for x in a["normalize"]] if "normalize" in a
                 else ["sum" if k == "multi_valued" else "" for k in kinds])
        modes = {f: m for f, m, k in zip(fields, norms, kinds, strict=True)
                 if k == "multi_valued"}
        normalize = modes.popitem()[1] if len(set(modes.values())) == 1 else modes or "sum"
        # Files written before ``bins`` existed have no bins_<i> arrays: nothing is binned.
        edges = {i: a[f"bins_{i}"].astype(np.float64) for i in range(len(fields))
                 if f"bins_{i}" in a}
        enc = cls(**by_kind, normalize=normalize, handle_unknown=str(a["handle_unknown"]),
                  min_frequency=None if mf < 0 else mf, standardize=bool(a["standardize"]),
                  delimiter=str(a["delimiter"]), dtype=np.dtype(str(a["dtype"])).type,
                  bins={fields[i]: e.tolist() for i, e in edges.items()} or None)
        vocabs = []
        for i, kind in enumerate(kinds):
            if kind == "numeric":
                vocabs.append(Bins(edges[i]) if i in edges else None)
                continue
            n_local, has_infrequent = a[f"n_local_{i}"].tolist()
            vocabs.append(Vocabulary(from_str(a[f"vocab_{i}"], str(a[f"vocab_kind_{i}"])),
                                      a[f"local_{i}"], n_local, bool(has_infrequent)))
        enc._set_state(fields, kinds, vocabs, a["means"].astype(np.float64),
                       a["stds"].astype(np.float64), norms)
        return enc
