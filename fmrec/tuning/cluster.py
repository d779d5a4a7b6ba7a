"""``fmrec.tune(..., client=client)``: the search's trials in optimize loops on Dask workers.

The study lives in Optuna's ``DaskStorage`` on the scheduler (wrapping the caller's storage,
if any, so that it stays resumable); each loop reloads it on its worker and runs ordinary
single-machine trials, whose per-epoch reports reach the pruner through the scheduler. The
caller's process polls for ended trials (to run callbacks) and refits the best one.
"""

from __future__ import annotations

import copy
import logging
import threading
import uuid
import warnings

import optuna
from threadpoolctl import threadpool_limits

from fmrec.tuning.trials import FINISHED, Objective, open_study

logger = logging.getLogger("fmrec")
_ENDED = (*FINISHED, optuna.trial.TrialState.FAIL)


_POLL_SECONDS = 0.5  # how often the client looks for finished trials and failed loops


def _dask_storage_class() -> type:
    try:
        from optuna_integration import DaskStorage
    except ImportError:
        try:  # Optuna before the integrations moved out shipped it itself
            from optuna.integration import DaskStorage
        except ImportError:
            raise ImportError("tune(client=...) needs Optuna's Dask storage: pip install "
                              "optuna-integration distributed") from None
    return DaskStorage


def _open_dask_storage(client, storage) -> tuple[optuna.storages.BaseStorage, bool]:
    """The study's storage on the scheduler, wrapping ``storage``; and whether we made it."""
    try:
        import distributed
        from distributed.protocol import pickle as dask_pickle
    except ImportError:
        raise ImportError("tune(client=...) needs distributed: pip install 'fmrec[dask]'") \
            from None
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
    if client.asynchronous:
        raise ValueError("tune needs a synchronous distributed.Client (asynchronous=False)")
    DaskStorage = _dask_storage_class()
    if isinstance(storage, DaskStorage):
        return storage, False
    if isinstance(storage, optuna.storages.InMemoryStorage):
        raise ValueError("an InMemoryStorage lives in this process and the workers cannot "
                         "write to it: with a client pass storage=None (a study in memory on "
                         "the scheduler), a URL such as 'sqlite:///tune.db' or an RDBStorage")
    if storage is not None and not isinstance(storage, str | optuna.storages.BaseStorage):
        raise TypeError(f"storage must be None, a URL or an Optuna storage, got "
                        f"{type(storage).__name__}")
    if isinstance(storage, optuna.storages.BaseStorage):
        try:
            dask_pickle.dumps(storage)
        except Exception as exc:
            raise ValueError(f"storage {type(storage).__name__} cannot be sent to the Dask "
                             f"scheduler ({exc}); pass its URL instead") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            # The scheduler opens the inner storage: a relative sqlite path is relative to
            # the scheduler's working directory, on its machine.
            return DaskStorage(storage, client=client), True
        except Exception as exc:
            raise ValueError(f"the Dask scheduler could not open storage {storage!r}: "
                             f"{type(exc).__name__}: {exc}") from exc


def search_on_cluster(client, storage, study_name: str | None, task, sampler, pruner,
                       objective: Objective, *, n_trials: int, n_jobs: int | None,
                       timeout: float | None, callbacks: list) -> optuna.Study:
    """The search of :func:`tune` with a client; returns a copy of the study in memory here.

    The copy outlives the client; the user's storage, if any, keeps the lasting record.
    """
    dask_storage, owned = _open_dask_storage(client, storage)
    try:
        # Not create_study(load_if_exists=True) on an existing study: its failed creation
        # would log a traceback on the scheduler.
        exists = study_name in optuna.get_all_study_names(dask_storage)
        study = open_study(dask_storage, study_name, task, sampler, pruner, objective.space,
                           exists=exists)
        remaining = n_trials - sum(t.state in FINISHED for t in study.trials)
        if remaining > 0:
            _optimize_on_cluster(client, study, dask_storage, objective, remaining,
                                 n_jobs=n_jobs, timeout=timeout, callbacks=callbacks)
        return _local_copy(study, dask_storage)
    finally:
        if owned:
            # Also after an error: loops still running then fail at their next report
            # rather than keep a storage on the scheduler for good.
            try:
                client.run_on_scheduler(_forget_storage, name=dask_storage.name)
            except Exception as exc:  # e.g. a scheduler without fmrec: only memory at stake
                logger.debug("the scheduler kept Dask storage %s: %s", dask_storage.name,
                             exc)


