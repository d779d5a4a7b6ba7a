"""InteractionDataset: interaction tables to FM rows, kept apart from any model.

The dataset holds what the rows are made of: the user and item vocabularies (id, side-feature
and implicit-feature encoders), the context encoder, the seen matrix and the item popularity.
It builds every row a model needs: training rows (with sampled negatives for implicit
feedback), FMRanker's ranking data, the design of arbitrary (user, item[, context]) pairs and
the block rows of users and items. The design of an interaction is ``[context | user block |
item block]``; each block row is stored once per entity (:class:`fmrec.design.DesignMatrix`).
The :class:`~fmrec.Recommender`, the tuning and the Dask recommender all build their rows here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from fmrec._validation import check_choice, check_frame, check_interval
from fmrec.design import DesignMatrix, RelationBlock
from fmrec.features.encoder import FeatureEncoder
from fmrec.recommend import scoring as _scoring
from fmrec.recommend._entities import (
    Entities,
    as_keys,
    check_keys,
    csr_arrays,
    csr_from_arrays,
    encoder_for,
    list_column,
    shown,
)

SAMPLING = ("uniform", "popularity")
POPULARITY_POWER = 0.75  # word2vec's smoothing: popular items are drawn less than ∝ count
# The column groups of the design, in order.
GROUPS = ("context", "user_id", "user_features", "user_implicit", "item_id", "item_features",
          "item_implicit")


def context_columns(context) -> list[str]:
    """The context columns named by a ``context`` setting (None, one name or a list)."""
    if context is None:
        return []
    return [context] if isinstance(context, str) else list(context)


def implicit_sides(implicit) -> set[str]:
    """{"users"}, {"items"}, both or none, from an ``implicit`` setting."""
    if implicit is True:
        return {"users"}
    if implicit is False or implicit is None:
        return set()
    if implicit == "both":
        return {"users", "items"}
    if implicit in ("users", "items"):
        return {implicit}
    raise ValueError(f"implicit must be False, True, 'users', 'items' or 'both', got "
                     f"{implicit!r}")


class InteractionDataset(BaseEstimator):
    """Interactions turned into Factorization Machine rows, apart from any model.

    In the spirit of LightFM's ``Dataset``: ``fit`` learns the id vocabularies and encoders
    from the interactions (and side tables); the fitted dataset then builds the rows of any
    (user, item[, context]) pair. Every interaction is the row ``[context | user | item]``
    with the user part ``[user id | user side features | implicit items]`` and the item part
    ``[item id | item side features | implicit users]``, stored as relation blocks.

    Parameters
    ----------
    user_col, item_col : str, default="user_id", "item_id"
        Id columns of the interactions (and of ``user_features`` / ``item_features``).
    target : str, optional
        Target column; None means implicit feedback (every row is a positive).
    context : str or list of str, optional
        Interaction columns that describe the occasion: the flat part of the rows.
    user_features, item_features : pandas.DataFrame, optional
        One row per user (item): the id column plus side columns (numeric, categorical or
        multi-valued; see :class:`~fmrec.Recommender`).
    implicit : bool or {"users", "items", "both"}, default=False
        Implicit features from the training interactions ("users" or True: each user's set
        of items; "items": each item's set of users).
    implicit_weight : float, default=1.0
        Value scale of the implicit features.
    classifier : bool, default=False
        The target holds two labels (for an FMClassifier) rather than numbers.
    negatives : int, default=4
        Implicit feedback: negatives sampled per positive by ``training_rows``.
    negative_sampling : {"uniform", "popularity"}, default="uniform"
        Draw negatives uniformly or ∝ count^0.75; never an item the user has seen.
    random_state : int, numpy Generator or None
        Seeds the negative sampling (every call starts from this seed).

    Attributes
    ----------
    user_vocab_, item_vocab_ : Entities
        The users (items): id, side-feature and implicit encoders and their block rows.
    context_encoder_ : FeatureEncoder or None
    seen_ : scipy.sparse.csr_matrix
        Interaction counts, training users × training items.
    popularity_ : ndarray
        Training interactions per training item.
    classes_ : ndarray or None
        The two labels of a classifier's target (None otherwise).
    users_, items_ : ndarray
        Every known user (item): training ones in id-feature order, then side-table ones.
    feature_names_ : ndarray of str
        Readable name of every design column (``"user:user_id=7"``, ``"item:genre=Drama"``).
    feature_groups_ : dict of str to slice
        Columns of each group of ``GROUPS``.
    dropped_columns_ : dict of str to list
        Identifier-like columns left out of ``"user_features"``, ``"item_features"`` and
        ``"context"`` (see :class:`~fmrec.Recommender`); tables with none are absent.

    Examples
    --------
    >>> import pandas as pd
    >>> from fmrec import InteractionDataset
    >>> df = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 20, 10],
    ...                    "rating": [5.0, 3.0, 4.0]})
    >>> ds = InteractionDataset(target="rating").fit(df)
    >>> X, y = ds.training_rows(df)
    >>> X.shape, y.tolist()
    ((3, 4), [5.0, 3.0, 4.0])
    >>> ds.feature_names_.tolist()
    ['user:user_id=1', 'user:user_id=2', 'item:item_id=10', 'item:item_id=20']
    >>> ds.design([2], [20]).to_csr().indices.tolist()
    [1, 3]
    """

    def __init__(self, user_col="user_id", item_col="item_id", target=None, context=None,
                 user_features=None, item_features=None, implicit=False, implicit_weight=1.0,
                 classifier=False, negatives=4, negative_sampling="uniform",
                 random_state=None):
        self.user_col = user_col
        self.item_col = item_col
        self.target = target
        self.context = context
        self.user_features = user_features
        self.item_features = item_features
        self.implicit = implicit
        self.implicit_weight = implicit_weight
        self.classifier = classifier
        self.negatives = negatives
        self.negative_sampling = negative_sampling
        self.random_state = random_state

    @property
    def context_cols(self) -> list[str]:
        """The context columns, as a list."""
        return context_columns(self.context)

    # ----------------------------------------------------------------------------- checks
    def check_params(self) -> None:
        """Raise ValueError/TypeError naming the first bad setting."""
        if self.user_col == self.item_col:
            raise ValueError(f"user_col and item_col must differ, both are {self.user_col!r}")
        check_interval("negatives", self.negatives, low=1, integer=True)
        implicit_sides(self.implicit)
        check_interval("implicit_weight", self.implicit_weight, low=0, low_open=True)
        check_choice("negative_sampling", self.negative_sampling, SAMPLING)
        clash = {self.user_col, self.item_col, self.target} & set(self.context_cols)
        if clash:
            raise ValueError(f"context must not include the id or target column(s) {clash}")

    def check(self, interactions, what: str = "interactions") -> pd.DataFrame:
        """The interactions checked (columns, ids, targets) and with a fresh index.

        Raises ValueError naming the missing column, the first row with a missing id or
        target, or labels the fitted dataset does not know.
        """
        needed = [self.user_col, self.item_col, *self.context_cols]
        if self.target is not None:
            needed.append(self.target)
        check_frame(interactions, needed, what)
        if len(interactions) == 0:
            raise ValueError(f"{what} is empty: nothing to fit")
        for col in (self.user_col, self.item_col):
            check_keys(interactions, col, what)
        if self.target is not None:
            self.targets(interactions[self.target], what)
        return interactions.reset_index(drop=True)

    def targets(self, y: pd.Series, what: str = "interactions") -> np.ndarray:
        """Checked targets: floats, or for a classifier typed labels (two of them, or all
        among the fitted ``classes_``)."""
        if y.isna().any():
            na = y.isna().to_numpy()
            raise ValueError(f"{what} column {self.target!r} has {int(na.sum())} NaN "
                             f"target(s), first at row {int(np.flatnonzero(na)[0])}")
        if self.classifier:
            labels = pd.unique(y)
            known = getattr(self, "classes_", None)
            if known is not None and not np.isin(labels, known).all():
                raise ValueError(f"{what} column {self.target!r} has labels "
                                 f"{shown(labels[~np.isin(labels, known)])} not among the "
                                 f"model's classes {known.tolist()}")
            if known is None and len(labels) != 2:
                raise ValueError(f"a classifier needs exactly 2 distinct labels in "
                                 f"{self.target!r}, got {len(labels)}: {shown(labels)}")
            # Typed labels (str, not object) so that a model can save classes_ without pickle.
            return (y.to_numpy().astype(str) if pd.api.types.is_string_dtype(y)
                    else as_keys(y))
        try:
            return y.to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what} column {self.target!r} must be numeric for a "
                             f"regressor (dtype {y.dtype}); pass an FMClassifier as model "
                             "for labels") from exc

    # -------------------------------------------------------------------------------- fit
    def fit(self, interactions: pd.DataFrame) -> InteractionDataset:
        """Learn vocabularies, encoders, seen matrix and popularity from ``interactions``.

        Parameters
        ----------
        interactions : pandas.DataFrame
            ``user_col``, ``item_col``, the ``target`` (if any) and the context columns.

        Returns
        -------
        self : InteractionDataset
        """
        self.check_params()
        self.__dict__.pop("classes_", None)  # a refit learns its labels afresh
        df = self.check(interactions)
        self.classes_ = None
        if self.classifier and self.target is not None:
            self.classes_ = np.unique(self.targets(df[self.target]))
        cols = self.context_cols
        self.fit_entities(pd.unique(df[self.user_col]), pd.unique(df[self.item_col]),
                          encoder_for(df, cols) if cols else None)
        self.add_seen(df)
        return self

    def fit_entities(self, users, items, context_encoder=None) -> InteractionDataset:
        """Fit the vocabularies from the distinct training ids directly (for data that is not
        one DataFrame, such as Dask partitions); the seen matrix starts empty (``add_seen``).

        Parameters
        ----------
        users, items : array-like
            Distinct training ids, in the order their id features get.
        context_encoder : FeatureEncoder, optional
            A fitted encoder of the context columns.

        Returns
        -------
        self : InteractionDataset
        """
        self.check_params()
        if not hasattr(self, "classes_"):
            self.classes_ = None
        sides = implicit_sides(self.implicit)
        items = pd.Series(items, name=self.item_col)
        self.user_vocab_ = Entities.fit(self.user_col, users, self.user_features,
                                        "user_features", items if "users" in sides else None,
                                        self.implicit_weight)
        self.item_vocab_ = Entities.fit(
            self.item_col, items.to_numpy(), self.item_features, "item_features",
            pd.Series(users, name=self.user_col) if "items" in sides else None,
            self.implicit_weight)
        self.context_encoder_ = context_encoder
        self.seen_ = sp.csr_matrix((self.user_vocab_.widths[0], self.item_vocab_.widths[0]))
        self.popularity_ = np.zeros(self.seen_.shape[1])
        self._describe()
        return self

    def add_seen(self, interactions) -> None:
        """Count interactions into ``seen_`` and ``popularity_``: a frame of (user, item)
        rows of training entities, or a sparse matrix of counts (users × items)."""
        check_is_fitted(self, "seen_")
        if sp.issparse(interactions):
            counts = sp.csr_matrix(interactions)
            if counts.shape != self.seen_.shape:
                raise ValueError(f"seen counts have shape {counts.shape}, the dataset "
                                 f"{self.seen_.shape}")
            self.seen_ = (self.seen_ + counts).tocsr()
        else:
            u = self.user_vocab_.index(interactions[self.user_col])
            i = self.item_vocab_.index(interactions[self.item_col])
            if (u < 0).any() or (i < 0).any():
                raise ValueError("add_seen takes interactions of training users and items "
                                 "only (grow the dataset first)")
            old = self.seen_.tocoo()
            self.seen_ = sp.csr_matrix(
                (np.concatenate([old.data, np.ones(len(u))]),
                 (np.concatenate([old.row, u]), np.concatenate([old.col, i]))),
                shape=self.seen_.shape)
        self.seen_.sum_duplicates()
        self.popularity_ = np.asarray(self.seen_.sum(axis=0)).ravel()

    def grow(self, interactions: pd.DataFrame) -> np.ndarray:
        """Add the new users, items and context categories of ``interactions`` and count
        them as seen; returns where their columns go, for a model's ``grow``.

        Returns
        -------
        at : int64 array
            Positions in the old column layout before which each new column is inserted
            (``model.grow(model.n_features_in_ + len(at), at=at)``).
        """
        check_is_fitted(self, "seen_")
        df = self.check(interactions)
        groups = self.feature_groups_
        at = []
        if self.context_encoder_ is not None:
            at.append(self.context_encoder_.extend(df[self.context_cols]))
        users = as_keys(pd.unique(df[self.user_col]))
        new_users = users[self.user_vocab_.index(users) < 0]
        items = as_keys(pd.unique(df[self.item_col]))
        new_items = items[self.item_vocab_.index(items) < 0]
        if len(new_users):
            at.append(groups["user_id"].start + self.user_vocab_.ids.extend(
                pd.DataFrame({self.user_col: new_users})))
            implicit = self.item_vocab_.implicit
            if implicit is not None:
                at.append(groups["item_implicit"].start + implicit.extend(
                    pd.DataFrame({implicit.multi_valued[0]: list_column([new_users])})))
        if len(new_items):
            implicit = self.user_vocab_.implicit
            if implicit is not None:
                at.append(groups["user_implicit"].start + implicit.extend(
                    pd.DataFrame({implicit.multi_valued[0]: list_column([new_items])})))
            at.append(groups["item_id"].start + self.item_vocab_.ids.extend(
                pd.DataFrame({self.item_col: new_items})))
        old = self.seen_.tocoo()
        self.seen_ = sp.csr_matrix((old.data, (old.row, old.col)),
                                   shape=(self.user_vocab_.widths[0], self.item_vocab_.widths[0]))
        self.add_seen(df)
        self._describe()
        return np.concatenate(at) if at else np.empty(0, np.int64)

    def _describe(self) -> None:
        enc = self.context_encoder_
        ctx = [] if enc is None else [f"context:{n}" for n in enc.feature_names_]
        self.feature_names_ = np.array(ctx + self.user_vocab_.names("user")
                                       + self.item_vocab_.names("item"), dtype=str)
        widths = [len(ctx), *self.user_vocab_.widths, *self.item_vocab_.widths]
        edges = np.concatenate([[0], np.cumsum(widths)]).astype(int)
        self.feature_groups_ = {name: slice(int(edges[k]), int(edges[k + 1]))
                                for k, name in enumerate(GROUPS)}
        self.users_ = self.user_vocab_.all_keys()
        self.items_ = self.item_vocab_.all_keys()
        tables = (("user_features", self.user_vocab_.side_enc),
                  ("item_features", self.item_vocab_.side_enc), ("context", enc))
        self.dropped_columns_ = {what: list(e.dropped_columns_) for what, e in tables
                                 if e is not None and e.dropped_columns_}

    @property
    def n_features(self) -> int:
        """Width of the design."""
        check_is_fitted(self, "feature_names_")
        return len(self.feature_names_)

    def feature_fields(self) -> np.ndarray:
        """A field number for every column (each context column, the user ids, each user
        feature column, the user implicit set, and the same for items): the hyperprior
        groups of a model sampled by MCMC, as in libFM and myFM."""
        check_is_fitted(self, "feature_names_")
        u, i = self.user_vocab_, self.item_vocab_
        encoders = [self.context_encoder_, u.ids, u.side_enc, u.implicit, i.ids, i.side_enc,
                    i.implicit]
        fields, first = [], 0
        for enc in encoders:
            if enc is None:
                continue
            fields.append(first + enc.field_of_feature_)
            first += len(enc.fields_)
        return np.concatenate(fields).astype(np.int64)

    # ------------------------------------------------------------------------------- rows
    def user_rows(self, keys) -> sp.csr_matrix:
        """User block rows of ``keys`` (unknown ids and absent side rows: no features)."""
        check_is_fitted(self, "seen_")
        return _entity_rows(keys, self.user_vocab_, self.item_vocab_, self.seen_)

    def item_rows(self, keys) -> sp.csr_matrix:
        """Item block rows of ``keys``."""
        check_is_fitted(self, "seen_")
        return _entity_rows(keys, self.item_vocab_, self.user_vocab_, self.seen_.T.tocsr())

    def context_rows(self, context: pd.DataFrame) -> sp.csr_matrix:
        """Flat rows of a frame of context columns."""
        if self.context_encoder_ is None:
            raise ValueError("this dataset has no context columns")
        check_frame(context, self.context_cols, "context")
        return self.context_encoder_.transform(context[self.context_cols]
                                               .reset_index(drop=True))

    def design(self, users, items, context: pd.DataFrame | None = None) -> DesignMatrix:
        """Design of (user, item[, context]) pairs: ``users[r]``, ``items[r]`` and row r of
        ``context`` (required when the dataset has context columns)."""
        check_is_fitted(self, "seen_")
        u_codes, u_keys = pd.factorize(as_keys(users))
        i_codes, i_keys = pd.factorize(as_keys(items))
        if len(u_codes) != len(i_codes):
            raise ValueError(f"design needs as many users as items, got {len(u_codes)} and "
                             f"{len(i_codes)}")
        for what, codes in (("users", u_codes), ("items", i_codes)):
            if (codes < 0).any():  # factorize codes a missing id -1: no block row to point at
                raise ValueError(f"{what} has a missing id (None/NaN/NA) at position "
                                 f"{int(np.flatnonzero(codes < 0)[0])}")
        flat = None
        if self.context_encoder_ is not None:
            if context is None:
                raise ValueError(f"this dataset has context columns {self.context_cols}: "
                                 "pass them as context")
            flat = self.context_rows(context)
        return DesignMatrix(flat, [RelationBlock(self.user_rows(u_keys), u_codes),
                                   RelationBlock(self.item_rows(i_keys), i_codes)])

    def sample_negatives(self, users: np.ndarray, seen: sp.csr_matrix | None = None):
        """``negatives`` unseen items for each entry of ``users`` (rows of ``seen``, by
        default the training indices of ``seen_``).

        Returns
        -------
        source : int64 array
            Index into ``users`` of every negative.
        items : int64 array
            Training index of every negative item.
        """
        check_is_fitted(self, "seen_")
        seen = self.seen_ if seen is None else seen
        probs = None
        if self.negative_sampling == "popularity":
            probs = self.popularity_ ** POPULARITY_POWER
        return _scoring.sample_negatives(seen, users, int(self.negatives), seen.shape[1],
                                         probs, np.random.default_rng(self.random_state))

    def training_rows(self, interactions: pd.DataFrame) -> tuple[DesignMatrix, np.ndarray]:
        """``(X, y)`` to fit an FMRegressor or FMClassifier on.

        With a target, one row per interaction and its target. Without (implicit feedback),
        every interaction is a positive (y = 1) followed by ``negatives`` sampled negatives
        per positive (y = 0), each paired with its positive's user and context.
        """
        check_is_fitted(self, "seen_")
        df = self.check(interactions)
        users, items = df[self.user_col].to_numpy(), df[self.item_col].to_numpy()
        cols = self.context_cols
        ctx = df[cols] if cols else None
        if self.target is not None:
            return self.design(users, items, ctx), self.targets(df[self.target])
        source, negative = self.sample_negatives(self.user_vocab_.index(users))
        item_keys = self.item_vocab_.ids.field_values(self.item_col)
        users = np.concatenate([users.astype(object), users[source].astype(object)])
        items = np.concatenate([items.astype(object), item_keys[negative].astype(object)])
        if ctx is not None:
            ctx = pd.concat([ctx, ctx.iloc[source]], ignore_index=True)
        y = np.concatenate([np.ones(len(df)), np.zeros(len(source))])
        return self.design(as_keys(users), as_keys(items), ctx), y

    def ranking_data(self, interactions: pd.DataFrame) -> tuple:
        """FMRanker's ``fit`` arguments ``(U, I, users, items, seen)``: every training user's
        and item's row over the design's columns ``[user block | item block]``, the
        interactions as row positions, and the seen matrix."""
        check_is_fitted(self, "seen_")
        if self.context_encoder_ is not None:
            raise ValueError("ranking data has no context columns; FMRanker does not take "
                             "context yet")
        df = self.check(interactions)
        U = self.user_rows(self.user_vocab_.ids.field_values(self.user_col))
        I = self.item_rows(self.item_vocab_.ids.field_values(self.item_col))  # noqa: E741
        U, I = (sp.hstack([U, sp.csr_matrix((U.shape[0], I.shape[1]))], format="csr"),  # noqa: E741
                sp.hstack([sp.csr_matrix((I.shape[0], U.shape[1])), I], format="csr"))
        users = self.user_vocab_.index(df[self.user_col])
        items = self.item_vocab_.index(df[self.item_col])
        if (users < 0).any() or (items < 0).any():
            raise ValueError("ranking data takes interactions of training users and items "
                             "only")
        return U, I, users, items, self.seen_

    def seen_ranking_data(self) -> tuple:
        """FMRanker's ``fit`` arguments ``(U, I, users, items, seen)`` for every interaction
        counted in ``seen_`` (a pair seen c times is c positives), over all the design's
        columns, context included but empty: a ranker fitted beside a model with context
        scores every occasion alike.

        The implicit sets are left out (their columns are empty): a BPR step costs the
        non-zeros of its rows, and a user's set holds ~100 items on MovieLens 100K (fits
        25-50× slower) while ids and side features carry what the ranker adds to the target
        model. See ``implicit_columns``."""
        check_is_fitted(self, "seen_")
        g = self.feature_groups_
        U = self.user_rows(self.user_vocab_.ids.field_values(self.user_col))
        I = self.item_rows(self.item_vocab_.ids.field_values(self.item_col))  # noqa: E741
        U, I = (_without_columns(U, g["user_implicit"], g["user_id"].start),  # noqa: E741
                _without_columns(I, g["item_implicit"], g["item_id"].start))
        n = self.n_features
        U = sp.hstack([sp.csr_matrix((U.shape[0], g["user_id"].start)), U,
                       sp.csr_matrix((U.shape[0], n - g["user_implicit"].stop))], format="csr")
        I = sp.hstack([sp.csr_matrix((I.shape[0], g["item_id"].start)), I],  # noqa: E741
                      format="csr")
        seen = self.seen_.tocoo()
        counts = np.rint(seen.data).astype(np.int64)
        users, items = np.repeat(seen.row, counts), np.repeat(seen.col, counts)
        return U, I, users.astype(np.int64), items.astype(np.int64), self.seen_

    def implicit_columns(self) -> np.ndarray:
        """Design columns of the implicit sets (``"user_implicit"`` and ``"item_implicit"``)."""
        check_is_fitted(self, "seen_")
        g = self.feature_groups_
        return np.r_[np.arange(g["user_implicit"].start, g["user_implicit"].stop),
                     np.arange(g["item_implicit"].start, g["item_implicit"].stop)]

    # ------------------------------------------------------------------------ persistence
    def to_arrays(self) -> dict:
        """The fitted state as named arrays (no pickle), for ``from_arrays``."""
        check_is_fitted(self, "seen_")
        arrays = {**self.user_vocab_.to_arrays("users"), **self.item_vocab_.to_arrays("items"),
                  **csr_arrays(self.seen_, "seen")}
        if self.context_encoder_ is not None:
            arrays.update({f"context.{k}": v
                           for k, v in self.context_encoder_.to_arrays().items()})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict, classes=None, **params) -> InteractionDataset:
        """A fitted dataset from ``to_arrays``'s output and the constructor ``params``.

        Every array is checked against the others (side-feature matrices against their
        encoders, the seen matrix against the users and items): ValueError names the first
        that disagrees."""
        ds = cls(**params)
        weight = ds.implicit_weight
        try:
            ds.user_vocab_ = Entities.from_arrays(ds.user_col, arrays, "users", weight)
            ds.item_vocab_ = Entities.from_arrays(ds.item_col, arrays, "items", weight)
            head = "context."
            ctx = {k[len(head):]: v for k, v in arrays.items() if k.startswith(head)}
            ds.context_encoder_ = FeatureEncoder.from_arrays(ctx) if ctx else None
            ds.seen_ = csr_from_arrays(arrays, "seen")
        except KeyError as exc:
            raise ValueError(f"an encoder's array {exc.args[0]!r} is missing") from exc
        for what, entities in (("user", ds.user_vocab_), ("item", ds.item_vocab_)):
            keys, side_enc, side = entities.keys, entities.side_enc, entities.side
            want = (None if keys is None and side_enc is None else
                    (getattr(keys, "n_features_", None), getattr(side_enc, "n_features_", 0)))
            got = None if side is None else side.shape
            if got != want:
                raise ValueError(f"inconsistent {what} side features: a matrix of shape {got} "
                                 f"where the encoders give {want}")
            if side is not None:
                side.check_format(full_check=True)
        ds.seen_.check_format(full_check=True)
        shape = (ds.user_vocab_.widths[0], ds.item_vocab_.widths[0])
        if ds.seen_.shape != shape:
            raise ValueError(f"inconsistent shape of the seen matrix: {ds.seen_.shape}, but "
                             f"the encoders know {shape[0]} users and {shape[1]} items")
        ds.classes_ = classes
        ds.popularity_ = np.asarray(ds.seen_.sum(axis=0)).ravel()
        ds._describe()
        return ds


def _entity_rows(keys, entities: Entities, others: Entities, seen) -> sp.csr_matrix:
    """Block rows of ``keys``, their implicit sets read from ``seen`` (entities × others)."""
    keys = as_keys(keys)
    lists = None
    if entities.implicit is not None:
        at = entities.index(keys)
        values = others.ids.field_values(others.col)
        sub = seen[np.maximum(at, 0)]
        sub = sp.diags((at >= 0).astype(np.float64)) @ sub
        sub.eliminate_zeros()
        lists = np.split(values[sub.indices], sub.indptr[1:-1])
    return entities.rows(keys, lists)


def _without_columns(rows: sp.csr_matrix, span: slice, offset: int) -> sp.csr_matrix:
    """``rows`` (whose column 0 is design column ``offset``) with the design columns of
    ``span`` emptied; the shape is kept."""
    rows = rows.tocoo()
    cols = rows.col + offset
    keep = (cols < span.start) | (cols >= span.stop)
    return sp.csr_matrix((rows.data[keep], (rows.row[keep], rows.col[keep])),
                         shape=rows.shape)
