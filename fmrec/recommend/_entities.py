"""Users or items as the Recommender sees them: id, side-feature and implicit-feature encoders
and the block rows built from them; plus the frame checks and array helpers they share."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmrec._validation import check_frame
from fmrec.features._vocabulary import integers
from fmrec.features.encoder import FeatureEncoder

# Multi-valued side columns hold list-likes; this separator never splits a real token.
SEP = "\x1f"
SHOWN = 5
# Side-table categories and tokens held by fewer entities share the "__infrequent__" feature.
SIDE_MIN_FREQUENCY = 2


def shown(values) -> str:
    """Up to five values for a message, as plain Python values (7, not np.int64(7))."""
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    more = f" and {len(values) - SHOWN} more" if len(values) > SHOWN else ""
    return ", ".join(repr(v) for v in values[:SHOWN]) + more


def check_keys(df: pd.DataFrame, column, what: str) -> None:
    na = df[column].isna().to_numpy()
    if na.any():
        raise ValueError(f"{what} column {column!r} has {int(na.sum())} missing value(s), "
                         f"first at row {int(np.flatnonzero(na)[0])}")


def column_kinds(frame: pd.DataFrame, columns) -> dict:
    """FeatureEncoder arguments for ``columns``: numbers are numeric, cells holding
    list-likes are multi-valued, anything else (strings, bools, categories) categorical.

    Nullable and Arrow-backed dtypes go where their NumPy twins do (``Int64``, ``Float64``,
    ``int64[pyarrow]`` are numeric; ``boolean``, ``string[pyarrow]`` categorical).
    """
    kinds = {"categorical": [], "numeric": [], "multi_valued": []}
    for c in columns:
        s = frame[c]
        if isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(s):
            kinds["categorical"].append(c)
        elif pd.api.types.is_numeric_dtype(s):
            kinds["numeric"].append(c)
        elif s.map(lambda v: isinstance(v, list | tuple | set | np.ndarray)).any():
            kinds["multi_valued"].append(c)
        else:
            kinds["categorical"].append(c)
    return kinds


def encoder_for(frame: pd.DataFrame, columns, min_frequency: int | None = None
                ) -> FeatureEncoder:
    # Standardized numbers keep ALS/SGD steps and penalties on the scale of the one-hots;
    # a column whose every row has its own category (a title) would only echo the ids.
    return FeatureEncoder(**column_kinds(frame, columns), standardize=True, delimiter=SEP,
                          drop_unique=True, min_frequency=min_frequency).fit(frame)


def rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def list_column(lists) -> pd.Series:
    return pd.Series(list(lists) + [None], dtype=object)[:-1]


class Entities:
    """Users or items: block columns ``[id | side features | implicit items]``.

    ``ids`` encodes the entities seen in training (its feature index is the entity's
    *training index*, also the row/column of the seen matrix); ``keys`` encodes the entities
    of the side-feature table, whose row j of ``side`` belongs to key feature j.
    """

    def __init__(self, col, ids, keys=None, side_enc=None, side=None, implicit=None,
                 implicit_weight=1.0):
        self.col, self.ids, self.keys = col, ids, keys
        self.side_enc, self.side, self.implicit = side_enc, side, implicit
        self.implicit_weight = float(implicit_weight)

    @classmethod
    def fit(cls, col, train_keys, features, what: str, implicit_items=None,
            implicit_weight=1.0) -> Entities:
        ids = FeatureEncoder(categorical=[col]).fit(pd.DataFrame({col: train_keys}))
        keys = side_enc = side = implicit = None
        if features is not None:
            check_frame(features, [col], what)
            if len(features) == 0:
                raise ValueError(f"{what} is empty; pass None for no side features")
            check_keys(features, col, what)
            dup = features[col].duplicated().to_numpy()
            if dup.any():
                raise ValueError(f"{what} has several rows for {col}="
                                 f"{shown(pd.unique(features[col][dup]))}")
            if not pd.Index(features[col]).isin(train_keys).any():
                warnings.warn(f"none of the {col} values of {what} occurs in the interactions "
                              "(do the id types match?)", UserWarning, stacklevel=4)
            keys = FeatureEncoder(categorical=[col]).fit(features[[col]])
            order = np.argsort(keys.feature_indices(col, features[col]))
            side_cols = [c for c in features.columns if c != col]
            if side_cols:
                # A category held by one entity only echoes its id and splits its penalty
                # (zip codes: 795 for 943 users): such categories share one feature.
                side_enc = encoder_for(features, side_cols, min_frequency=SIDE_MIN_FREQUENCY)
                side = side_enc.transform(features)[order]
            else:
                side = sp.csr_matrix((len(features), 0), dtype=np.float32)
        if implicit_items is not None:
            implicit = FeatureEncoder(multi_valued=[f"implicit_{implicit_items.name}"],
                                      normalize="sqrt", delimiter=SEP)
            implicit.fit(pd.DataFrame({implicit.multi_valued[0]:
                                       list_column([implicit_items.to_numpy()])}))
        return cls(col, ids, keys, side_enc, side, implicit, implicit_weight)

    @property
    def widths(self) -> tuple[int, int, int]:
        return (self.ids.n_features_, 0 if self.side is None else self.side.shape[1],
                0 if self.implicit is None else self.implicit.n_features_)

    def index(self, keys) -> np.ndarray:
        """Training index of each key, -1 if it was not in training."""
        return self.ids.feature_indices(self.col, keys)

    def side_index(self, keys) -> np.ndarray:
        if self.keys is None:
            return np.full(len(keys), -1, dtype=np.int64)
        return self.keys.feature_indices(self.col, keys)

    def all_keys(self) -> np.ndarray:
        """Training entities, then entities known only from the side table."""
        train = self.ids.field_values(self.col)
        if self.keys is None:
            return train
        side = self.keys.field_values(self.col)
        side = side[self.index(side) < 0]
        return as_keys(np.concatenate([train.astype(object), side.astype(object)]))

    def rows(self, keys, implicit_lists=None) -> sp.csr_matrix:
        """Block rows of ``keys``: unknown ids and absent side rows give no features."""
        keys = as_keys(keys)
        parts = [self.ids.transform(pd.DataFrame({self.col: keys}))]
        if self.side is not None:
            at = self.side_index(keys)
            picked = self.side[np.maximum(at, 0)]
            parts.append(sp.diags((at >= 0).astype(picked.dtype)) @ picked)
        if self.implicit is not None:
            lists = implicit_lists if implicit_lists is not None else [()] * len(keys)
            parts.append(self.implicit_weight * self.implicit.transform(
                pd.DataFrame({self.implicit.multi_valued[0]: list_column(lists)})))
        return sp.hstack(parts, format="csr", dtype=np.float64)

    def names(self, prefix: str) -> list[str]:
        encs = [self.ids, self.side_enc, self.implicit]
        out = [f"{prefix}:{n}" for enc in encs if enc is not None for n in enc.feature_names_]
        return out

    def to_arrays(self, prefix: str) -> dict:
        out = {}
        for name in ("ids", "keys", "side_enc", "implicit"):
            enc = getattr(self, name)
            if enc is not None:
                out.update({f"{prefix}.{name}.{k}": v for k, v in enc.to_arrays().items()})
        if self.side is not None:
            out.update(csr_arrays(self.side, f"{prefix}.side"))
        return out

    @classmethod
    def from_arrays(cls, col, arrays: dict, prefix: str, implicit_weight=1.0) -> Entities:
        encs = {}
        for name in ("ids", "keys", "side_enc", "implicit"):
            head = f"{prefix}.{name}."
            part = {k[len(head):]: v for k, v in arrays.items() if k.startswith(head)}
            encs[name] = FeatureEncoder.from_arrays(part) if part else None
        side = (csr_from_arrays(arrays, f"{prefix}.side") if f"{prefix}.side.indptr" in arrays
                else None)
        return cls(col, encs["ids"], encs["keys"], encs["side_enc"], side, encs["implicit"],
                   implicit_weight)


def as_keys(values) -> np.ndarray:
    """A 1-D array of entity ids that keeps each id's own type (ints stay ints)."""
    if isinstance(values, pd.Series | pd.Index):
        values = values.to_numpy()
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values.ravel()
    arr = np.array(list(values) + [None], dtype=object)[:-1]
    kind = pd.api.types.infer_dtype(arr, skipna=False)
    return integers(arr) if kind == "integer" else arr


def csr_arrays(X: sp.csr_matrix, prefix: str) -> dict:
    X = sp.csr_matrix(X)
    return {f"{prefix}.data": X.data, f"{prefix}.indices": X.indices,
            f"{prefix}.indptr": X.indptr, f"{prefix}.shape": np.array(X.shape, np.int64)}


def csr_from_arrays(arrays: dict, prefix: str) -> sp.csr_matrix:
    return sp.csr_matrix((arrays[f"{prefix}.data"], arrays[f"{prefix}.indices"],
                          arrays[f"{prefix}.indptr"]),
                         shape=tuple(int(x) for x in arrays[f"{prefix}.shape"]))
