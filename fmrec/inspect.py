"""Look inside a fitted FM: which features have factor vectors that point the same way.

Two features whose vectors ``v_i``, ``v_j`` have a large inner product raise the prediction
when they occur together; the cosine of the angle between them says whether they act alike,
whatever their norms (the norm grows with how often and how strongly a feature is used).
Everything here works on the rows of ``V_`` of an ``FMRegressor`` / ``FMClassifier``, or of
a ``Recommender``'s model, whose ``feature_names_`` and ``feature_groups_`` give readable
names and fields.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from fmrec._validation import check_interval
from fmrec.recommend.recommender import Recommender, is_mcmc

__all__ = ["most_similar", "similarity_matrix"]


@dataclass(frozen=True)
class Embeddings:
    """Factor vectors of a fitted model with what is known about their columns.

    ``names`` is None when the model came without ``feature_names``; ``groups`` maps field
    names to column slices (a Recommender's ``feature_groups_``), empty otherwise.
    """

    V: np.ndarray
    names: np.ndarray | None
    groups: dict

    def label(self, index: np.ndarray) -> np.ndarray:
        """Names of the columns ``index`` (the indices themselves without names)."""
        index = np.asarray(index, dtype=np.int64)
        return index if self.names is None else self.names[index]

    def index(self, features, what: str = "features") -> np.ndarray:
        """Column positions of ``features``: names, integer positions, or a mix."""
        if features is None:
            return np.arange(len(self.V))
        if isinstance(features, str | numbers.Integral):
            features = [features]
        out = [self.position(f, what) for f in features]
        return np.asarray(out, dtype=np.int64)

    def position(self, feature, what: str = "feature") -> int:
        n = len(self.V)
        if isinstance(feature, numbers.Integral) and not isinstance(feature, bool):
            if not -n <= feature < n:
                raise ValueError(f"{what}: index {feature} is out of range for a model with "
                                 f"{n} features")
            return int(feature) % n
        if not isinstance(feature, str):
            raise TypeError(f"{what} must be feature names (str) or integer indices, got "
                            f"{feature!r}")
        if self.names is None:
            raise ValueError(f"{what}: the model has no feature names, so {feature!r} cannot "
                             "be looked up; pass feature_names=[...] or an integer index")
        at = np.flatnonzero(self.names == feature)
        if len(at) == 0:
            close = difflib.get_close_matches(feature, self.names.tolist(), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"{what}: unknown feature {feature!r}{hint}")
        return int(at[0])

    def field_index(self, field) -> np.ndarray:
        """Columns of ``field``: a group key, a name prefix, a slice, or explicit features."""
        if field is None:
            return np.arange(len(self.V))
        if isinstance(field, slice):
            return np.arange(len(self.V))[field]
        if not isinstance(field, str):
            return self.index(field, "field")
        if field in self.groups:
            return np.arange(len(self.V))[self.groups[field]]
        if self.names is not None:
            # "item:genres" matches "item:genres=Comedy"; "genre" matches "genre=Comedy".
            hit = np.char.startswith(self.names, field + "=") | \
                np.char.startswith(self.names, field + ":") | (self.names == field)
            if hit.any():
                return np.flatnonzero(hit)
        known = list(self.groups) or sorted(set(self.fields().tolist()))
        raise ValueError(f"unknown field {field!r}: it is neither a feature group nor the "
                         f"prefix of a feature name; fields are {known[:20]}")

    def fields(self) -> np.ndarray:
        """Field of every column: its group for a Recommender, else the part of its name
        before "=" (or "" without names)."""
        n = len(self.V)
        if self.groups:
            out = np.full(n, "", dtype=object)
            for key, span in self.groups.items():
                out[span] = key
            return out
        if self.names is None:
            return np.full(n, "", dtype=object)
        return np.array([name.split("=", 1)[0] for name in self.names], dtype=object)


def embeddings(model, feature_names: Sequence[str] | None = None) -> Embeddings:
    """The factor vectors (float64) of ``model`` with their names and groups.

    ``model`` is a fitted ``FMRegressor`` / ``FMClassifier`` (names from ``feature_names``:
    a sequence, or a fitted ``FeatureEncoder``) or a fitted ``Recommender``. For a model
    fitted by MCMC a feature's vector is its vectors of all retained samples, concatenated.
    """
    groups: dict = {}
    # A fitted FeatureEncoder stands for its names.
    feature_names = getattr(feature_names, "feature_names_", feature_names)
    if isinstance(model, Recommender):
        check_is_fitted(model, "model_")
        V = model.model_.V_
        names = model.feature_names_ if feature_names is None else feature_names
        groups = {k: s for k, s in model.feature_groups_.items() if s.stop > s.start}
    else:
        check_is_fitted(model, "V_")
        V, names = model.V_, feature_names
    estimator = model.model_ if isinstance(model, Recommender) else model
    if is_mcmc(estimator):
        # Every retained sample's vectors side by side: cosines then weigh all samples, as
        # the Recommender's similar_items does.
        samples = estimator.parameter_sets()[2]
        V = np.concatenate(list(samples), axis=1)
    V = np.asarray(V, dtype=np.float64)
    if names is not None:
        names = np.asarray(names, dtype=str)
        if names.shape != (len(V),):
            raise ValueError(f"feature_names has {names.size} names but the model has "
                             f"{len(V)} features")
    return Embeddings(V, names, groups)


def cosine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Cosine similarities of the rows of A and B; a zero row is similar to nothing (0)."""
    return _unit(A) @ _unit(B).T


def _unit(A: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(A, axis=1, keepdims=True)
    # Unused features keep all-zero factors: their direction is undefined, call it none.
    return np.divide(A, norm, out=np.zeros_like(A, dtype=np.float64), where=norm > 0)


def most_similar(model, feature, n: int = 10, field=None,
                 feature_names: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``n`` features whose factor vectors have the highest cosine with ``feature``'s.

    Parameters
    ----------
    model : FMRegressor, FMClassifier or Recommender
        A fitted model. A Recommender names its columns (``feature_names_``); for an
        estimator pass ``feature_names`` or give ``feature`` as an integer index.
    feature : str or int
        Name (e.g. ``"item:item_id=50"``) or column index of the query feature.
    n : int, default=10
        How many neighbours to return (fewer when fewer candidates exist).
    field : str, slice or sequence, optional
        Restrict the candidates: a key of a Recommender's ``feature_groups_`` (``"item_id"``),
        a name prefix (``"item:genres"``, or ``"genre"`` for names like ``"genre=Comedy"``),
        a slice of columns, or a list of feature names / indices.
    feature_names : sequence of str or FeatureEncoder, optional
        Names of the model's columns (overrides a Recommender's); a fitted encoder gives
        its ``feature_names_``.

    Returns
    -------
    pandas.DataFrame
        Columns ``feature`` (name, or index without names), ``similarity`` (cosine; 0 for
        features whose vector is zero) and ``rank`` (1 = most similar). The query itself is
        never listed.

    Raises
    ------
    ValueError
        Unknown feature or field (close names are suggested), or a bad ``n``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from fmrec import FMRegressor
    >>> from fmrec.inspect import most_similar
    >>> X = sp.random(200, 6, density=0.4, format="csr", random_state=0)
    >>> model = FMRegressor(n_factors=3, n_epochs=5, random_state=0).fit(X, X.sum(axis=1).A1)
    >>> names = [f"f={i}" for i in range(6)]
    >>> most_similar(model, "f=0", n=2, feature_names=names).columns.tolist()
    ['feature', 'similarity', 'rank']
    """
    check_interval("n", n, low=1, integer=True)
    emb = embeddings(model, feature_names)
    query = emb.position(feature)
    candidates = emb.field_index(field)
    candidates = candidates[candidates != query]
    sims = cosine(emb.V[[query]], emb.V[candidates])[0]
    # Stable order: equal similarities (zero vectors) keep the column order.
    best = np.argsort(-sims, kind="stable")[:n]
    return pd.DataFrame({"feature": emb.label(candidates[best]), "similarity": sims[best],
                         "rank": np.arange(1, len(best) + 1)})


def similarity_matrix(model, features, feature_names: Sequence[str] | None = None
                      ) -> pd.DataFrame:
    """Pairwise cosine similarities of the factor vectors of ``features``.

    Parameters
    ----------
    model : FMRegressor, FMClassifier or Recommender
        A fitted model (see `most_similar`).
    features : sequence of str or int
        Feature names or column indices, in the order wanted.
    feature_names : sequence of str, optional
        Names of the model's columns (overrides a Recommender's).

    Returns
    -------
    pandas.DataFrame
        Square, symmetric, indexed both ways by the features' names (or indices). The
        diagonal is 1, except 0 for a feature whose vector is zero (it has no direction).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from fmrec import FMRegressor
    >>> from fmrec.inspect import similarity_matrix
    >>> X = sp.random(200, 6, density=0.4, format="csr", random_state=0)
    >>> model = FMRegressor(n_factors=3, n_epochs=5, random_state=0).fit(X, X.sum(axis=1).A1)
    >>> similarity_matrix(model, [0, 1, 2]).shape
    (3, 3)
    """
    emb = embeddings(model, feature_names)
    index = emb.index(features)
    S = cosine(emb.V[index], emb.V[index])
    labels = emb.label(index)
    return pd.DataFrame(S, index=labels, columns=labels)
