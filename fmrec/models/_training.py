"""The one epoch loop every estimator trains with (ALS, SGD, MCMC, BPR and the Dask SGD).

A solver exposes ``epoch()``: one pass that updates an :class:`FMState` in place and returns
its figures, or raises :class:`Diverged`. The loop owns everything around it, the same way
for every model. Each epoch, in this order:

1. ``solver.epoch()``; on divergence the last finite (or best) parameters are restored and
   fitting raises ValueError if it was the first epoch of this call, else warns
   (ConvergenceWarning) and stops;
2. the estimator publishes the new parameters (``w0_``, ``w_``, ``V_``);
3. ``figures(result)`` turns the solver's result into ``logs`` (``train_loss`` first);
4. the hooks run (MCMC keeps its sample there and adds its validation metric);
5. the validation metric, when there is an eval set, joins ``logs``;
6. ``logs`` is appended to ``history_``, ``n_epochs_`` counts this epoch, and with early
   stopping ``best_epoch_`` is updated;
7. the callbacks run, each as ``callback(estimator, epoch, logs)``, seeing all of the above;
   keys they add to ``logs`` go to ``history_`` too; any returning True stops training;
8. with ``verbose``, the epoch's ``logs`` are logged to the ``fmrec`` logger.

After the last epoch, early stopping puts back the best epoch's parameters and the hooks
finish.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sklearn.exceptions import ConvergenceWarning

from fmrec.solvers._state import Diverged, FMState

logger = logging.getLogger("fmrec")

Callback = Callable[[object, int, dict], bool | None]


@dataclass
class Validation:
    """The validation metric of the current parameters, and how it stops training.

    ``score()`` evaluates the published parameters; ``rounds`` (None: never stop early)
    epochs without an improvement by more than ``tol`` stop training, and the best epoch's
    parameters are kept.
    """

    key: str
    score: Callable[[], float]
    greater_is_better: bool
    rounds: int | None = None
    tol: float = 0.0


class EpochHook:
    """Something a model does after every epoch, before the history and the callbacks."""

    def after_epoch(self, epoch: int, logs: dict) -> None:
        """Add to ``logs`` or to the estimator what this epoch produced."""

    def finish(self) -> None:
        """Leave the estimator's attributes final once the epochs are over."""


def _diverged_hint(estimator, epoch: int, exc: Exception) -> str:
    return (f"training diverged at epoch {epoch} ({exc}); try a smaller learning_rate (now "
            f"{estimator.learning_rate}) or more regularization")


def run_epochs(estimator, solver, state: FMState, figures: Callable[[object], dict], *,
               n_epochs: int, validation: Validation | None = None,
               callbacks: Iterable[Callback] = (), hooks: Sequence[EpochHook] = (),
               diverged_hint: Callable[[object, int, Exception], str] = _diverged_hint,
               kept_on_divergence: str = "the last finite parameters") -> None:
    """Run up to ``n_epochs`` epochs of ``solver`` for ``estimator`` (see the module docstring).

    The estimator brings ``history_`` (a dict of lists, extended from its current length),
    ``verbose`` and ``_publish(state)``; ``state`` is the solver's live parameters.
    """
    callbacks = tuple(callbacks)
    history = estimator.history_
    keep_best = validation is not None and validation.rounds is not None
    best_score, best_state, since_best = None, None, 0
    last_good = state.copy()
    start = len(history["train_loss"])
    for epoch in range(start, start + n_epochs):
        try:
            result = solver.epoch()
        except Diverged as exc:
            state.assign(last_good)
            estimator._publish(state)
            hint = diverged_hint(estimator, epoch, exc)
            if epoch == start:
                raise ValueError(hint) from None
            warnings.warn(f"{hint}; keeping {kept_on_divergence}", ConvergenceWarning,
                          stacklevel=4)
            break
        estimator._publish(state)
        logs = figures(result)
        for hook in hooks:
            hook.after_epoch(epoch, logs)
        if validation is not None:
            logs[validation.key] = validation.score()
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        estimator.n_epochs_ = len(history["train_loss"])

        stop = False
        if validation is not None:
            value = logs[validation.key]
            score = value if validation.greater_is_better else -value
            if best_score is None or score > best_score + validation.tol:
                best_score, since_best = score, 0
                estimator.best_epoch_ = epoch
                if keep_best:
                    best_state = state.copy()
            else:
                since_best += 1
                stop = keep_best and since_best >= validation.rounds
        # Divergence falls back to the best epoch when early stopping keeps it.
        last_good = best_state if keep_best else state.copy()

        stop = _run_callbacks(estimator, callbacks, epoch, logs, history) or stop
        if estimator.verbose:
            log_epoch(epoch, logs)
        if stop:
            break
    if best_state is not None:
        state.assign(best_state)
        estimator._publish(state)
    for hook in hooks:
        hook.finish()
    estimator.n_epochs_ = len(history["train_loss"])


def _run_callbacks(estimator, callbacks, epoch: int, logs: dict, history: dict) -> bool:
    """Call every callback (all of them, even after one asks to stop); True to stop."""
    if not callbacks:
        return False
    recorded = dict(logs)
    stop = False
    for callback in callbacks:
        stop = bool(callback(estimator, epoch, logs)) or stop
    # What the callbacks wrote to logs is this epoch's history too.
    for key, value in logs.items():
        if key not in recorded:
            history.setdefault(key, []).append(value)
        elif value is not recorded[key]:
            history[key][-1] = value
    return stop


def log_epoch(epoch: int, logs: dict) -> None:
    """Log one epoch's figures to the ``fmrec`` logger."""
    # verbose=1 should show something even when the application configured no logging.
    if not logger.hasHandlers():
        logger.addHandler(logging.StreamHandler())
        logger.setLevel(logging.INFO)
    logger.info("epoch %d %s", epoch, " ".join(f"{k}={val:.6g}" for k, val in logs.items()))
