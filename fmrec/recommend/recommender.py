"""Recommender: interactions in, top-N lists out, on top of an FM and relation blocks.

The design of every interaction is ``[context | user block | item block]``: the context
columns of the row itself, then the user's block row ``[user id | user side features |
items the user interacted with (1/√n each, with implicit=True)]`` and the item's block row
``[item id | item side features]``, each stored once per entity (``fmrec.design``); an
:class:`~fmrec.recommend.dataset.InteractionDataset` builds them. Recommendation never
materializes a (user, item) row: the FM splits into user, item and context parts
(``fmrec.recommend.scoring``), so scoring every item for a batch of users is one matrix
product."""

from __future__ import annotations

import copy
import numbers

import numpy as np
import pandas as pd
from scipy.special import ndtr
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.utils.validation import check_is_fitted

from fmrec._links import sigmoid
from fmrec._validation import check_frame, check_interval
from fmrec.design import fm_output
from fmrec.models._base import restore_on_failure
from fmrec.models.fm import FMClassifier, FMRegressor
from fmrec.models.ranker import FMRanker
from fmrec.persistence import from_record, nested_arrays, register, save_model, to_record
from fmrec.recommend import blend as _blend
from fmrec.recommend import query
from fmrec.recommend import scoring as _scoring
from fmrec.recommend._entities import as_keys, check_keys, shown
from fmrec.recommend.dataset import InteractionDataset, context_columns
from fmrec.recommend.defaults import default_model

_UNKNOWN = ("error", "popular")
# What recommend orders by with a target, unless told otherwise: 0.3 of the target model's
# standardized score and 0.7 of the ranker's. Chosen on validation splits carved from
# MovieLens 100K u1.base and u2.base (benchmarks/bench_topn.py blend): of 0, 0.1, ..., 0.5,
# 0.7 and 1, 0.3 was best on u2 and 0.0005 NDCG@10 short of 0.4 on u1.
TARGET_WEIGHT = 0.3
# The Recommender's settings that are its dataset's too.
_DATASET_PARAMS = ("user_col", "item_col", "target", "context", "user_features",
                   "item_features", "implicit", "implicit_weight", "negatives",
                   "negative_sampling", "random_state")


_MODELS = (FMRegressor, FMClassifier, FMRanker)


