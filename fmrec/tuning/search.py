"""Hyperparameter search with Optuna for FM estimators and recommenders.

Every trial fits a model on a training part and scores it after each epoch on a validation
part through the estimators' ``callback(estimator, epoch, logs)``: the score is reported to
Optuna (so a pruner can stop a hopeless trial early) and drives early stopping, and the
best epoch count is kept as the trial's ``n_epochs`` user attribute so that the refit on all
the data runs exactly as long as the best trial needed.

With a Dask client the same trials run in optimize loops on the workers, sharing the study
through Optuna's ``DaskStorage`` on the scheduler; only the refit runs in the caller's process.
"""

from __future__ import annotations

import copy
import math
import numbers
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pandas as pd
import scipy.sparse as sp
from sklearn.base import clone, is_classifier
from threadpoolctl import threadpool_limits

from fmrec._validation import resolve_n_jobs
from fmrec.metrics import METRICS, ranking_metrics
from fmrec.models.fm import FMClassifier, FMRegressor
from fmrec.models.ranker import FMRanker
from fmrec.recommend.recommender import Recommender
from fmrec.split import kfold_split, train_test_split
from fmrec.tuning import space as _tune_space

if TYPE_CHECKING:
    import distributed

__all__ = ["TuneResult", "tune"]

_RANKING = re.compile(r"^(precision|recall|ndcg|map|hit_rate)@([1-9][0-9]*)$")
_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
# A Recommender's own settings that a search space may hold beside its model's: they change
# the encoded rows (implicit sets, their weight, the sampled negatives).
RECOMMENDER_PARAMS = frozenset({"implicit", "implicit_weight", "negatives",
                                "negative_sampling"})
_CACHED_ENCODINGS = 4


@dataclass
class TuneResult:
    """What :func:`tune` found.

    Attributes
    ----------
    study : optuna.Study
        Every trial, with ``user_attrs["n_epochs"]`` (best epoch count) and
        ``user_attrs["epochs_run"]`` (epochs actually fitted).
    best_params : dict
        Hyperparameters of the best trial (what the search space produced).
    best_score : float
        Its validation score.
    best_model : FMRegressor, FMClassifier, Recommender or None
        Refitted on all the data with ``best_params`` and the best trial's epoch count;
        None with ``refit=False``.
    metric : str
        The validation metric.
    """

    study: optuna.Study
    best_params: dict
    best_score: float
    best_model: Any
    metric: str


