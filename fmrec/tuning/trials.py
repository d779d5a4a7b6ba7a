"""The pieces of a search shared by ``search`` (trials in this process) and ``cluster`` (trials
on Dask workers): the study, the objective that runs one trial, and the per-epoch watch.
"""

from __future__ import annotations

import math
import numbers
from collections import deque

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from sklearn.base import clone

from fmrec.tuning import space as _tune_space

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def open_study(storage, study_name: str | None, task, sampler, pruner, space=None,
               exists: bool = False) -> optuna.Study:
    """Create the study or resume it, refusing one tuned on another metric.

    A new study's first trial is the untuned settings (``default_params``), enqueued, so
    the best trial can only improve on them on validation.
    """
    storage = open_storage(storage)
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
    if space is not None and not study.trials:
        defaults = default_params(task, space)
        if defaults:
            study.enqueue_trial(defaults, user_attrs={"fmrec_defaults": True})
    return study


def open_storage(storage) -> optuna.storages.BaseStorage | None:
    """``storage`` opened: None (in memory), an Optuna storage, or a database URL.

    A URL that cannot be opened raises ValueError naming it (ImportError for a missing
    database driver), not the database library's own exception.
    """
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if not isinstance(storage, str):
        raise TypeError(f"storage must be None, a database URL or an Optuna storage, got "
                        f"{type(storage).__name__}")
    try:
        return optuna.storages.get_storage(storage)
    except ImportError as exc:
        raise ImportError(f"storage {storage!r} needs a database driver that is not "
                          f"installed: {exc}") from exc
    except Exception as exc:  # SQLAlchemy's errors: no common base worth importing it for
        raise ValueError(f"cannot open the study storage {storage!r}: "
                         f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def default_params(task, space) -> dict:
    """The settings the search starts from (the model's and, for a Recommender, its own) as
    a point of ``space``: each searched parameter whose current value the space holds.

    A parameter whose value lies outside its distribution is left to the sampler; a
    callable space gives nothing (its parameters are unknown until it runs).
    """
    if callable(space):
        return {}
    current = task.template.get_params(deep=False)
    recommender = getattr(task, "recommender", None)
    if recommender is not None:
        current.update({k: v for k, v in recommender.get_params(deep=False).items()
                        if k in task.outer_params})
    return _plain({name: current[name] for name, dist in space.items()
                   if name in current and _holds(dist, current[name])})


def _holds(dist, value) -> bool:
    """Whether ``value`` is a point of the distribution (or list of choices) ``dist``."""
    if isinstance(dist, list | tuple | CategoricalDistribution):
        choices = dist.choices if isinstance(dist, CategoricalDistribution) else dist
        # 8 is the choice 8 (and 8.0 too), but True is not the choice 1.
        return any(value == c and isinstance(value, bool) == isinstance(c, bool)
                   for c in choices)
    if isinstance(dist, FloatDistribution | IntDistribution):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if isinstance(dist, IntDistribution) and value != int(value):
            return False
        return dist.low <= value <= dist.high
    return False

class Objective:
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
        self._defaults = None

    def _given(self) -> dict:
        """The untuned settings as a point of the space (what ``open_study`` enqueued)."""
        if self._defaults is None:
            self._defaults = default_params(self.task, self.space)
        return self._defaults

    def __call__(self, trial: optuna.Trial) -> float:
        task = self.task
        if self.worker is not None:
            trial.set_user_attr("worker", self.worker)
        params = _tune_space.sample(trial, self.space, self.allowed)
        outer = {k: v for k, v in params.items() if k in task.outer_params}
        inner = {k: v for k, v in params.items() if k not in task.outer_params}
        # The untuned settings are scored as the user would fit them: every epoch of the
        # template, judged on the last, never pruned. If no trial beats that, the refit is
        # the untuned model itself, so tuning cannot make the result worse.
        as_given = bool(trial.user_attrs.get("fmrec_defaults")) and params == self._given()
        best, best_epochs, epochs_run = [], [], 0
        for number, fold in enumerate(task.folds(outer)):
            model = clone(task.template).set_params(**inner)
            model.set_params(n_jobs=self.model_threads, verbose=0)
            if model.random_state is None:
                model.set_params(random_state=self.random_state)
            # Only the first fold reports to the pruner: every trial's curve then comes from
            # the same data, and a hopeless trial stops before its other folds run.
            watch = EpochWatch(trial if number == 0 else None, fold.score,
                               task.greater_is_better, None if as_given else self.patience,
                               warmup_epochs(model.n_epochs, self.patience),
                               prune=not as_given, window=smoothing_window(task))
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
            best.append(watch.last if as_given else watch.best)
            best_epochs.append(watch.epochs_run if as_given else watch.best_epoch + 1)
            if as_given and number == 0:
                trial.set_user_attr("fmrec_as_given", True)
                trial.set_user_attr("score_noise", watch.noise())
        trial.set_user_attr("params", _plain(params))
        trial.set_user_attr("n_epochs", int(round(float(np.mean(best_epochs)))))
        if len(best) > 1:
            trial.set_user_attr("fold_scores", [float(b) for b in best])
        return float(np.mean(best))


def warmup_epochs(n_epochs: int, patience: int | None) -> int:
    """Epochs a trial of up to ``n_epochs`` runs before it may stop early (or, with the
    default pruner, be pruned).

    The validation curve of an FM often stalls, or even worsens, for a few epochs after the
    first: the biases fit at once while factors drawn small (``init_std``) need several
    sweeps to grow, longer the smaller they start and the stronger their penalty. Judged
    on those epochs, a configuration that ends best looks hopeless. The warm-up grows with
    the run (a fifth of it), and is at least twice the patience.
    """
    return max(2 * (patience or 0), math.ceil(n_epochs / 5))


def smoothing_window(task) -> int:
    """Epochs whose validation scores a trial is judged on together (their mean).

    A ranking metric of top-k lists moves in steps as items cross the k-th place, so from
    one epoch to the next it is noisy (on MovieLens 100K positives, BPR's NDCG@10 wanders
    by +-0.003 around its trend). The best of many noisy epochs flatters a trial, most of
    all one that stops early on a lucky epoch: the mean of the last three is judged
    instead. A pointwise metric (RMSE, log loss, AUC) moves smoothly and is judged epoch
    by epoch.
    """
    return 3 if getattr(task, "k", None) is not None else 1


class EpochWatch:
    """The per-epoch callback of a fit: report, prune, stop early, remember the best.

    Without a trial it only stops early and remembers (the later folds of a cross-validated
    trial). It does not stop in the first ``warmup`` epochs (see :func:`warmup_epochs`);
    pruning is the pruner's to decide (``tune``'s default pruner has the same warm-up), except
    that with ``prune=False`` the trial only reports. With a ``window`` of w > 1 epochs, an
    epoch's value (reported, compared, kept) is the mean score of the last w epochs (of those
    run, in the first ones).
    """

    def __init__(self, trial, score, greater: bool, patience: int | None, warmup: int = 0,
                 prune: bool = True, window: int = 1):
        self.trial, self.score, self.greater, self.patience = trial, score, greater, patience
        self.warmup, self.prune = warmup, prune
        self.recent: deque = deque(maxlen=window)
        self.raw: list[float] = []
        self.best, self.best_epoch, self.since, self.epochs_run = None, 0, 0, 0
        self.last, self.pruned = None, False

    def __call__(self, estimator, epoch: int, logs: dict) -> bool:
        value = float(self.score(estimator, logs))
        self.epochs_run = epoch + 1
        if not math.isfinite(value):
            # Optuna cannot rank NaN; the worst possible value prunes as it should.
            value = -math.inf if self.greater else math.inf
        self.raw.append(value)
        self.recent.append(value)
        value = float(np.mean(self.recent)) if len(self.recent) > 1 else value
        self.last = value
        if self.best is None or (value > self.best if self.greater else value < self.best):
            self.best, self.best_epoch, self.since = value, epoch, 0
        else:
            self.since += 1
        if self.trial is not None:
            self.trial.report(value, epoch)
            if self.prune and self.trial.should_prune():
                self.pruned = True
                return True
        return (self.patience is not None and self.since >= self.patience
                and self.epochs_run >= self.warmup)


    def noise(self) -> float:
        """How much a value of this fit wobbles from epoch to epoch: over the second half of
        the epochs, where the curve has mostly settled, the spread of the differences of
        consecutive scores (a difference of two draws has sqrt(2) times their spread), over
        sqrt(window) for a mean of ``window`` epochs. 0 for a smooth curve (ALS, RMSE)."""
        tail = np.asarray(self.raw[len(self.raw) // 2:], dtype=float)
        if len(tail) < 3 or not np.isfinite(tail).all():
            return 0.0
        return float(np.std(np.diff(tail)) / math.sqrt(2 * self.recent.maxlen))


def _plain(params: dict) -> dict:
    """JSON-friendly values (numpy scalars as Python ones) for a trial's user attributes."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}

