"""What a search tunes: a plain estimator on arrays, or a Recommender on interactions.

A task splits the data into folds (a validation split or k folds) and knows how to fit a model
on a fold, score it after every epoch, and refit the best configuration on all the data. A
Recommender's folds encode their training part once, through an
:class:`~fmrec.recommend.dataset.InteractionDataset`; every trial then fits only its model.
"""

from __future__ import annotations

import numbers
import re
import threading

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import clone, is_classifier

from fmrec.metrics import METRICS, ranking_metrics
from fmrec.models.ranker import FMRanker
from fmrec.recommend.dataset import implicit_sides
from fmrec.recommend.recommender import Recommender, fit_blend_ranker
from fmrec.split import kfold_split, train_test_split

_RANKING = re.compile(r"^(precision|recall|ndcg|map|hit_rate)@([1-9][0-9]*)$")
# A Recommender's own settings that a search space may hold beside its model's: they change
# the encoded rows (implicit sets, their weight, the sampled negatives).
RECOMMENDER_PARAMS = frozenset({"implicit", "implicit_weight", "negatives",
                                "negative_sampling"})
_CACHED_ENCODINGS = 4


class EstimatorFold:
    """One (train, validation) pair of arrays; the estimator scores itself through eval_set."""

    def __init__(self, train: tuple, valid: tuple, metric: str):
        self.train, self.valid, self.metric = train, valid, metric

    def score(self, estimator, logs):
        return logs[f"val_{self.metric}"]

    def fit(self, model, watch):
        model.fit(*self.train, eval_set=self.valid, callbacks=[watch])


class EstimatorTask:
    """(X, y[, sample_weight]) for a plain estimator: a validation split or k folds."""

    outer_params: frozenset = frozenset()
    has_implicit = False

    def __init__(self, estimator, data, metric, validation, cv, random_state):
        allowed = ("logloss", "auc") if is_classifier(estimator) else ("rmse", "mae")
        self.metric = allowed[0] if metric is None else metric
        if self.metric not in allowed:
            raise ValueError(f"metric must be one of {list(allowed)} for "
                             f"{type(estimator).__name__}, got {metric!r}")
        self.greater_is_better = METRICS[self.metric][1]
        self.user_model = clone(estimator)
        self.template = clone(estimator).set_params(eval_metric=self.metric)
        if isinstance(validation, tuple):
            if data is not None or len(validation) != 2:
                raise ValueError("with an explicit validation=(train, valid) pair, data must "
                                 "be None")
            train = _unpack(validation[0], "the training part of validation")
            valid = _unpack(validation[1], "the validation part of validation")
            self.full = tuple(_stack(a, b) for a, b in zip(train, valid, strict=True))
            self._folds = [EstimatorFold(train, valid, self.metric)]
            return
        self.full = _unpack(data, "data")
        n = self.full[1].shape[0]
        order = np.random.default_rng(random_state).permutation(n)
        if cv is None:
            parts = [order[:held_out(validation, n)]]
        else:
            if n < cv:
                raise ValueError(f"cv={cv} folds need at least {cv} rows, data has {n}")
            parts = np.array_split(order, cv)
        self._folds = []
        for held in parts:
            keep = np.ones(n, dtype=bool)
            keep[held] = False
            self._folds.append(EstimatorFold(_take(self.full, np.flatnonzero(keep)),
                                              _take(self.full, np.sort(held)), self.metric))

    def folds(self, outer: dict) -> list:
        return self._folds

    def refit(self, model, outer: dict):
        return model.fit(*self.full)


class RecommenderFold:
    """One (train, validation) pair of interaction frames for a Recommender.

    The dataset is fitted once on the training part and its rows built once; every trial
    fits only its model on them.
    """

    def __init__(self, recommender: Recommender, model, train, valid, metric, k):
        self.metric, self.k = metric, k
        self.ranker, self.target_weight = None, 1.0
        self.dataset = dataset = recommender.make_dataset(model).fit(train)
        self.ranking = isinstance(model, FMRanker)
        if self.ranking:
            self.data = dataset.ranking_data(train)
        else:
            self.X, self.y = dataset.training_rows(train)
        user, item, target = recommender.user_col, recommender.item_col, recommender.target
        if k is None:
            cols = dataset.context_cols
            self.eval_set = (dataset.design(valid[user].to_numpy(), valid[item].to_numpy(),
                                            valid[cols] if cols else None),
                             dataset.targets(valid[target], "validation"))
        else:
            relevant = valid
            if target is not None and is_classifier(model):
                relevant = valid[valid[target] == dataset.classes_[1]]
            if relevant.empty:
                raise ValueError("the validation part has no relevant interaction to rank")
            self.relevant = relevant[[user, item]].rename(columns={user: "user", item: "item"})
            self.eval_set = None
            # A target model's lists are blended with a ranker's after the refit: trials are
            # ranked by that blend (the ranker depends on no searched setting, so each fold
            # fits it once).
            ranker = None if self.ranking else recommender.make_ranker()
            if ranker is not None:
                self.ranker = fit_blend_ranker(ranker, dataset)
                self.target_weight = recommender.target_weight

    def score(self, estimator, logs):
        if self.k is None:
            return logs[f"val_{self.metric}"]
        # A Recommender around the shared dataset and this trial's model: trials on several
        # threads never write to anything they share.
        rec = Recommender.from_fitted(self.dataset, estimator, ranker=self.ranker,
                                      target_weight=self.target_weight)
        recs = rec.recommend(self.relevant["user"].unique(), n=self.k, unknown="popular")
        return ranking_metrics(recs, self.relevant, k=self.k)[self.metric]

    def fit(self, model, watch):
        if self.ranking:
            model.fit(*self.data, callbacks=[watch])
        else:
            model.fit(self.X, self.y, eval_set=self.eval_set, callbacks=[watch])