def tune(
    estimator_or_recommender: FMRegressor | FMClassifier | Recommender,
    data,
    *,
    n_trials: int = 20,
    timeout: float | None = None,
    metric: str | None = None,
    validation: float | tuple = 0.1,
    cv: int | None = None,
    search_space: _tune_space.SearchSpace | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    random_state: int | None = None,
    n_jobs: int | None = None,
    refit: bool = True,
    early_stopping_rounds: int | None = 5,
    callbacks: Sequence[Callable] | None = None,
    client: distributed.Client | None = None,
) -> TuneResult:
    """Search the hyperparameters of an FM estimator or a Recommender with Optuna.

    Parameters
    ----------
    estimator_or_recommender : FMRegressor, FMClassifier or Recommender
        Unfitted template; the search overrides some of its (or its ``model``'s) parameters.
        Its ``n_epochs`` is the most a trial runs.
    data : tuple or pandas.DataFrame
        For an estimator ``(X, y)`` or ``(X, y, sample_weight)``; for a Recommender the
        interactions frame.
    n_trials : int, default=20
        Trials the study should hold in the end: completed and pruned trials already in a
        resumed study count, so a rerun after an interruption only runs the remainder.
    timeout : float, optional
        Stop starting new trials after this many seconds.
    metric : str, optional
        "rmse" or "mae" (regression, the default "rmse"), "logloss" (classification default)
        or "auc"; for a Recommender also "precision@k", "recall@k", "ndcg@k", "map@k" or
        "hit_rate@k" from ``recommend`` against the held-out interactions (the default for
        implicit feedback is "ndcg@10"). With a label target only positive rows count as
        relevant.
    validation : float or tuple, default=0.1
        Fraction held out (random rows for an estimator, a per-user split for a
        Recommender), or an explicit ``(train, valid)`` pair of data as above.
    cv : int, optional
        Cross-validate instead: ``cv`` folds (random rows for an estimator, each user's
        interactions dealt over the folds for a Recommender, see
        :func:`fmrec.split.kfold_split`); a trial fits one model per fold and scores the mean
        of their best validation scores, and its ``n_epochs`` is the folds' mean best epoch
        count. Only the first fold reports to the pruner, so a pruned trial costs at most one
        fit. ``validation`` is then unused.
    search_space : dict or callable, optional
        ``name -> optuna distribution`` (or a list of choices), or ``space(trial) -> dict``
        of parameters. Default: n_factors in {4, 8, 16, 32}; reg_linear, reg_factors
        log-uniform in [1e-2, 10]; init_std log-uniform in [1e-3, 0.3]; with SGD also
        learning_rate log-uniform in [1e-3, 0.3]; with MCMC only n_factors (the sampler
        draws its own penalties); for a Recommender with implicit features
        also implicit_weight log-uniform in [0.25, 8]. For a Recommender the space may hold
        its ``implicit``, ``implicit_weight``, ``negatives`` and ``negative_sampling``: the
        data is then encoded again for each new combination of them.
    storage, study_name : optional
        An Optuna storage URL (e.g. ``"sqlite:///tune.db"``) and study name: an existing
        study of that name is resumed.
    sampler, pruner : optional
        Default: ``TPESampler(seed=random_state)`` and
        ``MedianPruner(n_startup_trials=5, n_warmup_steps=5)``; pass
        ``optuna.pruners.NopPruner()`` to never prune.
    random_state : int, optional
        Seeds the split, the sampler and (unless they have their own) the models. With
        ``n_jobs=1`` and the ALS solver a search is reproducible; with a client it is not
        (trials end in whatever order the workers finish them).
    n_jobs : int, optional
        Trials run at once. Without a client: threads (default 1; -1: one per core); each
        model then gets ``max(1, cores // n_jobs)`` kernel threads so that the trials
        together stay within the cores, and BLAS is held to one thread during the search.
        With a client: optimize loops on the workers (default and -1: one per worker
        thread of the cluster, -2 one fewer, ...), dealt over the workers in turn; the
        fits of a worker's loops share its threads (one each when every thread has a loop).
    refit : bool, default=True
        Refit the best configuration on all the data (train and validation).
    early_stopping_rounds : int or None, default=5
        A trial stops after this many epochs without a better validation score (not with
        ``solver="mcmc"``, whose trials and refit run every sweep).
    callbacks : sequence of callables, optional
        Optuna study callbacks ``cb(study, frozen_trial)``, called after every trial. With a
        client they run in this process as trials end (the study is polled every half
        second), in order of completion, and ``study`` may then already hold trials that
        ended after ``frozen_trial``. ``study.stop()`` (or an exception) ends the workers'
        loops after their current trials.
    client : distributed.Client, optional
        Run the trials on the workers of this Dask cluster (needs ``distributed`` and
        ``optuna-integration``). The study then lives on the scheduler in Optuna's
        ``DaskStorage``, wrapping ``storage`` (a URL is opened by the scheduler, so a
        relative sqlite path is relative to the scheduler's working directory) or, without
        one, a study in memory there. The data goes to each worker once; each trial is an
        ordinary fit there, reporting every epoch through the scheduler so that the pruner
        weighs the trials of all workers. ``n_trials``, ``timeout`` (per loop, from its
        start) and resuming mean what they mean without a client, the refit runs here and
        ``TuneResult.study`` is a copy in this process's memory. The workers need fmrec
        and their Optuna logging follows this process's.

    Returns
    -------
    TuneResult

    Examples
    --------
    >>> from fmrec import FMRegressor
    >>> from fmrec.datasets import make_fm_regression
    >>> from fmrec import tune
    >>> import optuna
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> X, y, _ = make_fm_regression(n_samples=500, n_features=50)
    >>> result = tune(FMRegressor(n_epochs=10), (X, y), n_trials=3, random_state=0)
    >>> sorted(result.best_params)
    ['init_std', 'n_factors', 'reg_factors', 'reg_linear']

    On a Dask cluster (here two local worker processes):

    >>> from distributed import Client, LocalCluster  # doctest: +SKIP
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
    >>> result = tune(FMRegressor(n_epochs=10), (X, y), n_trials=8,
    ...               client=client)  # doctest: +SKIP
    """
    _check_cv(cv, validation)
    if isinstance(estimator_or_recommender, Recommender):
        task = _RecommenderTask(estimator_or_recommender, data, metric, validation, cv,
                                random_state)
    elif isinstance(estimator_or_recommender, FMRegressor | FMClassifier):
        task = _EstimatorTask(estimator_or_recommender, data, metric, validation, cv,
                              random_state)
    else:
        raise TypeError(f"tune needs an FMRegressor, FMClassifier or Recommender, got "
                        f"{type(estimator_or_recommender).__name__}")
    _check_count("n_trials", n_trials)
    if early_stopping_rounds is not None:
        _check_count("early_stopping_rounds", early_stopping_rounds)
    template = task.template
    allowed = (set(template.get_params()) - {"n_jobs", "verbose"}) | task.outer_params
    solver = getattr(template, "solver", "bpr")  # FMRanker: BPR, by SGD
    space = search_space
    if space is None:
        space = _tune_space.default_space(solver, implicit=task.has_implicit)
    _tune_space.check_space(space, allowed)

    if client is None:
        parallel, model_threads = _threads(1 if n_jobs is None else n_jobs)
    else:
        _check_n_jobs(n_jobs, allow_none=True)
        model_threads = 1  # each loop on the cluster sets its own, from its worker's share
    # A Gibbs chain's posterior mean improves with every sample: no early stopping, and the
    # refit runs the template's sweeps (pruning still stops hopeless trials).
    mcmc = solver == "mcmc"
    patience = None if mcmc else early_stopping_rounds
    metric = task.metric
    sampler = optuna.samplers.TPESampler(seed=random_state) if sampler is None else sampler
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)
              if pruner is None else pruner)
    objective = _Objective(task, space, allowed, model_threads, random_state, patience)
    callbacks = list(callbacks or ())
    if client is None:
        study = _open_study(storage, study_name, task, sampler, pruner)
        remaining = n_trials - sum(t.state in _FINISHED for t in study.trials)
        if remaining > 0:
            with threadpool_limits(limits=1, user_api="blas"):
                study.optimize(objective, n_trials=remaining, timeout=timeout,
                               n_jobs=parallel, callbacks=callbacks, gc_after_trial=False)
    else:
        from fmrec.tuning.cluster import search_on_cluster

        study = search_on_cluster(client, storage, study_name, task, sampler, pruner,
                                   objective, n_trials=n_trials, n_jobs=n_jobs,
                                   timeout=timeout, callbacks=callbacks)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise RuntimeError(f"no trial of study {study.study_name!r} completed (all pruned or "
                           "failed); allow more trials, a gentler pruner or another space")
    best = study.best_trial
    best_params = dict(best.user_attrs.get("params", best.params))
    best_model = None
    if refit:
        outer = {k: v for k, v in best_params.items() if k in task.outer_params}
        inner = {k: v for k, v in best_params.items() if k not in task.outer_params}
        # From the caller's own settings: eval_metric was only set for the trials.
        model = clone(task.user_model).set_params(**inner)
        if not mcmc:
            model.set_params(n_epochs=int(best.user_attrs.get("n_epochs", model.n_epochs)))
        if model.random_state is None:
            model.set_params(random_state=random_state)
        best_model = task.refit(model, outer)
    return TuneResult(study=study, best_params=best_params, best_score=float(best.value),
                      best_model=best_model, metric=metric)