def _loop_plan(nthreads: dict, n_jobs: int | None, remaining: int) -> list[tuple]:
    """``(worker or None, trials, kernel threads)`` for each optimize loop on the cluster.

    The loops are dealt over the workers' threads in turn, so that they spread over the
    workers before doubling up on one; a worker's threads are shared by its loops' fits.
    """
    total = sum(nthreads.values())
    if n_jobs is None or n_jobs < 0:
        if total == 0:
            raise ValueError("the Dask cluster has no worker yet: wait for them "
                             "(client.wait_for_workers) or pass n_jobs")
        loops = total if n_jobs is None else max(1, total + 1 + int(n_jobs))
    else:
        loops = int(n_jobs)
    loops = min(loops, remaining)
    addresses = sorted(nthreads)
    slots = [a for i in range(max(nthreads.values(), default=0)) for a in addresses
             if nthreads[a] > i] or [None]
    placed = [slots[i % len(slots)] for i in range(loops)]
    plan = []
    for i, worker in enumerate(placed):
        trials = remaining // loops + (i < remaining % loops)
        threads = 1 if worker is None else max(1, nthreads[worker] // placed.count(worker))
        plan.append((worker, trials, threads))
    return plan


def _optimize_on_cluster(client, study: optuna.Study, storage, objective: Objective,
                         remaining: int, *, n_jobs: int | None, timeout: float | None,
                         callbacks: list) -> None:
    """Run ``remaining`` trials in optimize loops on the Dask workers; callbacks run here."""
    import distributed

    plan = _loop_plan(client.nthreads(), n_jobs, remaining)
    study_id = storage.get_study_id_from_name(study.study_name)
    total = storage.get_n_trials(study_id, state=FINISHED) + remaining
    workers = sorted({worker for worker, _, _ in plan if worker is not None})
    # The data goes to each worker once; every loop there shares that copy. The full data
    # stays here for the refit.
    shipped = copy.copy(objective)
    shipped.task = copy.copy(objective.task)
    del shipped.task.full
    shared = client.scatter(shipped, workers=workers or None, broadcast=bool(workers),
                            hash=False)
    run = uuid.uuid4().hex
    stop = distributed.Event(f"fmrec-tune-stop-{run}", client=client)
    futures = [
        client.submit(_optimize_loop, shared, study_name=study.study_name,
                      storage_name=storage.name, n_trials=trials, total=total,
                      timeout=timeout,
                      threads=threads, sampler=study.sampler, pruner=study.pruner,
                      stop=stop.name, verbosity=optuna.logging.get_verbosity(),
                      key=f"fmrec-tune-{i}-{run}", pure=False,
                      **({} if worker is None else {"workers": [worker],
                                                    "allow_other_workers": True}))
        for i, (worker, trials, threads) in enumerate(plan)]
    seen = {t.number for t in study.get_trials(deepcopy=False, states=_ENDED)}
    try:
        while True:
            try:
                distributed.wait(futures, timeout=_POLL_SECONDS)
            except TimeoutError:
                pass
            for future in futures:
                if future.status == "error":
                    future.result()  # raises the loop's exception here
            if callbacks and storage.get_n_trials(study_id, state=_ENDED) > len(seen):
                ended = [t for t in study.get_trials(deepcopy=False, states=_ENDED)
                         if t.number not in seen]
                ended.sort(key=lambda t: (t.datetime_complete is None, t.datetime_complete,
                                          t.number))
                for trial in ended:
                    seen.add(trial.number)
                    if _run_callbacks(callbacks, study, trial):
                        stop.set()
            if all(future.done() for future in futures):
                break
    except BaseException:
        # Loops cannot be interrupted mid-trial: they stop after their current one.
        stop.set()
        client.cancel(futures)
        raise
    finally:
        shared.release()


def _run_callbacks(callbacks: list, study: optuna.Study, trial) -> bool:
    """Call the study callbacks for one ended trial; True if one of them stopped the study.

    ``study.stop()`` only works inside an optimize loop, which this process is not in: the
    flags it checks and sets are Optuna's private ones, so without them stop() still raises.
    """
    local = getattr(study, "_thread_local", None)
    patched = local is not None and hasattr(study, "_stop_flag")
    if patched:
        local.in_optimize_loop, study._stop_flag = True, False
    try:
        for callback in callbacks:
            callback(study, trial)
    finally:
        if patched:
            local.in_optimize_loop = False
    return bool(getattr(study, "_stop_flag", False))


def _optimize_loop(objective: Objective, *, study_name: str, storage_name: str,
                   n_trials: int, total: int, timeout: float | None, threads: int, sampler,
                   pruner, stop: str, verbosity: int) -> int:
    """One optimize loop on a Dask worker: ``n_trials`` trials, fewer if the study already
    holds ``total`` finished ones; returns the number of trials it ran.
    """
    import distributed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = _dask_storage_class()(name=storage_name, register=False)
    # Every loop unpickled the same seeded sampler: without a new seed they would all
    # propose the same configurations.
    sampler.reseed_rng()
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler,
                              pruner=pruner)
    study_id = storage.get_study_id_from_name(study_name)

    def enough() -> bool:
        # A loop that Dask runs again after its worker died must not run its share twice.
        return storage.get_n_trials(study_id, state=FINISHED) >= total

    if enough():
        return 0
    objective = copy.copy(objective)
    objective.model_threads = threads
    objective.worker = distributed.get_worker().address
    event, ran = distributed.Event(stop), []

    def check(study, trial) -> None:
        ran.append(trial.number)
        if event.is_set() or enough():
            study.stop()

    saved = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(verbosity)  # as quiet as the caller's process
    try:
        with _WORKER_BLAS:
            study.optimize(objective, n_trials=n_trials, timeout=timeout, callbacks=[check],
                           gc_after_trial=False)
    finally:
        optuna.logging.set_verbosity(saved)
    return len(ran)