class RecommenderTask:
    """Interactions for a Recommender: a per-user validation split or per-user k folds.

    The Recommender's own settings in ``OUTER_PARAMS`` may be searched too; they change the
    encoded rows, so the folds are encoded again for each new combination of them (the last
    few are cached).
    """

    outer_params = RECOMMENDER_PARAMS

    def __init__(self, recommender, data, metric, validation, cv, random_state):
        if isinstance(validation, tuple):
            if data is not None or len(validation) != 2:
                raise ValueError("with an explicit validation=(train, valid) pair, data must "
                                 "be None")
            train, valid = (_frame(part, what) for part, what in
                            zip(validation, ("training part", "validation part"), strict=True))
            self.full = pd.concat([train, valid], ignore_index=True)
            self.splits = [(train, valid)]
        else:
            self.full = _frame(data, "data")
            if cv is None:
                held_out(validation, len(self.full))
                self.splits = [train_test_split(self.full, method="per_user",
                                                test_size=validation,
                                                user_col=recommender.user_col,
                                                random_state=random_state)]
            else:
                self.splits = kfold_split(self.full, cv, method="per_user",
                                          user_col=recommender.user_col,
                                          random_state=random_state)
        self.recommender = recommender
        self.has_implicit = bool(implicit_sides(recommender.implicit))
        model = recommender.make_model()  # what fit would use, so that it can be tuned
        self._set_metric(metric, model, recommender.target)
        self.user_model = clone(model)
        if self.k is None:
            model = clone(model).set_params(eval_metric=self.metric)
        self.template = clone(model)
        self._cache: dict[tuple, list[RecommenderFold]] = {}
        self._lock = threading.Lock()
        self.folds({})  # encodes the data now, so that bad input fails before any trial

    def __getstate__(self) -> dict:
        # Sent to Dask workers: a lock does not pickle, and each process needs its own.
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def folds(self, outer: dict) -> list[RecommenderFold]:
        key = tuple(sorted((k, repr(v)) for k, v in outer.items()))
        with self._lock:
            if key not in self._cache:
                if len(self._cache) >= _CACHED_ENCODINGS:
                    self._cache.pop(next(iter(self._cache)))
                rec = clone(self.recommender).set_params(**outer)
                self._cache[key] = [
                    RecommenderFold(rec, self.template, train, valid, self.metric, self.k)
                    for train, valid in self.splits]
            return self._cache[key]

    def _set_metric(self, metric, model, target):
        classifier = is_classifier(model)
        if metric is None:
            metric = "ndcg@10" if target is None else "logloss" if classifier else "rmse"
        match = _RANKING.match(metric) if isinstance(metric, str) else None
        pointwise = () if target is None else ("logloss", "auc") if classifier else ("rmse",
                                                                                  "mae")
        if match is None and metric not in pointwise:
            raise ValueError(f"metric must be one of {list(pointwise)} or a ranking metric "
                             f"such as 'ndcg@10' or 'precision@5' for this Recommender, got "
                             f"{metric!r}")
        self.metric = metric
        self.k = None if match is None else int(match.group(2))
        self.greater_is_better = True if match else METRICS[metric][1]

    def refit(self, model, outer: dict):
        return clone(self.recommender).set_params(model=model, **outer).fit(self.full)


# --------------------------------------------------------------------------------------- Dask
def _unpack(data, what: str) -> tuple:
    if not isinstance(data, tuple | list) or len(data) not in (2, 3):
        raise ValueError(f"{what} must be a tuple (X, y) or (X, y, sample_weight)")
    X, y = data[0], np.asarray(data[1])
    X = X.tocsr() if sp.issparse(X) else np.asarray(X)
    if y.ndim != 1 or y.shape[0] == 0:
        raise ValueError(f"{what} is empty or y is not 1-D (shape {y.shape})")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{what}: X has {X.shape[0]} rows but y has {y.shape[0]}")
    return (X, y) if len(data) == 2 or data[2] is None else (X, y, np.asarray(data[2]))


def _take(parts: tuple, rows: np.ndarray) -> tuple:
    return tuple(part[rows] for part in parts)


def _stack(a, b):
    if sp.issparse(a):
        return sp.vstack([a, b], format="csr")
    return np.concatenate([a, b])


def _frame(df, what: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame of interactions for a Recommender, "
                        f"got {type(df).__name__}")
    if len(df) == 0:
        raise ValueError(f"{what} is empty: nothing to tune on")
    return df


def held_out(validation, n: int) -> int:
    if isinstance(validation, bool) or not isinstance(validation, numbers.Real) \
            or not 0.0 < float(validation) < 1.0:
        raise ValueError(f"validation must be a fraction strictly between 0 and 1 or a "
                         f"(train, valid) pair, got {validation!r}")
    n_valid = int(round(float(validation) * n))
    if n_valid < 1 or n - n_valid < 1:
        raise ValueError(f"validation={validation} of {n} rows leaves an empty training or "
                         "validation part")
    return n_valid