def _open_study(storage, study_name: str | None, task, sampler, pruner,
                exists: bool = False) -> optuna.Study:
    """Create the study or resume it, refusing one tuned on another metric."""
    if exists:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler,
                                  pruner=pruner)
    else:
        study = optuna.create_study(
            storage=storage, study_name=study_name, load_if_exists=True,
            direction="maximize" if task.greater_is_better else "minimize",
            sampler=sampler, pruner=pruner)
    known = study.user_attrs.get("fmrec_metric")
    if known is not None and known != task.metric:
        raise ValueError(f"study {study.study_name!r} was tuned on metric {known!r}, not "
                         f"{task.metric!r}; use another study_name")
    study.set_user_attr("fmrec_metric", task.metric)
    return study


class _Objective:
    """One trial: sample a configuration, fit it on each fold, keep the best epoch count.

    A class rather than a closure so that it pickles: with a Dask client it is sent to the
    workers once and each of their optimize loops runs it.
    """

    def __init__(self, task, space, allowed: set, model_threads: int,
                 random_state: int | None, patience: int | None):
        self.task, self.space, self.allowed = task, space, allowed
        self.model_threads, self.random_state, self.patience = (model_threads, random_state,
                                                                 patience)
        self.worker = None  # a Dask worker's address, recorded on its trials

    def __call__(self, trial: optuna.Trial) -> float:
        task = self.task
        if self.worker is not None:
            trial.set_user_attr("worker", self.worker)
        params = _tune_space.sample(trial, self.space, self.allowed)
        outer = {k: v for k, v in params.items() if k in task.outer_params}
        inner = {k: v for k, v in params.items() if k not in task.outer_params}
        best, best_epochs, epochs_run = [], [], 0
        for number, fold in enumerate(task.folds(outer)):
            model = clone(task.template).set_params(**inner)
            model.set_params(n_jobs=self.model_threads, verbose=0)
            if model.random_state is None:
                model.set_params(random_state=self.random_state)
            # Only the first fold reports to the pruner: every trial's curve then comes from
            # the same data, and a hopeless trial stops before its other folds run.
            watch = _EpochWatch(trial if number == 0 else None, fold.score,
                                task.greater_is_better, self.patience)
            try:
                fold.fit(model, watch)
            except ValueError as exc:
                # Divergence (a learning rate too high) is a bad point of the space, not a bug.
                if "diverged" not in str(exc):
                    raise
                trial.set_user_attr("diverged", str(exc))
                raise optuna.TrialPruned(str(exc)) from None
            epochs_run += watch.epochs_run
            trial.set_user_attr("epochs_run", epochs_run)
            if watch.pruned:
                raise optuna.TrialPruned(f"pruned after epoch {watch.epochs_run}")
            best.append(watch.best)
            best_epochs.append(watch.best_epoch + 1)
        trial.set_user_attr("params", _plain(params))
        trial.set_user_attr("n_epochs", int(round(float(np.mean(best_epochs)))))
        if len(best) > 1:
            trial.set_user_attr("fold_scores", [float(b) for b in best])
        return float(np.mean(best))


