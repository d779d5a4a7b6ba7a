"""What ``solver="mcmc"`` adds to an estimator's fit: the chain's start and its samples.

The Gibbs sweeps run in the common epoch loop (``fmrec.models._training``); keeping the
retained sweeps' samples and the running posterior-mean validation metric is the per-epoch
hook :class:`SampleKeeper`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

from fmrec._links import LOGISTIC
from fmrec.metrics import METRICS
from fmrec.models._training import EpochHook, run_epochs
from fmrec.solvers._state import FMState
from fmrec.solvers.mcmc import (
    MCMCSolver,
    compact_groups,
    initial_hyper,
    kept_sweeps,
    sample_stats,
)

SAMPLE_ATTRS = ("samples_w0_", "samples_w_", "samples_V_", "samples_alpha_")
MCMC_ATTRS = (*SAMPLE_ATTRS, "_mcmc_hyper", "_mcmc_groups")


def fit_mcmc(est, X, y, sw, evaluation, callbacks, n_epochs: int, reset: bool, n_threads: int,
             dtype, rng, partial: bool = False) -> None:
    """Run ``n_epochs`` Gibbs sweeps for the estimator (a fresh chain unless ``reset`` is
    False), retaining samples as ``kept_sweeps`` says; sets the fitted attributes.
    ``partial`` (partial_fit): a fresh chain may end before burn-in."""
    classification = est._loss == LOGISTIC
    if sw.min() < 0:
        raise ValueError("sample_weight must be non-negative")
    groups, n_groups = compact_groups(est.groups, X.shape[1])
    k = int(est.n_factors)
    fixed = getattr(est, "_mcmc_fixed", None)
    if reset:
        if n_epochs <= est.n_burn_in and not partial:
            raise ValueError(f"n_epochs={n_epochs} leaves no sample after n_burn_in="
                             f"{est.n_burn_in} sweeps; raise n_epochs or lower n_burn_in")
        mean = float(np.average(y.astype(np.float64), weights=sw.astype(np.float64)))
        if classification:
            mean = float(ndtri(np.clip(mean, 1e-6, 1 - 1e-6)))
        V = rng.normal(0.0, est.init_std, size=(X.shape[1], k)).astype(dtype)
        state = FMState(mean if est.fit_intercept else 0.0, np.zeros(X.shape[1], dtype), V)
        hyper = initial_hyper(n_groups, k)
        est.history_ = {"train_loss": []}
        for name in MCMC_ATTRS:
            est.__dict__.pop(name, None)
        est._mcmc_groups = groups
    else:
        if not hasattr(est, "_mcmc_hyper"):
            raise ValueError("warm_start with solver='mcmc' needs a model fitted by MCMC; "
                             "refit with warm_start=False")
        if not np.array_equal(groups, est._mcmc_groups):
            raise ValueError("groups changed since the model was fitted; refit with "
                             "warm_start=False")
        state, _ = est._starting_state(None, y, sw, dtype, rng, reset=False)
        hyper = est._mcmc_hyper
    if not classification:
        est._widen_y_range(float(np.min(y)), float(np.max(y)), reset)
    start = len(est.history_["train_loss"])
    # A new stream for every fit call: continuing a chain never reuses its draws.
    seed = np.random.SeedSequence(int(rng.randint(0, 2**31 - 1)), spawn_key=(start,))
    solver = MCMCSolver(X, y, sw, classification, state, groups=groups, hyper=hyper,
                        rng=np.random.Generator(np.random.PCG64(seed)), n_threads=n_threads,
                        fit_intercept=bool(est.fit_intercept),
                        fit_linear=bool(est.fit_linear), fixed=fixed)
    est._publish(state)
    est._mcmc_hyper = solver.hyper  # live during the sweeps (callbacks may predict)
    keeper = SampleKeeper(est, solver, evaluation, kept_sweeps(start, n_epochs, est.n_burn_in,
                                                                est.n_samples), n_threads)

    def figures(train_loss: float) -> dict:
        logs = {"train_loss": train_loss}
        if not classification:
            logs["noise_precision"] = float(solver.hyper["alpha"][0])
        return logs

    run_epochs(est, solver, state, figures, n_epochs=n_epochs, callbacks=callbacks,
               hooks=(keeper,), diverged_hint=_diverged_hint,
               kept_on_divergence="the samples so far")
    est._mcmc_hyper = {key: val.copy() for key, val in solver.hyper.items()}


def _diverged_hint(est, epoch: int, exc: Exception) -> str:
    return f"Gibbs sampling diverged at sweep {epoch} ({exc}); check the data scale"


class SampleKeeper(EpochHook):
    """Copies the retained sweeps' (w0, w, V, α) into the estimator's ``samples_*_`` and,
    with an eval set, logs the metric of the running posterior mean over the samples kept so
    far (of the current sample during burn-in), continuing over an earlier fit's samples."""

    def __init__(self, est, solver: MCMCSolver, evaluation, keep: set, n_threads: int):
        self.est, self.solver, self.keep, self.n_threads = est, solver, keep, n_threads
        d, k = solver.state.V.shape
        old = [getattr(est, name, None) for name in SAMPLE_ATTRS]
        n_old = 0 if old[0] is None else len(old[0])
        size = n_old + len(keep)
        self.w0s, self.ws = np.empty(size), np.empty((size, d), np.float32)
        self.Vs, self.alphas = np.empty((size, d, k), np.float32), np.empty(size)
        if n_old:
            self.w0s[:n_old], self.ws[:n_old], self.Vs[:n_old], self.alphas[:n_old] = old
        self.n_kept = n_old
        self._expose()
        self.link = None if est._loss != LOGISTIC else ndtr
        self.evaluation, self.val_sum, self.val_count = evaluation, None, 0
        if evaluation is not None:
            name = est._metric_name()
            self.key, self.metric = f"val_{name}", METRICS[name][0]
            self.X_val = evaluation[0]
            if n_old:  # the running posterior mean continues over the earlier samples
                self.val_sum = n_old * sample_stats(
                    self.X_val, (self.w0s[:n_old], self.ws[:n_old], self.Vs[:n_old]),
                    n_threads, self.link, std=False)[0]
                self.val_count = n_old

    def _expose(self) -> None:
        # views: callbacks see the samples so far
        n, est = self.n_kept, self.est
        est.samples_w0_, est.samples_w_ = self.w0s[:n], self.ws[:n]
        est.samples_V_, est.samples_alpha_ = self.Vs[:n], self.alphas[:n]

    def after_epoch(self, epoch: int, logs: dict) -> None:
        state, kept = self.solver.state, epoch in self.keep
        if kept:
            n = self.n_kept
            self.w0s[n], self.ws[n], self.Vs[n] = state.w0[0], state.w, state.V
            self.alphas[n] = self.solver.hyper["alpha"][0]
            self.n_kept += 1
            self._expose()
        if self.evaluation is None:
            return
        _, y_val, w_val = self.evaluation
        current = sample_stats(self.X_val, (state.w0, state.w[None], state.V[None]),
                               self.n_threads, self.link, std=False)[0]
        if kept:
            self.val_sum = current if self.val_sum is None else self.val_sum + current
            self.val_count += 1
        pred = self.val_sum / self.val_count if self.val_count else current
        if self.link is None:
            pred = self.est._clip(pred)
        logs[self.key] = self.metric(y_val, pred, w_val)

    def finish(self) -> None:
        self._expose()