def is_mcmc(model) -> bool:
    """The model was fitted by MCMC: its scores average its retained samples."""
    return hasattr(model, "samples_V_")


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
        an ``FMClassifier`` passed as ``model`` (``fmrec.default_model("label")`` is the one
        measured best untuned: the Bayesian FM). None means implicit feedback: every row is
        a positive, learnt for ranking by an ``FMRanker`` (BPR; the default) or, with an
        ``FMClassifier`` as ``model``, against ``negatives`` sampled negatives by log loss.
    model : FMRegressor, FMClassifier or FMRanker, optional
        Unfitted estimator whose hyperparameters to use (it is cloned; a ``random_state``
        of None takes this recommender's). Default (chosen by measurement, see
        ``fmrec.recommend.defaults``): with a target, the Bayesian FM (``FMRegressor(
        solver="mcmc", n_factors=8, n_epochs=200, n_samples=50)``), which needs no
        penalties; without, ``FMRanker()`` (BPR with hard negatives; an ``FMClassifier`` of
        16 factors when there is ``context``, which FMRanker does not take yet).
    user_features, item_features : pandas.DataFrame, optional
        One row per user (item): the id column plus side columns. Numeric columns are
        standardized numbers, columns whose cells are lists/tuples/sets are multi-valued
        (e.g. genres; weights sum to 1), anything else is categorical (cast numbers to
        ``str`` or ``category`` to make them categorical). Nullable and Arrow-backed dtypes
        count as their NumPy twins (``Int64``, ``Float64``, ``int64[pyarrow]`` are numeric;
        ``boolean``, ``string[pyarrow]`` categorical). A category (or token) held by one row
        only shares the ``"...=__infrequent__"`` feature with the other such ones: it would
        only repeat that entity's id. A categorical column whose values are nearly all
        distinct, such as a title (at least 95% of at least 20 non-missing values), is left
        out with a ``fmrec.UniqueColumnWarning`` (``dropped_columns_`` lists it). Entities
        that are here but not in the interactions are scored from these features alone
        (cold start). Not saved by ``save``: their encoded form is.
    context : list of str, optional
        Interaction columns that describe the occasion (hour, device...): the flat part.
        Typed and screened as side columns are (without the pooling of one-row categories).
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
    ranker : FMRanker, optional
        With a target: the unfitted ranking model (cloned; default ``FMRanker()``) that
        ``fit`` also trains, on the same interactions taken as positives, so that
        ``recommend`` reflects what users interact with as well as how they rate it (or what
        label they give). Unused without a target (the model then ranks) or with
        ``target_weight=1``. It takes no context: its scores are the same on every occasion,
        and context changes the order only through the target model.
    target_weight : float in [0, 1], default=0.3
        With a target, what ``recommend`` orders by: ``target_weight`` times the target
        model's standardized raw score (rating, or logit) plus ``1 - target_weight`` times
        the ranker's. 1 ranks by the target model alone (no ranker is fitted), 0 by the
        ranker alone. On MovieLens 100K (u1 split, relevant = rated >= 4) the rating model
        alone reaches NDCG@10 0.143, the ranker alone 0.429, the default blend 0.461;
        ``predict`` is the target model's either way.

    Notes
    -----
    Missing values (None, NaN, ``pd.NA``, ``NaT``) in side and context columns are data, not
    errors, at ``fit`` and at every later call (:class:`~fmrec.FeatureEncoder` has the
    details): a missing number is the column's training mean (0 once standardized) plus an
    indicator feature such as ``"user:age=<missing>"`` when the training column had missing
    values; a missing category is the category ``"user:gender=<missing>"`` if training saw
    one, else no feature (like an unseen category); a missing list is empty. A missing id or
    target raises ``ValueError`` naming the column and the row.

    Attributes
    ----------
    model_ : FMRegressor, FMClassifier or FMRanker
        The fitted model; its columns are those of ``feature_names_``. ``predict`` is its.
    ranker_ : FMRanker or None
        The ranking model fitted beside a target model (None when there is no blend), over
        the same columns.
    score_scale_ : ndarray of shape (2, 2) or None
        With a ranker: the (mean, standard deviation) of the target model's raw scores (row
        0) and of the ranker's (row 1) over random pairs of training users and items,
        measured at fit: what standardizes them in the blend.
    dataset_ : InteractionDataset
        The fitted encoders, seen matrix and popularity that build the model's rows (the
        attributes below read it).
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
    dropped_columns_ : dict of str to list
        Columns left out as identifier-like, by table: ``"user_features"``,
        ``"item_features"``, ``"context"`` (tables with none are absent).

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
                 random_state=None, ranker=None, target_weight=TARGET_WEIGHT):
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
        self.ranker = ranker
        self.target_weight = target_weight

    # ------------------------------------------------------------------------- checks
    def _check_params(self) -> None:
        if self.model is not None and not isinstance(self.model, _MODELS):
            raise TypeError(f"model must be an FMRegressor, FMClassifier or FMRanker, got "
                            f"{type(self.model).__name__}")
        self.make_dataset().check_params()
        check_interval("target_weight", self.target_weight, low=0, high=1)
        if self.ranker is not None and not isinstance(self.ranker, FMRanker):
            raise TypeError(f"ranker must be an FMRanker or None, got "
                            f"{type(self.ranker).__name__}")
        if isinstance(self.model, FMRanker):
            if self.target is not None:
                raise ValueError(f"FMRanker learns from implicit feedback (positives only): "
                                 f"target must be None, got {self.target!r}; use an "
                                 "FMRegressor or FMClassifier for a target")
            if context_columns(self.context):
                raise ValueError("FMRanker does not take context columns yet; use an "
                                 "FMClassifier with sampled negatives for context")

    def _default_model(self):
        """The model used when ``model`` is None (``fmrec.recommend.defaults``, chosen by
        measurement): BPR ranking for implicit feedback (log loss against sampled negatives
        when there is context, which FMRanker does not take), the Bayesian FM (MCMC) for a
        target."""
        if self.target is None:
            return default_model("implicit", has_context=bool(context_columns(self.context)))
        return default_model("rating")

    def make_model(self):
        """The unfitted model ``fit`` trains: a clone of ``model`` (or the default one) whose
        ``random_state``, if None, is this recommender's (when it is an integer)."""
        seed = self.random_state if isinstance(self.random_state, numbers.Integral) else None
        model = self._default_model() if self.model is None else clone(self.model)
        if model.random_state is None:
            model.set_params(random_state=seed)
        return model

    def make_ranker(self) -> FMRanker | None:
        """The unfitted ranking model ``fit`` trains beside a target model (a clone of
        ``ranker`` or ``FMRanker()``, seeded like ``make_model``), or None when ``recommend``
        ranks by the target model alone (no target, or ``target_weight=1``)."""
        if self.target is None or self.target_weight >= 1:
            return None
        seed = self.random_state if isinstance(self.random_state, numbers.Integral) else None
        ranker = FMRanker() if self.ranker is None else clone(self.ranker)
        if ranker.random_state is None:
            ranker.set_params(random_state=seed)
        return ranker

    def make_dataset(self, model=None) -> InteractionDataset:
        """The unfitted :class:`~fmrec.recommend.dataset.InteractionDataset` with this
        recommender's settings (a classifier's target when ``model``, by default
        ``make_model()``, is a classifier): what ``fit`` builds its rows with."""
        params = self.get_params(deep=False)
        model = model if model is not None else (self.model if self.model is not None
                                                 else self._default_model())
        return InteractionDataset(**{k: params[k] for k in _DATASET_PARAMS},
                                  classifier=is_classifier(model))

    @classmethod
    def from_fitted(cls, dataset: InteractionDataset, model, ranker: FMRanker | None = None,
                    target_weight: float = TARGET_WEIGHT) -> Recommender:
        """A fitted Recommender around a fitted ``dataset`` and a ``model`` fitted on its
        rows (``training_rows`` or ``ranking_data``); its settings are the dataset's.

        Parameters
        ----------
        dataset : InteractionDataset
        model : FMRegressor, FMClassifier or FMRanker
        ranker : FMRanker, optional
            With a target model: a ranker fitted on the dataset's interactions (see
            ``Recommender``'s ``ranker``), blended with weight ``target_weight``. Without
            it, ``recommend`` ranks by ``model`` alone (``target_weight`` is then 1).
        target_weight : float, default=0.3

        Returns
        -------
        Recommender

        Examples
        --------
        >>> import pandas as pd
        >>> from fmrec import FMRegressor, InteractionDataset, Recommender
        >>> df = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [10, 20, 10, 30],
        ...                    "rating": [5.0, 3.0, 4.0, 2.0]})
        >>> dataset = InteractionDataset(target="rating").fit(df)
        >>> model = FMRegressor(n_factors=2, n_epochs=3).fit(*dataset.training_rows(df))
        >>> Recommender.from_fitted(dataset, model).recommend([1])["item"].tolist()
        [30]
        """
        check_is_fitted(dataset, "seen_")
        if model.n_features_in_ != dataset.n_features:
            raise ValueError(f"the encoders describe {dataset.n_features} columns but the "
                             f"model has {model.n_features_in_}")
        ds_params = dataset.get_params(deep=False)
        if ranker is None and dataset.target is not None:
            target_weight = 1.0
        rec = cls(**{k: ds_params[k] for k in _DATASET_PARAMS}, model=clone(model),
                  ranker=None if ranker is None else clone(ranker),
                  target_weight=target_weight)
        rec.dataset_, rec.model_ = dataset, model
        rec.ranker_ = None
        rec.score_scale_ = None
        if rec.make_ranker() is not None:
            if ranker is None or ranker.n_features_in_ != dataset.n_features:
                raise ValueError("a blend of a target model and a ranker needs a ranker "
                                 "fitted on the dataset's columns")
            rec.ranker_ = ranker
            rec.score_scale_ = rec._calibrate()
        return rec

    # ------------------------------------------------------------- fitted attributes
    # The encoded data lives in ``dataset_``; these read it.
    seen_ = property(lambda self: self.dataset_.seen_)
    popularity_ = property(lambda self: self.dataset_.popularity_)
    users_ = property(lambda self: self.dataset_.users_)
    items_ = property(lambda self: self.dataset_.items_)
    feature_names_ = property(lambda self: self.dataset_.feature_names_)
    feature_groups_ = property(lambda self: self.dataset_.feature_groups_)
    dropped_columns_ = property(lambda self: self.dataset_.dropped_columns_)

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
        # A fit that fails leaves a fitted recommender as it was: every attribute is
        # replaced by a new object, so putting back the old references restores it.
        with restore_on_failure(self):
            self.__dict__.pop("model_", None)  # a refit starts afresh, labels included
            self.ranker_ = self.score_scale_ = None
            model = self.make_model()
            dataset = self.make_dataset(model)
            self.dataset_ = dataset.fit(interactions)
            if isinstance(model, FMRanker):
                self.model_ = model.fit(*dataset.ranking_data(interactions))
                return self
            X, y = dataset.training_rows(interactions)
            if model.solver == "mcmc" and model.groups is None:
                model.set_params(groups=dataset.feature_fields())
            self.model_ = model.fit(X, y)
            self._fit_ranker()
        return self

    def _fit_ranker(self) -> None:
        """Fit ``ranker_`` on every interaction counted in the seen matrix (each a positive,
        as many times as it occurred) and measure the blend's standardization."""
        ranker = self.make_ranker()
        if ranker is None:
            return
        self.ranker_ = fit_blend_ranker(ranker, self.dataset_)
        self.score_scale_ = self._calibrate()

    def _calibrate(self) -> np.ndarray:
        """(mean, std) of the target model's and the ranker's raw scores on training pairs."""
        return _blend.calibrate(self.dataset_, [self._parts(self.model_),
                                                self._parts(self.ranker_)], self.random_state)

    # ------------------------------------------------------------------------ predict
    def _output(self, raw: np.ndarray) -> np.ndarray:
        """What ``recommend`` reports for raw scores: for one model what ``predict`` gives
        (the clipped rating or P(positive)), for a blend the blended standardized score."""
        model = self.model_
        if isinstance(model, FMRanker) or getattr(self, "ranker_", None) is not None:
            return raw  # a ranking score, on no particular scale
        if is_classifier(model) and is_mcmc(model):
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
        cols = context_columns(self.context)
        check_frame(df, [self.user_col, self.item_col] + cols, "df")
        if len(df) == 0:
            return np.empty(0)
        for col in (self.user_col, self.item_col):
            check_keys(df, col, "df")
        X = self.dataset_.design(df[self.user_col].to_numpy(), df[self.item_col].to_numpy(),
                                 df[cols] if cols else None)
        if isinstance(self.model_, FMRanker):
            m = self.model_
            return fm_output(X, m.w0_, m.w_, m.V_)
        if is_classifier(self.model_):
            return self.model_.predict_proba(X)[:, 1]
        return self.model_.predict(X)

    # ---------------------------------------------------------------------- recommend
    def _parts(self, model=None) -> list[tuple[float, dict]]:
        """w0 and the float64 (w, V) of the context, user and item columns of ``model`` (by
        default ``model_``), one pair per parameter set (``blend.parameter_parts``)."""
        return _blend.parameter_parts(self.model_ if model is None else model,
                                      self.feature_groups_)

    def _components(self) -> list[tuple]:
        """(model, weight, shift, parameter parts) of each model in recommend's score."""
        return [(m, weight, shift, self._parts(m)) for m, weight, shift in _blend.components(
            self.model_, getattr(self, "ranker_", None), getattr(self, "score_scale_", None),
            self.target_weight)]

    def _terms(self, users, candidates, hist, folded, context):
        """(a, b, q_i, t_i) of recommend's score b[u] + t_i[i] + a[u]·q_i[i]."""
        return _blend.score_terms(self.dataset_, self._components(), users, candidates, hist,
                                  folded, context)

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
            sampled negatives each, as in training. An FMRanker (the model, or the ranker
            of a blend) folds the user's factor vector in by its own BPR objective: Newton
            steps on the pairwise log loss of each history item against sampled unseen
            items, under a Gaussian prior whose strength was measured (see
            ``fmrec.recommend.foldin``).
        unknown : {"error", "popular"}, default="error"
            What to do with users that are not in training, ``user_features`` or
            ``history``: raise ``ValueError`` naming them, or give them the most popular
            training items (by interaction count; ``score`` is still the model's score of
            the pair for a user without features).

        Returns
        -------
        pandas.DataFrame
            Columns ``user``, ``item``, ``score`` and ``rank`` (1 = best), sorted by user,
            then rank. ``score`` is what the order follows: what ``predict`` gives for the
            pair when one model ranks (no target, or ``target_weight=1``); for a blend of a
            target model and a ranker, ``target_weight`` times the target model's
            standardized raw score plus ``1 - target_weight`` times the ranker's (0 is an
            average pair of the training data; call ``predict`` on the pairs for their
            ratings). A user has fewer than ``n`` rows when fewer candidates are left.
        """
        check_is_fitted(self, "model_")
        check_interval("n", n, low=1, integer=True)
        if unknown not in _UNKNOWN:
            raise ValueError(f"unknown must be one of {list(_UNKNOWN)}, got {unknown!r}")
        users = as_keys(pd.unique(as_keys([user_ids] if np.ndim(user_ids) == 0
                                            else user_ids)))
        try:
            users = users[np.argsort(users, kind="stable")]
        except TypeError:  # ids of mixed types: keep the given order
            pass
        candidates = query.candidates(self.dataset_, items)
        hist = query.history_frame(self.dataset_, history)
        folded = (np.zeros(len(users), bool) if hist is None
                  else pd.Index(users).isin(pd.unique(hist[self.user_col])))
        vocab = self.dataset_.user_vocab_
        cold = ~folded & (vocab.index(users) < 0) & (vocab.side_index(users) < 0)
        if cold.any() and unknown == "error":
            raise ValueError(f"unknown user(s) {shown(users[cold])}: not in the training "
                             "data, user_features or history (use unknown='popular')")
        a, b, q_i, t_i = self._terms(users, candidates, hist, folded, context)
        exclude = (query.exclusions(self.dataset_, users, candidates, hist) if exclude_seen
                   else None)
        top, raw = _scoring.top_n(a, b, q_i, t_i, n, exclude)
        if cold.any():
            # Users without any feature: the most popular items, scored by the model.
            pop = np.zeros(len(candidates))
            at = self.dataset_.item_vocab_.index(candidates)
            pop[at >= 0] = self.popularity_[at[at >= 0]]
            best = np.argsort(-pop, kind="stable")[:top.shape[1]]
            rows = np.flatnonzero(cold)
            top[rows] = best
            raw[rows] = b[rows, None] + t_i[best] + a[rows] @ q_i[best].T
        return query.ranked("user", users, "item", candidates, top, self._output(raw))

    # ------------------------------------------------------------------------ similar
    def similar_items(self, item_id, n: int = 10) -> pd.DataFrame:
        """Items whose q vectors point the same way as ``item_id``'s (cosine similarity).

        An item's q vector is the sum of the factor vectors of all its features (id and
        side features), the vector that meets the user's in every score, so items known
        only from ``item_features`` have one too. With a blend, the target model's and the
        ranker's vectors side by side, weighted as in ``recommend``'s score.

        Returns
        -------
        pandas.DataFrame
            Columns ``item``, ``similar_item``, ``score`` (cosine) and ``rank``.
        """
        check_is_fitted(self, "model_")
        keys = self.items_
        return self._similar(keys, self.dataset_.item_rows(keys), item_id, n, "item", "item")

    def similar_users(self, user_id, n: int = 10) -> pd.DataFrame:
        """Users whose q vectors (id, side and implicit features) are closest in cosine.

        Returns
        -------
        pandas.DataFrame
            Columns ``user``, ``similar_user``, ``score`` (cosine) and ``rank``.
        """
        check_is_fitted(self, "model_")
        keys = self.users_
        return self._similar(keys, self.dataset_.user_rows(keys), user_id, n, "user", "user")

    def _similar(self, keys, rows, ids, n, what, part) -> pd.DataFrame:
        check_interval("n", n, low=1, integer=True)
        wanted = as_keys(pd.unique(as_keys([ids] if np.ndim(ids) == 0 else ids)))
        at = pd.Index(keys).get_indexer(wanted)
        if (at < 0).any():
            raise ValueError(f"unknown {what}(s) {shown(wanted[at < 0])}")
        # Every sample's q (a model fitted by MCMC: each chain state is one rotation of the
        # embedding) and every blended model's side by side, weighted as in the scores.
        q = _blend.entity_vectors(self._components(), rows, part)
        top, score = _scoring.cosine_top_n(q, at, n)
        return query.ranked(what, wanted, f"similar_{what}", keys, top, score)

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

        A ranker blended with the target model (``ranker_``) cannot continue on a batch: it
        is fitted again, from scratch, on every interaction seen so far (the seen matrix),
        and the blend's standardization is measured again.

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
        check_interval("n_epochs", n_epochs, low=1, integer=True)
        if not hasattr(self, "model_"):
            return self.fit(interactions)
        self._check_params()
        if isinstance(self.model_, FMRanker):
            raise ValueError("partial_fit does not continue an FMRanker yet: refit with fit")
        # All or nothing: the batch grows and trains copies of the dataset and the model, so
        # a batch that fails half-way (a bad value in a column, a diverging step) leaves
        # the vocabulary, the seen matrix and the model as they were.
        with restore_on_failure(self):
            self.dataset_, self.model_ = copy.deepcopy(self.dataset_), copy.deepcopy(self.model_)
            at = self.dataset_.grow(interactions)
            if len(at):
                self.model_.grow(self.model_.n_features_in_ + len(at), at=at)
            X, y = self.dataset_.training_rows(interactions)
            model = self.model_
            # An ALS sweep would re-solve the intercept from the batch alone (its mean, not
            # the data's); it stays where all the data put it.
            freeze = model.solver == "als" and model.fit_intercept
            if freeze:
                model.set_params(fit_intercept=False)
            try:
                for _ in range(int(n_epochs)):
                    model.partial_fit(X, y)
            finally:
                if freeze:
                    model.set_params(fit_intercept=True)
            if getattr(self, "ranker_", None) is not None:
                self._fit_ranker()
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
        """Arrays and JSON metadata (``fmrec.persistence``): the dataset's encoders and seen
        matrix, and the model's own record (``model.`` arrays, ``model`` metadata)."""
        model_arrays, model_meta = to_record(self.model_)
        arrays = self.dataset_.to_arrays()
        arrays.update({f"model.{k}": v for k, v in model_arrays.items()})
        extra = {}
        if getattr(self, "ranker_", None) is not None:
            ranker_arrays, extra["ranker"] = to_record(self.ranker_)
            arrays.update({f"ranker.{k}": v for k, v in ranker_arrays.items()})
            extra["score_scale"] = self.score_scale_.tolist()
        params = self.get_params(deep=False)
        meta = {k: params[k] for k in ("user_col", "item_col", "target", "implicit",
                                       "negative_sampling")}
        meta["implicit_weight"] = float(self.implicit_weight)
        meta["target_weight"] = float(self.target_weight)
        meta["negatives"] = int(self.negatives)
        meta["context"] = context_columns(self.context) or None
        rs = self.random_state
        meta["random_state"] = int(rs) if isinstance(rs, numbers.Integral) else None
        return arrays, {"format_version": model_meta["format_version"], "params": meta,
                        "model": model_meta, **extra}

    @classmethod
    def _from_record(cls, meta: dict, arrays: dict) -> Recommender:
        """The recommender ``_to_record`` described; the dataset checks its encoders against
        its seen matrix, ``from_fitted`` the model's columns against the encoders. Files
        written before rankers were blended in (no ``target_weight``) rank by the model
        alone, as they did."""
        params = dict(meta["params"])
        apart = sorted({"model", "ranker", "user_features", "item_features"} & set(params))
        if apart:
            raise ValueError(f"params must not hold {apart} (stored apart, or not at all)")
        model = from_record(meta.get("model"), nested_arrays(arrays, "model"), _MODELS)
        ranker = None
        if "ranker" in meta:
            ranker = from_record(meta["ranker"], nested_arrays(arrays, "ranker"), FMRanker)
        elif params.get("target") is not None:
            params.setdefault("target_weight", 1.0)
        rec = cls(**params, model=clone(model))
        try:
            rec._check_params()
        except TypeError as exc:
            raise ValueError(f"params: {exc}") from exc
        settings = rec.make_dataset(model).get_params(deep=False)
        classes = getattr(model, "classes_", None) if settings["target"] is not None else None
        dataset = InteractionDataset.from_arrays(arrays, classes=classes, **settings)
        if (ranker is None) != (rec.make_ranker() is None):
            raise ValueError(f"target_weight={rec.target_weight} and target="
                             f"{rec.target!r} " + ("need a ranker, which the file lacks"
                                                   if ranker is None else
                                                   "use no ranker, but the file has one"))
        rec = cls.from_fitted(dataset, model, ranker, rec.target_weight)
        if ranker is not None:
            scale = np.asarray(meta.get("score_scale"), dtype=np.float64)
            if scale.shape != (2, 2) or not np.isfinite(scale).all() or (scale[:, 1] <= 0).any():
                raise ValueError(f"score_scale must be 2 (mean, std > 0) pairs, got "
                                 f"{meta.get('score_scale')!r}")
            rec.score_scale_ = scale
        return rec


def fit_blend_ranker(ranker: FMRanker, dataset: InteractionDataset) -> FMRanker:
    """``ranker`` fitted as a blend's ranker: on every interaction of ``dataset``'s seen
    matrix (each a positive, as many times as it occurred), without the implicit sets."""
    ranker.fit(*dataset.seen_ranking_data())
    # The implicit sets were left out of its rows: their parameters are unused, not the
    # random start they kept.
    unused = dataset.implicit_columns()
    ranker.w_[unused], ranker.V_[unused] = 0.0, 0.0
    return ranker