class _EpochWatch:
    """The per-epoch callback of a fit: report, prune, stop early, remember the best.

    Without a trial it only stops early and remembers (the later folds of a cross-validated
    trial).
    """

    def __init__(self, trial, score, greater: bool, patience: int | None):
        self.trial, self.score, self.greater, self.patience = trial, score, greater, patience
        self.best, self.best_epoch, self.since, self.epochs_run = None, 0, 0, 0
        self.pruned = False

    def __call__(self, estimator, epoch: int, logs: dict) -> bool:
        value = float(self.score(estimator, logs))
        self.epochs_run = epoch + 1
        if not math.isfinite(value):
            # Optuna cannot rank NaN; the worst possible value prunes as it should.
            value = -math.inf if self.greater else math.inf
        if self.best is None or (value > self.best if self.greater else value < self.best):
            self.best, self.best_epoch, self.since = value, epoch, 0
        else:
            self.since += 1
        if self.trial is not None:
            self.trial.report(value, epoch)
            if self.trial.should_prune():
                self.pruned = True
                return True
        return self.patience is not None and self.since >= self.patience


class _EstimatorFold:
    """One (train, validation) pair of arrays; the estimator scores itself through eval_set."""

    def __init__(self, train: tuple, valid: tuple, metric: str):
        self.train, self.valid, self.metric = train, valid, metric

    def score(self, estimator, logs):
        return logs[f"val_{self.metric}"]

    def fit(self, model, watch):
        model.fit(*self.train, eval_set=self.valid, callbacks=[watch])


class _EstimatorTask:
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
            self._folds = [_EstimatorFold(train, valid, self.metric)]
            return
        self.full = _unpack(data, "data")
        n = self.full[1].shape[0]
        order = np.random.default_rng(random_state).permutation(n)
        if cv is None:
            parts = [order[:_held_out(validation, n)]]
        else:
            if n < cv:
                raise ValueError(f"cv={cv} folds need at least {cv} rows, data has {n}")
            parts = np.array_split(order, cv)
        self._folds = []
        for held in parts:
            keep = np.ones(n, dtype=bool)
            keep[held] = False
            self._folds.append(_EstimatorFold(_take(self.full, np.flatnonzero(keep)),
                                              _take(self.full, np.sort(held)), self.metric))

    def folds(self, outer: dict) -> list:
        return self._folds

    def refit(self, model, outer: dict):
        return model.fit(*self.full)


