"""Hyperparameter search with Optuna for FM estimators and recommenders.

Every trial fits a model on a training part and scores it after each epoch on a validation
part through the estimators' ``callback(estimator, epoch, logs)``: the score is reported to
Optuna (so a pruner can stop a hopeless trial early) and drives early stopping, and the
best epoch count is kept as the trial's ``n_epochs`` user attribute so that the refit on all
the data runs exactly as long as the best trial needed. That count is not rescaled for the
refit's larger data: ALS sweeps are not per row, and for SGD and BPR neither scaling it by
the rows (fewer epochs) nor by their inverse (more) refitted consistently better on MovieLens
100K (u2, u3 and a second implicit-feedback split; the differences were within the noise of
the seed). Trial 0, the untuned settings, keeps the template's own epochs (see ``tune``).

With a Dask client the same trials run in optimize loops on the workers, sharing the study
through Optuna's ``DaskStorage`` on the scheduler; only the refit runs in the caller's process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from sklearn.base import clone
from threadpoolctl import threadpool_limits

from fmrec._validation import check_interval, resolve_n_jobs
from fmrec.models.fm import FMClassifier, FMRegressor
from fmrec.recommend.recommender import Recommender
from fmrec.tuning import space as _tune_space
from fmrec.tuning.cluster import search_on_cluster
from fmrec.tuning.tasks import EstimatorTask, RecommenderTask
from fmrec.tuning.trials import FINISHED, Objective, open_study, warmup_epochs

if TYPE_CHECKING:
    import distributed

__all__ = ["TuneResult", "tune"]

@dataclass
class TuneResult:
    """What :func:`tune` found.

    Attributes
    ----------
    study : optuna.Study
        Every trial, with ``user_attrs["n_epochs"]`` (best epoch count) and
        ``user_attrs["epochs_run"]`` (epochs actually fitted).
    best_params : dict
        Hyperparameters of the best trial (what the search space produced): trial 0's, the
        untuned settings, when no trial beat them by more than the noise of their score
        (see ``tune``), else the study's best trial.
    best_score : float
        Its validation score.
    best_model : FMRegressor, FMClassifier, Recommender or None
        Refitted on all the data with ``best_params`` and the best trial's epoch count
        (the template's own when trial 0, the untuned settings, is the best); None with
        ``refit=False``.
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
        Its ``n_epochs`` is the most a trial runs. Its settings are trial 0 of a new study
        (enqueued; those the search space does not hold are drawn instead). When the space
        holds them all, trial 0 is the template as given: it runs all its epochs, is scored
        on the last (never pruned, never stopped early) and, when no other trial beats it on
        validation, the refit is exactly the untuned template fitted on all the data. So
        tuning never ends with a model that validated worse than the untuned one. A trial
        that beats trial 0 by no more than the epoch-to-epoch noise of trial 0's validation
        curve (see :func:`~fmrec.tuning.trials.EpochWatch.noise`; nil for ALS on RMSE,
        about 0.001 for BPR on NDCG@10) does not count as better: the result is then
        trial 0's.
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
        draws its own penalties); for an FMRanker n_factors in {32, 64, 128},
        learning_rate log-uniform in [0.02, 0.2], reg_linear and reg_factors log-uniform in
        [1e-3, 0.1]; for a Recommender with implicit features
        also implicit_weight log-uniform in [0.25, 8]. For a Recommender the space may hold
        its ``implicit``, ``implicit_weight``, ``negatives`` and ``negative_sampling``: the
        data is then encoded again for each new combination of them.
    storage, study_name : optional
        An Optuna storage URL (e.g. ``"sqlite:///tune.db"``) and study name: an existing
        study of that name is resumed.
    sampler, pruner : optional
        Default: ``TPESampler(seed=random_state)`` and ``MedianPruner(n_startup_trials=5)``
        with the warm-up of ``early_stopping_rounds``: no trial is pruned before the end of
        its ``max(2 * early_stopping_rounds, ceil(n_epochs / 5))``-th epoch. Pass
        ``optuna.pruners.NopPruner()`` to never prune. Trial 0 (the untuned settings, see
        above) is never pruned.
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
        ``solver="mcmc"``, whose trials and refit run every sweep), but never in its
        warm-up: its first ``max(2 * early_stopping_rounds, ceil(n_epochs / 5))`` epochs
        (the default pruner waits as long). An FM's validation curve often stalls for a
        few epochs after the first while small initial factors grow, and a trial judged
        there would end before its best epochs.
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
        task = RecommenderTask(estimator_or_recommender, data, metric, validation, cv,
                                random_state)
    elif isinstance(estimator_or_recommender, FMRegressor | FMClassifier):
        task = EstimatorTask(estimator_or_recommender, data, metric, validation, cv,
                              random_state)
    else:
        raise TypeError(f"tune needs an FMRegressor, FMClassifier or Recommender, got "
                        f"{type(estimator_or_recommender).__name__}")
    _check_count("n_trials", n_trials)
    if timeout is not None:
        check_interval("timeout", timeout, low=0, low_open=True)
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
    if pruner is None:
        # Steps count from 0: the first step it may prune at ends the warm-up's last epoch.
        warmup = warmup_epochs(template.n_epochs, patience)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup - 1)
    objective = Objective(task, space, allowed, model_threads, random_state, patience)
    callbacks = list(callbacks or ())
    if client is None:
        study = open_study(storage, study_name, task, sampler, pruner, space)
        remaining = n_trials - sum(t.state in FINISHED for t in study.trials)
        if remaining > 0:
            with threadpool_limits(limits=1, user_api="blas"):
                study.optimize(objective, n_trials=remaining, timeout=timeout,
                               n_jobs=parallel, callbacks=callbacks, gc_after_trial=False)
    else:
        study = search_on_cluster(client, storage, study_name, task, sampler, pruner,
                                   objective, n_trials=n_trials, n_jobs=n_jobs,
                                   timeout=timeout, callbacks=callbacks)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise RuntimeError(f"no trial of study {study.study_name!r} completed (all pruned or "
                           "failed); allow more trials, a gentler pruner or another space")
    best = _best_trial(study)
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


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The study's best trial, unless it beats the untuned settings (trial 0, as given) by
    no more than their score's own epoch-to-epoch noise: a win that small is luck (the best
    of many trials is the luckiest too), and the untuned model is then what a refit keeps."""
    best = study.best_trial
    given = [t for t in study.trials if t.user_attrs.get("fmrec_as_given")
             and t.state == optuna.trial.TrialState.COMPLETE]
    if not given or best.number == given[0].number:
        return best
    first = given[0]
    if abs(best.value - first.value) <= first.user_attrs.get("score_noise", 0.0):
        return first
    return best


def _check_cv(cv, validation) -> None:
    if cv is None:
        return
    _check_count("cv", cv, low=2, what="None or ")
    if isinstance(validation, tuple):
        raise ValueError("pass either cv (folds of data) or an explicit validation=(train, "
                         "valid) pair, not both")


def _check_count(name: str, value, low: int = 1, what: str = "") -> None:
    """An integer >= ``low``, with the one message tune gives for every count."""
    try:
        check_interval(name, value, low=low, integer=True)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {what}an integer >= {low}, got {value!r}") from None


def _check_n_jobs(n_jobs, allow_none: bool = False) -> None:
    if n_jobs is None and allow_none:
        return
    try:
        check_interval("n_jobs", n_jobs, integer=True)
        valid = n_jobs != 0
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"n_jobs must be a non-zero integer, got {n_jobs!r}")


def _threads(n_jobs) -> tuple[int, int]:
    """Trials at once and kernel threads per model, whose product stays within the cores."""
    _check_n_jobs(n_jobs)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    parallel = int(n_jobs) if n_jobs > 0 else max(1, cores + 1 + int(n_jobs))
    return parallel, max(1, min(resolve_n_jobs(-1), cores // parallel))