class _SharedBlasLimit:
    """BLAS held to one thread while any optimize loop of this worker process runs.

    The first loop in sets the limit and the last one out restores it: loops nesting
    ``threadpool_limits`` of their own would restore the original limit while others still
    run, and leave the worker at one thread when the first one in exits last.
    """

    def __init__(self):
        self._lock, self._users, self._limits = threading.Lock(), 0, None

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                self._limits = threadpool_limits(limits=1, user_api="blas")
            self._users += 1

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._limits.restore_original_limits()
                self._limits = None


_WORKER_BLAS = _SharedBlasLimit()


def _local_copy(study: optuna.Study, storage) -> optuna.Study:
    """The study copied into memory in this process."""
    # Storage calls rather than optuna.copy_study, which would log every trial once more.
    memory = optuna.storages.InMemoryStorage()
    study_id = memory.create_new_study(directions=study.directions,
                                       study_name=study.study_name)
    for key, value in study.user_attrs.items():
        memory.set_study_user_attr(study_id, key, value)
    source_id = storage.get_study_id_from_name(study.study_name)
    for key, value in storage.get_study_system_attrs(source_id).items():
        memory.set_study_system_attr(study_id, key, value)
    for trial in study.get_trials(deepcopy=False):
        memory.create_new_trial(study_id, template_trial=trial)
    return optuna.load_study(study_name=study.study_name, storage=memory,
                             sampler=study.sampler, pruner=study.pruner)


def _forget_storage(dask_scheduler, name: str) -> None:
    dask_scheduler.extensions["optuna"].storages.pop(name, None)


# ------------------------------------------------------------------------------------ helpers