class _RecommenderFold:
    """One (train, validation) pair of interaction frames for a Recommender.

    The encoders are fitted once on the training part (by a one-epoch fit) and every trial
    fits only the model, on the rows they produce.
    """

    def __init__(self, recommender, model, train, valid, metric, k):
        self.metric, self.k = metric, k
        base = clone(recommender).set_params(model=clone(model).set_params(n_epochs=1))
        base.fit(train)
        self.base = base
        rows = base._check_interactions(train)
        self.ranking = isinstance(model, FMRanker)
        if self.ranking:
            self.data = base._ranking_data(rows)
        else:
            self.X, self.y = base._training_rows(rows)
        user, item, target = recommender.user_col, recommender.item_col, recommender.target
        if k is None:
            cols = list(base._context_cols())
            self.eval_set = (base._design(valid[user].to_numpy(), valid[item].to_numpy(),
                                          valid[cols].reset_index(drop=True) if cols else None),
                             base._targets(valid[target], "validation", base._classes()))
        else:
            relevant = valid
            if target is not None and is_classifier(model):
                relevant = valid[valid[target] == base.model_.classes_[1]]
            if relevant.empty:
                raise ValueError("the validation part has no relevant interaction to rank")
            self.relevant = relevant[[user, item]].rename(columns={user: "user", item: "item"})
            self.eval_set = None

    def score(self, estimator, logs):
        if self.k is None:
            return logs[f"val_{self.metric}"]
        # A shallow copy shares the encoders; only the model differs, so trials on several
        # threads never write to the shared recommender.
        rec = copy.copy(self.base)
        rec.model_ = estimator
        recs = rec.recommend(self.relevant["user"].unique(), n=self.k, unknown="popular")
        return ranking_metrics(recs, self.relevant, k=self.k)[self.metric]

    def fit(self, model, watch):
        if self.ranking:
            model.fit(*self.data, callbacks=[watch])
        else:
            model.fit(self.X, self.y, eval_set=self.eval_set, callbacks=[watch])


class _RecommenderTask:
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
                _held_out(validation, len(self.full))
                self.splits = [train_test_split(self.full, method="per_user",
                                                test_size=validation,
                                                user_col=recommender.user_col,
                                                random_state=random_state)]
            else:
                self.splits = kfold_split(self.full, cv, method="per_user",
                                          user_col=recommender.user_col,
                                          random_state=random_state)
        self.recommender = recommender
        self.has_implicit = bool(recommender._implicit_sides())
        model = recommender.model
        if model is None:
            model = recommender._default_model()  # what fit would use, so it can be tuned
        if model.random_state is None and isinstance(recommender.random_state,
                                                     numbers.Integral):
            model = clone(model).set_params(random_state=recommender.random_state)
        self._set_metric(metric, model, recommender.target)
        self.user_model = clone(model)
        if self.k is None:
            model = clone(model).set_params(eval_metric=self.metric)
        self.template = clone(model)
        self._cache: dict[tuple, list[_RecommenderFold]] = {}
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

    def folds(self, outer: dict) -> list[_RecommenderFold]:
        key = tuple(sorted((k, repr(v)) for k, v in outer.items()))
        with self._lock:
            if key not in self._cache:
                if len(self._cache) >= _CACHED_ENCODINGS:
                    self._cache.pop(next(iter(self._cache)))
                rec = clone(self.recommender).set_params(**outer)
                self._cache[key] = [
                    _RecommenderFold(rec, self.template, train, valid, self.metric, self.k)
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
def _check_cv(cv, validation) -> None:
    if cv is None:
        return
    if isinstance(cv, bool) or not isinstance(cv, numbers.Integral) or cv < 2:
        raise ValueError(f"cv must be None or an integer >= 2 (the number of folds), got "
                         f"{cv!r}")
    if isinstance(validation, tuple):
        raise ValueError("pass either cv (folds of data) or an explicit validation=(train, "
                         "valid) pair, not both")


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_n_jobs(n_jobs, allow_none: bool = False) -> None:
    if n_jobs is None and allow_none:
        return
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero integer, got {n_jobs!r}")


def _threads(n_jobs) -> tuple[int, int]:
    """Trials at once and kernel threads per model, whose product stays within the cores."""
    _check_n_jobs(n_jobs)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    parallel = int(n_jobs) if n_jobs > 0 else max(1, cores + 1 + int(n_jobs))
    return parallel, max(1, min(resolve_n_jobs(-1), cores // parallel))


def _held_out(validation, n: int) -> int:
    if isinstance(validation, bool) or not isinstance(validation, numbers.Real) \
            or not 0.0 < float(validation) < 1.0:
        raise ValueError(f"validation must be a fraction strictly between 0 and 1 or a "
                         f"(train, valid) pair, got {validation!r}")
    n_valid = int(round(float(validation) * n))
    if n_valid < 1 or n - n_valid < 1:
        raise ValueError(f"validation={validation} of {n} rows leaves an empty training or "
                         "validation part")
    return n_valid


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


def _plain(params: dict) -> dict:
    """JSON-friendly values (numpy scalars as Python ones) for a trial's user attributes."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}
