"""Recommender: interactions in, top-N lists out, on top of an FM and relation blocks.

The design of every interaction is ``[context | user block | item block]``: the context
columns of the row itself, then the user's block row ``[user id | user side features |
items the user interacted with (1/√n each, with implicit=True)]`` and the item's block row
``[item id | item side features]``, each stored once per entity (``fmrec.design``).
Recommendation never materializes a (user, item) row: the FM splits into user, item and
context parts (``fmrec.recommend.scoring``), so scoring every item for a batch of users is one
matrix product.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import ndtr
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.utils.validation import check_is_fitted

from fmrec._links import sigmoid
from fmrec._validation import check_frame
from fmrec.design import DesignMatrix, RelationBlock, fm_output
from fmrec.features.encoder import FeatureEncoder
from fmrec.models.fm import FMClassifier, FMRegressor
from fmrec.models.ranker import FMRanker
from fmrec.persistence import from_record, nested_arrays, register, save_model, to_record
from fmrec.recommend import scoring as _scoring
from fmrec.recommend._entities import (
    Entities,
    as_keys,
    check_keys,
    csr_arrays,
    csr_from_arrays,
    encoder_for,
    list_column,
    rowdot,
    shown,
)

_UNKNOWN = ("error", "popular")
_SAMPLING = ("uniform", "popularity")
_POPULARITY_POWER = 0.75  # word2vec's smoothing: popular items are drawn less than ∝ count


def _ranked(owner_col: str, owners, col: str, keys, top: np.ndarray,
            score: np.ndarray) -> pd.DataFrame:
    """Long frame of per-owner top lists: ``top`` holds positions in ``keys`` (-1: none)."""
    valid = top >= 0
    counts = valid.sum(axis=1)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return pd.DataFrame({owner_col: np.repeat(owners, counts), col: keys[top[valid]],
                         "score": score[valid],
                         "rank": np.arange(int(counts.sum())) - starts + 1})


_MODELS = (FMRegressor, FMClassifier, FMRanker)


def _is_mcmc(model) -> bool:
    return not isinstance(model, FMRanker) and model._is_mcmc()


@register
class Recommender(BaseEstimator):
    """Top-N recommendation from interactions with a Factorization Machine.

    Each interaction becomes the FM row ``[context | user | item]`` where the user part is
    ``[user id | user side features | implicit items]`` and the item part ``[item id | item
    side features]``; user and item parts are relation blocks stored once per entity.

    Parameters
    ----------
    user_col, item_col : str, default="user_id", "item_id"
        Id columns of the interactions (and of ``user_features`` / ``item_features``).
    target : str, optional
        Target column: ratings for a regressor (the default model) or two-valued labels for
        an ``FMClassifier`` passed as ``model``. None means implicit feedback: every row is
        a positive, learnt for ranking by an ``FMRanker`` (BPR; the default) or, with an
        ``FMClassifier`` as ``model``, against ``negatives`` sampled negatives by log loss.
    model : FMRegressor, FMClassifier or FMRanker, optional
        Unfitted estimator whose hyperparameters to use (it is cloned; a ``random_state``
        of None takes this recommender's). Default: with a target, ``FMRegressor`` with 16
        factors and 20 ALS sweeps; without, ``FMRanker()`` (BPR with hard negatives; an
        ``FMClassifier`` of 16 factors when there is ``context``, which FMRanker does not
        take yet).
    user_features, item_features : pandas.DataFrame, optional
        One row per user (item): the id column plus side columns. Numeric columns are
        standardized numbers, columns whose cells are lists/tuples/sets are multi-valued
        (e.g. genres; weights sum to 1), anything else is categorical (cast numbers to
        ``str`` or ``category`` to make them categorical). Entities that are here but not
        in the interactions are scored from these features alone (cold start). Not saved
        by ``save``: their encoded form is.
    context : list of str, optional
        Interaction columns that describe the occasion (hour, device...): the flat part.
    implicit : bool or {"users", "items", "both"}, default=False
        Implicit features from who interacted with what in the training data: "users" (or
        True) adds to each user the set of items they interacted with, each with weight
        ``implicit_weight``/√n (SVD++'s implicit feedback, libFM's and myFM's "implicit user
        features"); "items" adds to each item the set of its users; "both" does both.
        Leakage-safe: only training interactions are used. The block storage of
        :class:`~fmrec.design.DesignMatrix` keeps each set once, not once per interaction.
    implicit_weight : float, default=1.0
        Value scale of the implicit features. With the count-scaled penalties of the model
        (``reg_power``), scaling these features by c divides their effective penalty by c²:
        a per-field regularization knob. On MovieLens 100K, 2 was chosen on validation.
    negatives : int, default=4
        Implicit feedback with an ``FMClassifier``: negatives sampled per positive (once per
        ``fit`` and per ``partial_fit`` batch), paired with the positive's user and context.
    negative_sampling : {"uniform", "popularity"}, default="uniform"
        Draw those negatives uniformly from the training items or ∝ count^0.75 (word2vec's
        smoothing). An item the user interacted with is never drawn. (An ``FMRanker``
        samples its own negatives, every epoch, by its own ``negative_sampling``.)
    random_state : int or None
        Seeds negative sampling and, unless the model has its own, the model.

    Attributes
    ----------
    model_ : FMRegressor or FMClassifier
        The fitted model; its columns are those of ``feature_names_``.
    feature_names_ : ndarray of str
        Readable name of every design column: ``"context:hour"``, ``"user:user_id=7"``,
        ``"user:age"``, ``"user:implicit_item_id=50"``, ``"item:genre=Drama"``...
    feature_groups_ : dict of str to slice
        Columns of ``"context"``, ``"user_id"``, ``"user_features"``, ``"user_implicit"``,
        ``"item_id"`` and ``"item_features"``.
    users_, items_ : ndarray
        Every user (item) the model knows: those of the training data (in id feature
        order), then those only in ``user_features`` (``item_features``).
    seen_ : scipy.sparse.csr_matrix
        Interaction counts, training users × training items (the first rows and columns of
        ``users_`` and ``items_``).
    popularity_ : ndarray
        Training interactions per training item.

    Examples
    --------
    >>> import pandas as pd
    >>> from fmrec import FMRegressor, Recommender
    >>> ratings = pd.DataFrame({"user_id": [1, 1, 2, 2, 3], "item_id": [10, 20, 10, 30, 20],
    ...                         "rating": [5.0, 3.0, 4.0, 2.0, 4.0]})
    >>> rec = Recommender(target="rating", model=FMRegressor(n_factors=2, n_epochs=5),
    ...                   random_state=0).fit(ratings)
    >>> rec.recommend([1, 3], n=2).columns.tolist()
    ['user', 'item', 'score', 'rank']
    >>> rec.recommend([1], n=5)["item"].tolist()  # items 10 and 20 are seen: one is left
    [30]
    """

    def __init__(self, user_col="user_id", item_col="item_id", target=None, model=None,
                 user_features=None, item_features=None, context=None, implicit=False,
                 implicit_weight=1.0, negatives=4, negative_sampling="uniform",
                 random_state=None):
        self.user_col = user_col
        self.item_col = item_col
        self.target = target
        self.model = model
        self.user_features = user_features
        self.item_features = item_features
        self.context = context
        self.implicit = implicit
        self.implicit_weight = implicit_weight
        self.negatives = negatives
        self.negative_sampling = negative_sampling
        self.random_state = random_state

    # ------------------------------------------------------------------------- checks
    def _implicit_sides(self) -> set:
        """{"users"}, {"items"}, both or none, from the ``implicit`` parameter."""
        value = self.implicit
        if value is True:
            return {"users"}
        if value is False or value is None:
            return set()
        if value == "both":
            return {"users", "items"}
        if value in ("users", "items"):
            return {value}
        raise ValueError(f"implicit must be False, True, 'users', 'items' or 'both', got "
                         f"{value!r}")

    def _context_cols(self) -> list:
        if self.context is None:
            return []
        return [self.context] if isinstance(self.context, str) else list(self.context)

    def _check_params(self) -> None:
        if self.user_col == self.item_col:
            raise ValueError(f"user_col and item_col must differ, both are {self.user_col!r}")
        n = self.negatives
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"negatives must be an integer >= 1, got {n!r}")
        self._implicit_sides()
        w = self.implicit_weight
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not np.isfinite(w) \
                or w <= 0:
            raise ValueError(f"implicit_weight must be a finite number > 0, got {w!r}")
        if self.negative_sampling not in _SAMPLING:
            raise ValueError(f"negative_sampling must be one of {list(_SAMPLING)}, got "
                             f"{self.negative_sampling!r}")
        if self.model is not None and not isinstance(self.model, _MODELS):
            raise TypeError(f"model must be an FMRegressor, FMClassifier or FMRanker, got "
                            f"{type(self.model).__name__}")
        if isinstance(self.model, FMRanker):
            if self.target is not None:
                raise ValueError(f"FMRanker learns from implicit feedback (positives only): "
                                 f"target must be None, got {self.target!r}; use an "
                                 "FMRegressor or FMClassifier for a target")
            if self._context_cols():
                raise ValueError("FMRanker does not take context columns yet; use an "
                                 "FMClassifier with sampled negatives for context")
        clash = {self.user_col, self.item_col, self.target} & set(self._context_cols())
        if clash:
            raise ValueError(f"context must not include the id or target column(s) {clash}")

    def _check_interactions(self, df, what: str = "interactions") -> pd.DataFrame:
        needed = [self.user_col, self.item_col] + self._context_cols()
        if self.target is not None:
            needed.append(self.target)
        check_frame(df, needed, what)
        if len(df) == 0:
            raise ValueError(f"{what} is empty: nothing to fit")
        for col in (self.user_col, self.item_col):
            check_keys(df, col, what)
        if self.target is not None:
            self._targets(df[self.target], what, self._classes())
        return df.reset_index(drop=True)

    def _classes(self):
        """The fitted classifier's labels (None before fit, and for a regressor)."""
        return getattr(getattr(self, "model_", None), "classes_", None)

    def _targets(self, y: pd.Series, what: str, known=None) -> np.ndarray:
        """Checked targets: floats for a regressor; typed labels, two of them or all among
        ``known``, for a classifier."""
        if y.isna().any():
            na = y.isna().to_numpy()
            raise ValueError(f"{what} column {self.target!r} has {int(na.sum())} NaN "
                             f"target(s), first at row {int(np.flatnonzero(na)[0])}")
        if self._classifier:
            labels = pd.unique(y)
            if known is not None and not np.isin(labels, known).all():
                raise ValueError(f"{what} column {self.target!r} has labels "
                                 f"{shown(labels[~np.isin(labels, known)])} not among the "
                                 f"model's classes {known.tolist()}")
            if known is None and len(labels) != 2:
                raise ValueError(f"a classifier needs exactly 2 distinct labels in "
                                 f"{self.target!r}, got {len(labels)}: {shown(labels)}")
            # Typed labels (str, not object) so that save can store classes_ without pickle.
            return (y.to_numpy().astype(str) if pd.api.types.is_string_dtype(y)
                    else as_keys(y))
        try:
            return y.to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what} column {self.target!r} must be numeric for a "
                             f"regressor (dtype {y.dtype}); pass an FMClassifier as model "
                             "for labels") from exc

    @property
    def _classifier(self) -> bool:
        return is_classifier(self.model if self.model is not None else self._default_model())

    def _default_model(self):
        """The model used when ``model`` is None: BPR ranking for implicit feedback (log loss
        against sampled negatives when there is context, which FMRanker does not take), 16
        factors and 20 ALS sweeps for a target."""
        if self.target is None and not self._context_cols():
            return FMRanker()
        cls = FMClassifier if self.target is None else FMRegressor
        return cls(n_factors=16, n_epochs=20)

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(self.random_state)

    # ---------------------------------------------------------------------------- fit
    def fit(self, interactions: pd.DataFrame) -> Recommender:
        """Fit encoders and model on ``interactions`` (one row per interaction).

        Parameters
        ----------
        interactions : pandas.DataFrame
            ``user_col``, ``item_col``, the ``target`` (if any) and ``context`` columns.

        Returns
        -------
        self : Recommender
        """
        self._check_params()
        self.__dict__.pop("model_", None)  # a refit starts afresh, labels included
        df = self._check_interactions(interactions)
        seed = self.random_state if isinstance(self.random_state, numbers.Integral) else None
        if self.model is None:
            model = self._default_model().set_params(random_state=seed)
        else:
            model = clone(self.model)
            if model.random_state is None:
                model.set_params(random_state=seed)
        users = pd.unique(df[self.user_col])
        items = pd.Series(pd.unique(df[self.item_col]), name=self.item_col)
        sides = self._implicit_sides()
        self._users = Entities.fit(self.user_col, users, self.user_features, "user_features",
                                    items if "users" in sides else None, self.implicit_weight)
        self._items = Entities.fit(self.item_col, items.to_numpy(), self.item_features,
                                    "item_features",
                                    pd.Series(users, name=self.user_col) if "items" in sides
                                    else None, self.implicit_weight)
        cols = self._context_cols()
        self._context = encoder_for(df, cols) if cols else None
        self.seen_ = sp.csr_matrix((self._users.widths[0], self._items.widths[0]))
        self._add_seen(df)
        if isinstance(model, FMRanker):
            self.model_ = model.fit(*self._ranking_data(df))
            self._describe()
            return self
        X, y = self._training_rows(df)
        if model.solver == "mcmc" and model.groups is None:
            model.set_params(groups=self._feature_fields())
        self.model_ = model.fit(X, y)
        self._describe()
        return self

    def _ranking_data(self, df: pd.DataFrame) -> tuple:
        """FMRanker's ``fit`` arguments: every training user's and item's row over the
        design's columns, the positives as row positions, and the seen matrix."""
        user_keys = self._users.ids.field_values(self.user_col)
        item_keys = self._items.ids.field_values(self.item_col)
        U, I = self._user_rows(user_keys), self._item_rows(item_keys)  # noqa: E741
        # Columns [user block | item block], as in the design (an FMRanker has no context).
        U, I = (sp.hstack([U, sp.csr_matrix((U.shape[0], I.shape[1]))], format="csr"),  # noqa: E741
                sp.hstack([sp.csr_matrix((I.shape[0], U.shape[1])), I], format="csr"))
        users = self._users.index(df[self.user_col])
        items = self._items.index(df[self.item_col])
        return U, I, users, items, self.seen_

    def _feature_fields(self) -> np.ndarray:
        """A field number for every feature (each context column, the user ids, each user
        feature column, the user implicit set, and the same for items): the hyperprior
        groups of a model sampled by MCMC, as in libFM and myFM."""
        encoders = [self._context, self._users.ids, self._users.side_enc, self._users.implicit,
                    self._items.ids, self._items.side_enc, self._items.implicit]
        fields, first = [], 0
        for enc in encoders:
            if enc is None:
                continue
            fields.append(first + enc.field_of_feature_)
            first += len(enc.fields_)
        return np.concatenate(fields).astype(np.int64)

    def _add_seen(self, df: pd.DataFrame) -> None:
        u = self._users.index(df[self.user_col])
        i = self._items.index(df[self.item_col])
        shape = (self._users.widths[0], self._items.widths[0])
        old = self.seen_.tocoo()
        self.seen_ = sp.csr_matrix(
            (np.concatenate([old.data, np.ones(len(u))]),
             (np.concatenate([old.row, u]), np.concatenate([old.col, i]))), shape=shape)
        self.seen_.sum_duplicates()
        self.popularity_ = np.asarray(self.seen_.sum(axis=0)).ravel()

    def _training_rows(self, df: pd.DataFrame) -> tuple[DesignMatrix, np.ndarray]:
        users, items = df[self.user_col].to_numpy(), df[self.item_col].to_numpy()
        cols = self._context_cols()
        ctx = df[cols] if cols else None
        if self.target is not None:
            y = self._targets(df[self.target], "interactions", self._classes())
            return self._design(users, items, ctx), y
        source, negative = self._negatives(self._users.index(users), self.seen_)
        item_keys = self._items.ids.field_values(self.item_col)
        users = np.concatenate([users.astype(object), users[source].astype(object)])
        items = np.concatenate([items.astype(object), item_keys[negative].astype(object)])
        if ctx is not None:
            ctx = pd.concat([ctx, ctx.iloc[source]], ignore_index=True)
        y = np.concatenate([np.ones(len(df)), np.zeros(len(source))])
        return self._design(as_keys(users), as_keys(items), ctx), y

    def _negatives(self, users: np.ndarray, seen: sp.csr_matrix):
        probs = None
        if self.negative_sampling == "popularity":
            probs = self.popularity_ ** _POPULARITY_POWER
        return _scoring.sample_negatives(seen, users, int(self.negatives), seen.shape[1],
                                         probs, self._rng())

    def _user_rows(self, keys) -> sp.csr_matrix:
        return self._entity_rows(keys, self._users, self._items, self.seen_)

    def _item_rows(self, keys) -> sp.csr_matrix:
        return self._entity_rows(keys, self._items, self._users, self.seen_.T.tocsr())

    @staticmethod
    def _entity_rows(keys, entities, others, seen) -> sp.csr_matrix:
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

    def _design(self, users, items, ctx: pd.DataFrame | None) -> DesignMatrix:
        u_codes, u_keys = pd.factorize(as_keys(users))
        i_codes, i_keys = pd.factorize(as_keys(items))
        flat = None if self._context is None else self._context.transform(ctx)
        return DesignMatrix(flat, [RelationBlock(self._user_rows(u_keys), u_codes),
                                   RelationBlock(self._item_rows(i_keys), i_codes)])

    def _describe(self) -> None:
        ctx = [] if self._context is None else [f"context:{n}"
                                                for n in self._context.feature_names_]
        self.feature_names_ = np.array(ctx + self._users.names("user")
                                       + self._items.names("item"), dtype=str)
        widths = [len(ctx), *self._users.widths, *self._items.widths]
        edges = np.concatenate([[0], np.cumsum(widths)]).astype(int)
        names = ["context", "user_id", "user_features", "user_implicit", "item_id",
                 "item_features", "item_implicit"]
        self.feature_groups_ = {name: slice(int(edges[k]), int(edges[k + 1]))
                                for k, name in enumerate(names)}
        self.users_ = self._users.all_keys()
        self.items_ = self._items.all_keys()

    # ------------------------------------------------------------------------ predict
    def _output(self, raw: np.ndarray) -> np.ndarray:
        """What ``predict`` reports for raw FM outputs: the (clipped) rating or P(positive)."""
        model = self.model_
        if isinstance(model, FMRanker):
            return raw  # a ranking score, on no particular scale
        if is_classifier(model) and model._is_mcmc():
            # Probit link at the posterior-mean ŷ; predict averages Φ(ŷ) over the samples
            # instead, so scores differ slightly while ranking almost alike.
            return ndtr(raw)
        if is_classifier(model):
            return sigmoid(raw)
        if getattr(model, "clip_predictions", False):
            return np.clip(raw, *model.y_range_)
        return raw

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """Score (user, item[, context]) pairs.

        Unknown users or items have no id features (cold); their side features are used if
        they appear in ``user_features`` / ``item_features``.

        Parameters
        ----------
        df : pandas.DataFrame
            ``user_col``, ``item_col`` and the context columns.

        Returns
        -------
        ndarray of shape (len(df),)
            Predicted ratings (clipped to the training range like ``FMRegressor.predict``)
            or, for a classifier, the probability of the positive class.
        """
        check_is_fitted(self, "model_")
        check_frame(df, [self.user_col, self.item_col] + self._context_cols(), "df")
        if len(df) == 0:
            return np.empty(0)
        cols = self._context_cols()
        X = self._design(df[self.user_col].to_numpy(), df[self.item_col].to_numpy(),
                         df[cols].reset_index(drop=True) if cols else None)
        if isinstance(self.model_, FMRanker):
            m = self.model_
            return fm_output(X, m.w0_, m.w_, m.V_)
        if is_classifier(self.model_):
            return self.model_.predict_proba(X)[:, 1]
        return self.model_.predict(X)

    # ---------------------------------------------------------------------- recommend
    def _parts(self) -> list[tuple[float, dict]]:
        """w0 and the float64 (w, V) of the context, user and item columns: one pair, or one
        per retained sample of a model fitted by MCMC (whose scores average the samples')."""
        m, g = self.model_, self.feature_groups_
        spans = {"context": g["context"],
                 "user": slice(g["user_id"].start, g["user_implicit"].stop),
                 "item": slice(g["item_id"].start, g["item_implicit"].stop)}
        samples = (zip(*m._samples(), strict=True) if _is_mcmc(m)
                   else [(m.w0_, m.w_, m.V_)])
        out = []
        for w0, w, V in samples:
            w, V = w.astype(np.float64), V.astype(np.float64)
            out.append((float(w0), {name: (w[s], V[s]) for name, s in spans.items()}))
        return out

    def recommend(self, user_ids, n: int = 10, exclude_seen: bool = True, items=None,
                  context=None, history=None, unknown: str = "error") -> pd.DataFrame:
        """The ``n`` best items for each user, scored exactly and without a row per pair.

        Parameters
        ----------
        user_ids : id or sequence of ids
        n : int, default=10
        exclude_seen : bool, default=True
            Leave out the items a user interacted with in training (or in ``history``).
        items : sequence of item ids, optional
            Candidates to choose from (default: every item of the training data and of
            ``item_features``). ``ValueError`` names any the model does not know.
        context : dict or pandas.DataFrame, optional
            Context column values: a dict or one-row frame applies to every user; a frame
            with ``user_col`` gives one row per user. Without it the context features are
            absent (numeric ones at their training mean).
        history : pandas.DataFrame or dict, optional
            Interactions of users the model has never been trained on: a frame with
            ``user_col``, ``item_col`` (and the target, and optionally the context columns)
            or a dict user -> list of items. With ``implicit=True`` the user's row holds
            those items (1/√n each). Otherwise the user's id weight and factor vector are
            *folded in*: they minimize the model's own training objective on these rows
            with every other parameter frozen (a (k+1)×(k+1) ridge solve for the square
            loss; Newton steps on the log loss for a classifier). For implicit feedback
            (``target=None``) the history items are positives, against ``negatives``
            sampled negatives each, as in training.
        unknown : {"error", "popular"}, default="error"
            What to do with users that are not in training, ``user_features`` or
            ``history``: raise ``ValueError`` naming them, or give them the most popular
            training items (by interaction count; ``score`` is still the model's score of
            the pair for a user without features).

        Returns
        -------
        pandas.DataFrame
            Columns ``user``, ``item``, ``score`` (what ``predict`` gives for the pair) and
            ``rank`` (1 = best), sorted by user, then rank. A user has fewer than ``n``
            rows when fewer candidates are left.
        """
        check_is_fitted(self, "model_")
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        if unknown not in _UNKNOWN:
            raise ValueError(f"unknown must be one of {list(_UNKNOWN)}, got {unknown!r}")
        users = as_keys(pd.unique(as_keys([user_ids] if np.ndim(user_ids) == 0
                                            else user_ids)))
        try:
            users = users[np.argsort(users, kind="stable")]
        except TypeError:  # ids of mixed types: keep the given order
            pass
        candidates = self._candidates(items)
        hist = self._history_frame(history)
        folded = (np.zeros(len(users), bool) if hist is None
                  else pd.Index(users).isin(pd.unique(hist[self.user_col])))
        cold = ~folded & (self._users.index(users) < 0) & (self._users.side_index(users) < 0)
        if cold.any() and unknown == "error":
            raise ValueError(f"unknown user(s) {shown(users[cold])}: not in the training "
                             "data, user_features or history (use unknown='popular')")
        terms = [self._score_terms(users, candidates, hist, folded, context, w0, parts)
                 for w0, parts in self._parts()]
        # The mean of S samples' scores b + t_i + a·q_i is one score of the same form: mean
        # b and t_i, and a·q_i over the samples' vectors side by side (a divided by S).
        a, b, q_i, t_i = (np.hstack([t[0] for t in terms]) / len(terms),
                          np.mean([t[1] for t in terms], axis=0),
                          np.hstack([t[2] for t in terms]),
                          np.mean([t[3] for t in terms], axis=0))
        exclude = self._exclusions(users, candidates, hist) if exclude_seen else None
        top, raw = _scoring.top_n(a, b, q_i, t_i, n, exclude)
        if cold.any():
            # Users without any feature: the most popular items, scored by the model.
            pop = np.zeros(len(candidates))
            at = self._items.index(candidates)
            pop[at >= 0] = self.popularity_[at[at >= 0]]
            best = np.argsort(-pop, kind="stable")[:top.shape[1]]
            rows = np.flatnonzero(cold)
            top[rows] = best
            raw[rows] = b[rows, None] + t_i[best] + a[rows] @ q_i[best].T
        return _ranked("user", users, "item", candidates, top, self._output(raw))

    def _score_terms(self, users, candidates, hist, folded, context, w0, parts):
        """(a, b, q_i, t_i) of one parameter set: the score of user u and item i is
        b[u] + t_i[i] + a[u]·q_i[i]."""
        t_i, q_i = _scoring.part_terms(self._item_rows(candidates), *parts["item"])
        t_u, q_u = _scoring.part_terms(self._user_rows(users), *parts["user"])
        if folded.any():
            t_u[folded], q_u[folded] = self._fold_in(hist, users[folded], w0, parts)
        t_c, q_c = self._context_terms(context, users, parts["context"])
        return q_u + q_c, w0 + t_u + t_c + rowdot(q_u, q_c), q_i, t_i

    def _candidates(self, items) -> np.ndarray:
        if items is None:
            return self.items_
        keys = as_keys(pd.unique(as_keys([items] if np.ndim(items) == 0 else items)))
        known = (self._items.index(keys) >= 0) | (self._items.side_index(keys) >= 0)
        if not known.all():
            raise ValueError(f"items {shown(keys[~known])} are unknown to the model (not in "
                             "the training data or item_features)")
        return keys

    def _exclusions(self, users, candidates, hist) -> sp.csr_matrix:
        """Pattern (users × candidates) of the pairs seen in training or in ``history``."""
        column = np.full(self.seen_.shape[1], -1, dtype=np.int64)
        at = self._items.index(candidates)
        column[at[at >= 0]] = np.flatnonzero(at >= 0)
        u = self._users.index(users)
        seen = (sp.diags((u >= 0).astype(np.float64)) @ self.seen_[np.maximum(u, 0)]).tocoo()
        rows, cols = seen.row, column[seen.col]
        keep = (cols >= 0) & (seen.data > 0)
        rows, cols = rows[keep], cols[keep]
        if hist is not None:
            h_rows = pd.Index(users).get_indexer(hist[self.user_col])
            h_cols = pd.Index(candidates).get_indexer(hist[self.item_col])
            keep = (h_rows >= 0) & (h_cols >= 0)
            rows = np.concatenate([rows, h_rows[keep]])
            cols = np.concatenate([cols, h_cols[keep]])
        return sp.csr_matrix((np.ones(len(rows)), (rows, cols)),
                             shape=(len(users), len(candidates)))

    def _context_terms(self, context, users, params) -> tuple[np.ndarray, np.ndarray]:
        k = self.model_.V_.shape[1]
        if context is None:
            return np.zeros(len(users)), np.zeros((len(users), k))
        if self._context is None:
            raise ValueError("this Recommender has no context columns: context must be None")
        frame = pd.DataFrame([context]) if isinstance(context, dict) else context
        cols = self._context_cols()
        check_frame(frame, cols, "context")
        if len(frame) == 1:
            at = np.zeros(len(users), dtype=np.int64)
        else:
            if self.user_col not in frame.columns:
                raise ValueError(f"a context with {len(frame)} rows needs a {self.user_col!r} "
                                 "column saying which user each row is for")
            index = pd.Index(frame[self.user_col])
            if not index.is_unique:
                raise ValueError(f"context has several rows for user(s) "
                                 f"{shown(index[index.duplicated()].unique())}")
            at = index.get_indexer(users)
            if (at < 0).any():
                raise ValueError(f"context has no row for user(s) {shown(users[at < 0])}")
        t, q = _scoring.part_terms(self._context.transform(frame[cols].reset_index(drop=True)),
                                   *params)
        return t[at], q[at]

    # ------------------------------------------------------------------------ fold-in
    def _history_frame(self, history) -> pd.DataFrame | None:
        if history is None:
            return None
        if isinstance(history, dict):
            pairs = [(u, i) for u, its in history.items()
                     for i in ([its] if np.ndim(its) == 0 else its)]
            history = pd.DataFrame(pairs, columns=[self.user_col, self.item_col])
        check_frame(history, [self.user_col, self.item_col], "history")
        for col in (self.user_col, self.item_col):
            check_keys(history, col, "history")
        needs_target = self.target is not None and "users" not in self._implicit_sides()
        if needs_target and self.target not in history.columns:
            raise ValueError(f"history needs the target column {self.target!r} to fold users "
                             "into this model (or use implicit=True)")
        users = as_keys(pd.unique(history[self.user_col]))
        trained = self._users.index(users) >= 0
        if trained.any():
            raise ValueError(f"history is for users the model has not been trained on; "
                             f"{shown(users[trained])} are (use partial_fit to update them)")
        return history.reset_index(drop=True)

    def _fold_in(self, hist, users, w0, parts) -> tuple[np.ndarray, np.ndarray]:
        """(t_u, q_u) of new users from their ``history`` rows (see ``recommend``)."""
        hist = hist[pd.Index(hist[self.user_col]).isin(users)]
        group = pd.Index(users).get_indexer(hist[self.user_col])
        if "users" in self._implicit_sides():
            order = np.argsort(group, kind="stable")
            counts = np.bincount(group, minlength=len(users))
            lists = np.split(hist[self.item_col].to_numpy()[order], np.cumsum(counts)[:-1])
            return _scoring.part_terms(self._users.rows(users, lists), *parts["user"])
        if isinstance(self.model_, FMRanker):
            raise ValueError("history= folds new users into an FMRanker only through "
                             "implicit user features: use implicit='users'")
        if self.model_._is_mcmc():
            raise ValueError("history= folds new users in by a ridge solve of the model's "
                             "penalties, which a model fitted by MCMC does not have; use "
                             "implicit='users' (their history is then their row) or refit")
        t_s, q_s = _scoring.part_terms(self._users.rows(users), *parts["user"])
        items = hist[self.item_col].to_numpy()
        cols = [c for c in self._context_cols() if c in hist.columns]
        if cols and len(cols) < len(self._context_cols()):
            check_frame(hist, self._context_cols(), "history (with context columns)")
        ctx = hist[cols].reset_index(drop=True) if cols else None
        model = self.model_
        if self.target is None:  # implicit feedback: positives against sampled negatives
            at = self._items.index(items)
            seen = sp.csr_matrix((np.ones(int((at >= 0).sum())), (group[at >= 0], at[at >= 0])),
                                 shape=(len(users), self.seen_.shape[1]))
            source, negative = self._negatives(group, seen)
            group = np.concatenate([group, group[source]])
            items = as_keys(np.concatenate([
                items.astype(object),
                self._items.ids.field_values(self.item_col)[negative].astype(object)]))
            if ctx is not None:
                ctx = pd.concat([ctx, ctx.iloc[source]], ignore_index=True)
            y = np.concatenate([np.ones(len(hist)), np.zeros(len(source))])
        else:
            y = self._targets(hist[self.target], "history", model.classes_
                              if is_classifier(model) else None)
            if is_classifier(model):
                y = (y == model.classes_[1]).astype(np.float64)
        codes, keys = pd.factorize(as_keys(items))
        t_i, q_i = _scoring.part_terms(self._item_rows(keys), *parts["item"])
        t_i, q_i = t_i[codes], q_i[codes]
        if ctx is None:
            t_c, q_c = np.zeros(len(group)), np.zeros_like(q_i)
        else:
            t_c, q_c = _scoring.part_terms(self._context.transform(ctx), *parts["context"])
        qs = q_s[group]
        offset = (w0 + t_s[group] + t_c + t_i + rowdot(qs, q_c) + rowdot(qs, q_i)
                  + rowdot(q_c, q_i))
        Z = np.column_stack([np.ones(len(group)), qs + q_c + q_i])
        k = q_i.shape[1]
        reg = np.r_[model.reg_linear if model.fit_linear else np.inf,
                    np.full(k, float(model.reg_factors))]
        theta = _scoring.fold_in(Z, offset, y, group, len(users), reg, float(model.reg_power),
                                 logistic=is_classifier(model))
        w_u, v_u = theta[:, 0], theta[:, 1:]
        return t_s + w_u + rowdot(v_u, q_s), q_s + v_u

    # ------------------------------------------------------------------------ similar
    def similar_items(self, item_id, n: int = 10) -> pd.DataFrame:
        """Items whose q vectors point the same way as ``item_id``'s (cosine similarity).

        An item's q vector is the sum of the factor vectors of all its features (id and
        side features), the vector that meets the user's in every score, so items known
        only from ``item_features`` have one too.

        Returns
        -------
        pandas.DataFrame
            Columns ``item``, ``similar_item``, ``score`` (cosine) and ``rank``.
        """
        check_is_fitted(self, "model_")
        keys = self.items_
        return self._similar(keys, self._item_rows(keys), item_id, n, "item", "item")

    def similar_users(self, user_id, n: int = 10) -> pd.DataFrame:
        """Users whose q vectors (id, side and implicit features) are closest in cosine.

        Returns
        -------
        pandas.DataFrame
            Columns ``user``, ``similar_user``, ``score`` (cosine) and ``rank``.
        """
        check_is_fitted(self, "model_")
        keys = self.users_
        return self._similar(keys, self._user_rows(keys), user_id, n, "user", "user")

    def _similar(self, keys, rows, ids, n, what, part) -> pd.DataFrame:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        query = as_keys(pd.unique(as_keys([ids] if np.ndim(ids) == 0 else ids)))
        at = pd.Index(keys).get_indexer(query)
        if (at < 0).any():
            raise ValueError(f"unknown {what}(s) {shown(query[at < 0])}")
        # A model fitted by MCMC: every sample's q side by side, so that the cosine weighs
        # all samples (each chain state is one rotation of the embedding).
        q = np.hstack([_scoring.part_terms(rows, *parts[part])[1]
                       for _, parts in self._parts()])
        top, score = _scoring.cosine_top_n(q, at, n)
        return _ranked(what, query, f"similar_{what}", keys, top, score)

    # -------------------------------------------------------------------- partial_fit
    def partial_fit(self, interactions: pd.DataFrame, n_epochs: int = 1) -> Recommender:
        """Continue training on new interactions, growing the model for new entities.

        New users, items and context categories extend the encoders; the model grows by
        their columns (``grow``: w = 0, fresh factors) where the layout puts them, so every
        learned parameter keeps its meaning. Then ``n_epochs`` calls of the model's
        ``partial_fit`` run on the batch (with freshly sampled negatives for implicit
        feedback). With ``solver="sgd"`` this is online learning: AdaGrad steps on the
        batch's rows, so earlier learning carries over. With ``solver="als"`` each sweep
        re-solves every parameter the batch touches from the batch alone, except the
        intercept, which stays as it is: new entities are learned, but old users or items in
        the batch forget older data; prefer SGD for streaming updates, or refit.

        The first call on an unfitted Recommender is ``fit``.

        Parameters
        ----------
        interactions : pandas.DataFrame
            Same columns as for ``fit``.
        n_epochs : int, default=1

        Returns
        -------
        self : Recommender
        """
        if isinstance(n_epochs, bool) or not isinstance(n_epochs, numbers.Integral) \
                or n_epochs < 1:
            raise ValueError(f"n_epochs must be an integer >= 1, got {n_epochs!r}")
        if not hasattr(self, "model_"):
            return self.fit(interactions)
        self._check_params()
        if isinstance(self.model_, FMRanker):
            raise ValueError("partial_fit does not continue an FMRanker yet: refit with fit")
        df = self._check_interactions(interactions)
        groups = self.feature_groups_
        at = []
        if self._context is not None:
            at.append(self._context.extend(df[self._context_cols()]))
        users = as_keys(pd.unique(df[self.user_col]))
        new_users = users[self._users.index(users) < 0]
        items = as_keys(pd.unique(df[self.item_col]))
        new_items = items[self._items.index(items) < 0]
        if len(new_users):
            at.append(groups["user_id"].start
                      + self._users.ids.extend(pd.DataFrame({self.user_col: new_users})))
            implicit = self._items.implicit
            if implicit is not None:
                at.append(groups["item_implicit"].start + implicit.extend(
                    pd.DataFrame({implicit.multi_valued[0]: list_column([new_users])})))
        if len(new_items):
            implicit = self._users.implicit
            if implicit is not None:
                at.append(groups["user_implicit"].start + implicit.extend(
                    pd.DataFrame({implicit.multi_valued[0]: list_column([new_items])})))
            at.append(groups["item_id"].start
                      + self._items.ids.extend(pd.DataFrame({self.item_col: new_items})))
        at = np.concatenate(at) if at else np.empty(0, np.int64)
        if len(at):
            self.model_.grow(self.model_.n_features_in_ + len(at), at=at)
        self._add_seen(df)
        self._describe()
        X, y = self._training_rows(df)
        model = self.model_
        # An ALS sweep would re-solve the intercept from the batch alone (its mean, not the
        # data's); it stays where all the data put it.
        freeze = model.solver == "als" and model.fit_intercept
        if freeze:
            model.set_params(fit_intercept=False)
        try:
            for _ in range(int(n_epochs)):
                model.partial_fit(X, y)
        finally:
            if freeze:
                model.set_params(fit_intercept=True)
        return self

    # -------------------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Write the fitted recommender to ``path`` (.npz, no pickle); ``fmrec.load_model``
        reads it back.

        The file holds the model, the encoders of users, items and context, and the seen
        matrix; not the ``user_features`` / ``item_features`` frames (their encoded rows
        are kept), so the loaded recommender's parameters hold None for them.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (replaced if it exists; no suffix is added).
        """
        check_is_fitted(self, "model_")
        save_model(self, path)

    def _to_record(self) -> tuple[dict, dict]:
        """Arrays and JSON metadata (``fmrec.persistence``): the encoders and the seen matrix,
        and the model's own record (``model.`` arrays, ``model`` metadata)."""
        model_arrays, model_meta = to_record(self.model_)
        arrays = {**self._users.to_arrays("users"), **self._items.to_arrays("items"),
                  **csr_arrays(self.seen_, "seen")}
        if self._context is not None:
            arrays.update({f"context.{k}": v for k, v in self._context.to_arrays().items()})
        arrays.update({f"model.{k}": v for k, v in model_arrays.items()})
        params = self.get_params(deep=False)
        meta = {k: params[k] for k in ("user_col", "item_col", "target", "implicit",
                                       "negative_sampling")}
        meta["implicit_weight"] = float(self.implicit_weight)
        meta["negatives"] = int(self.negatives)
        meta["context"] = self._context_cols() or None
        rs = self.random_state
        meta["random_state"] = int(rs) if isinstance(rs, numbers.Integral) else None
        return arrays, {"format_version": model_meta["format_version"], "params": meta,
                        "model": model_meta}

    @classmethod
    def _from_record(cls, meta: dict, arrays: dict) -> Recommender:
        """The recommender ``_to_record`` described; the encoders, the seen matrix and the
        model must agree on the number of users, items and columns."""
        params = meta["params"]
        apart = sorted({"model", "user_features", "item_features"} & set(params))
        if apart:
            raise ValueError(f"params must not hold {apart} (stored apart, or not at all)")
        model = from_record(meta.get("model"), nested_arrays(arrays, "model"), _MODELS)
        rec = cls(**params, model=clone(model))
        try:
            rec._check_params()
        except TypeError as exc:
            raise ValueError(f"params: {exc}") from exc
        rec._restore_encoders(arrays)
        rec.seen_ = csr_from_arrays(arrays, "seen")
        rec.seen_.check_format(full_check=True)
        shape = (rec._users.widths[0], rec._items.widths[0])
        if rec.seen_.shape != shape:
            raise ValueError(f"inconsistent shape of the seen matrix: {rec.seen_.shape}, but "
                             f"the encoders know {shape[0]} users and {shape[1]} items")
        rec.popularity_ = np.asarray(rec.seen_.sum(axis=0)).ravel()
        rec.model_ = model
        rec._describe()
        if rec.feature_names_.shape != (model.n_features_in_,):
            raise ValueError(f"the encoders describe {len(rec.feature_names_)} columns but the "
                             f"model has {model.n_features_in_}")
        return rec

    def _restore_encoders(self, arrays: dict) -> None:
        """Users, items and context from a record; the side-feature matrices must match the
        encoders of their keys and columns."""
        try:
            self._users = Entities.from_arrays(self.user_col, arrays, "users",
                                               self.implicit_weight)
            self._items = Entities.from_arrays(self.item_col, arrays, "items",
                                               self.implicit_weight)
            ctx = nested_arrays(arrays, "context")
            self._context = FeatureEncoder.from_arrays(ctx) if ctx else None
        except KeyError as exc:
            raise ValueError(f"an encoder's array {exc.args[0]!r} is missing") from exc
        for what, entities in (("user", self._users), ("item", self._items)):
            keys, side_enc, side = entities.keys, entities.side_enc, entities.side
            want = (None if keys is None and side_enc is None else
                    (getattr(keys, "n_features_", None), getattr(side_enc, "n_features_", 0)))
            got = None if side is None else side.shape
            if got != want:
                raise ValueError(f"inconsistent {what} side features: a matrix of shape {got} "
                                 f"where the encoders give {want}")
            if side is not None:
                side.check_format(full_check=True)
