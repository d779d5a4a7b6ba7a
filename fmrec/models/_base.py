"""The estimator machinery FMRegressor and FMClassifier share (and FMRanker's fit guards)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from fmrec import _validation as v
from fmrec._links import SQUARE
from fmrec.design import DesignMatrix, column_counts, fm_output
from fmrec.metrics import METRICS
from fmrec.models._mcmc import MCMC_ATTRS, SAMPLE_ATTRS, fit_mcmc
from fmrec.models._record import fm_record, restore_fm
from fmrec.models._training import Callback, Validation, run_epochs
from fmrec.persistence import SAMPLES_VERSION, check_array, save_model
from fmrec.solvers._state import FMState, predict_csr, weighted_column_counts
from fmrec.solvers.als import ALSSolver
from fmrec.solvers.mcmc import sample_stats
from fmrec.solvers.sgd import SGDSolver


@contextmanager
def restore_on_failure(estimator):
    """Run a fit; if it fails, leave the estimator exactly as it was before (fitted or not)."""
    backup = dict(estimator.__dict__)
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(backup)
        raise


def check_warm(estimator, dtype, n_features: int | None = None, what: str = "X") -> None:
    """Continuing a fitted model needs its dtype, its rank and (when given) its width."""
    fitted = estimator.V_
    if np.dtype(dtype) != fitted.dtype:
        raise ValueError(f"dtype changed from {fitted.dtype} to {np.dtype(dtype).name} "
                         "since the model was fitted; refit with warm_start=False")
    if fitted.shape[1] != estimator.n_factors:
        raise ValueError(f"n_factors changed from {fitted.shape[1]} to {estimator.n_factors} "
                         "since the model was fitted; refit with warm_start=False")
    if n_features is not None and n_features != estimator.n_features_in_:
        raise ValueError(f"{what} has {n_features} features, but {type(estimator).__name__} "
                         f"is expecting {estimator.n_features_in_} features as input")


def warm_state(estimator) -> tuple[FMState, tuple | None]:
    """What continuing a fitted model trains from: copies of its parameters and AdaGrad sums
    (None without), and ``history_`` replaced by a copy to extend. Copies, because a fit that
    fails half-way must leave the fitted model as it was."""
    estimator.history_ = {key: list(val) for key, val in estimator.history_.items()}
    accumulators = getattr(estimator, "_accumulators", None)
    if accumulators is not None:
        accumulators = tuple(a.copy() for a in accumulators)
    return FMState(estimator.w0_, estimator.w_.copy(), estimator.V_.copy()), accumulators


class _BaseFM(BaseEstimator):
    """Shared machinery; see FMRegressor for the parameters."""

    _loss: int
    _default_metric: str

    def __init__(
        self,
        n_factors: int = 8,
        *,
        solver: str = "als",
        n_epochs: int = 50,
        learning_rate: float = 0.05,
        lr_schedule: str = "adagrad",
        reg_bias: float = 0.0,
        reg_linear: float = 0.5,
        reg_factors: float = 1.0,
        reg_power: float = 0.5,
        init_std: float = 0.1,
        fit_intercept: bool = True,
        fit_linear: bool = True,
        eval_metric: str | None = None,
        early_stopping_rounds: int | None = None,
        tol: float = 0.0,
        dtype: str = "float32",
        random_state=None,
        n_jobs: int | None = 1,
        warm_start: bool = False,
        verbose: int = 0,
        n_burn_in: int = 10,
        n_samples: int | None = None,
        groups=None,
    ):
        self.n_factors = n_factors
        self.solver = solver
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.reg_bias = reg_bias
        self.reg_linear = reg_linear
        self.reg_factors = reg_factors
        self.reg_power = reg_power
        self.init_std = init_std
        self.fit_intercept = fit_intercept
        self.fit_linear = fit_linear
        self.eval_metric = eval_metric
        self.early_stopping_rounds = early_stopping_rounds
        self.tol = tol
        self.dtype = dtype
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.warm_start = warm_start
        self.verbose = verbose
        self.n_burn_in = n_burn_in
        self.n_samples = n_samples
        self.groups = groups

    # ------------------------------------------------------------------ validation
    def _check_hyperparameters(self) -> None:
        v.check_interval("n_factors", self.n_factors, low=1, integer=True)
        v.check_choice("solver", self.solver, {"als", "sgd", "mcmc"})
        v.check_interval("n_burn_in", self.n_burn_in, low=0, integer=True)
        v.check_interval("n_samples", self.n_samples, low=1, integer=True, allow_none=True)
        if self.solver == "mcmc" and self.early_stopping_rounds is not None:
            raise ValueError("early_stopping_rounds does not apply to solver='mcmc' (the "
                             "prediction averages the samples; there is no best sweep to "
                             "keep): leave it None and choose n_epochs and n_burn_in")
        v.check_interval("n_epochs", self.n_epochs, low=1, integer=True)
        v.check_interval("learning_rate", self.learning_rate, low=0, low_open=True)
        v.check_choice("lr_schedule", self.lr_schedule, {"adagrad", "constant"})
        for name in ("reg_bias", "reg_linear", "reg_factors", "tol"):
            v.check_interval(name, getattr(self, name), low=0)
        v.check_interval("init_std", self.init_std, low=0)
        v.check_interval("reg_power", self.reg_power, low=0, high=1)
        v.check_interval("early_stopping_rounds", self.early_stopping_rounds, low=1,
                         integer=True, allow_none=True)
        v.check_choice("eval_metric", self._metric_name(), set(self._allowed_metrics))
        v.check_interval("verbose", self.verbose, low=0, integer=True)
        v.resolve_dtype(self.dtype)
        v.resolve_n_jobs(self.n_jobs)

    def _metric_name(self) -> str:
        return self.eval_metric if self.eval_metric is not None else self._default_metric

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, sample_weight=None, eval_set=None,
            callbacks: Sequence[Callback] | None = None):
        """Fit the model, starting afresh unless ``warm_start`` is set.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Design matrix; any scipy.sparse format or a dense array.
        y : array-like of shape (n_samples,)
            Targets (regression) or labels with exactly two distinct values.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights, applied in the loss and the per-row regularization.
        eval_set : tuple (X_val, y_val) or (X_val, y_val, sample_weight_val), optional
            Validation data: its ``eval_metric`` is recorded in ``history_`` after every
            epoch and drives early stopping (the best epoch's parameters are kept).
        callbacks : sequence of callables, optional
            Each is called after every epoch as ``callback(estimator, epoch, logs)`` where
            ``logs`` holds ``train_loss`` and, with an eval set, ``val_<metric>``; returning
            True stops training. The estimator's parameters are those of that epoch, and
            ``history_``, ``n_epochs_`` (and ``best_epoch_``) already include it; keys a
            callback adds to ``logs`` go to ``history_`` too.

        Returns
        -------
        self
        """
        warm = self.warm_start and hasattr(self, "V_")
        return self._fit(X, y, sample_weight, eval_set, callbacks, self.n_epochs, reset=not warm)

    def partial_fit(self, X, y, sample_weight=None, **fit_params):
        """Run one epoch of the solver on (X, y), continuing from the current parameters.

        The first call initializes the model. With ``solver="sgd"`` this is online
        learning; with ``"als"`` it is one coordinate-descent sweep over the given batch.
        Penalties scale with the feature counts of the batch (see ``reg_power``), so each
        batch regularizes the parameters it touches. ``classes`` (classifier) names both
        labels on the first call when that batch holds only one of them.
        """
        fitted = hasattr(self, "V_")
        if self.solver == "mcmc":  # one more sweep of the chain (samples after burn-in)
            return self._fit(X, y, sample_weight, fit_params.get("eval_set"),
                             fit_params.get("callbacks"), 1,
                             reset=not (fitted and hasattr(self, "_mcmc_hyper")),
                             classes=fit_params.get("classes"), partial=True)
        return self._fit(X, y, sample_weight, fit_params.get("eval_set"),
                         fit_params.get("callbacks"), 1, reset=not fitted,
                         classes=fit_params.get("classes"))

    def grow(self, n_features: int, at=None, random_state=None):
        """Widen a fitted model to ``n_features`` columns, keeping what it learned.

        New columns start as a fresh fit would start them: w = 0 and factors drawn from
        N(0, init_std²). Use it when the data gains new users, items or categories, then
        continue with ``partial_fit`` or ``fit`` under ``warm_start=True``.

        Parameters
        ----------
        n_features : int
            The new width; at least the current ``n_features_in_``.
        at : array-like of int, optional
            Where the new columns go, as positions in the current columns (``numpy.insert``
            semantics, one per new column); by default they are appended.
        random_state : int, RandomState or None
            Seeds the new factors (defaults to the estimator's ``random_state``).

        Returns
        -------
        self
        """
        check_is_fitted(self, "V_")
        if self._is_mcmc():
            raise NotImplementedError("grow is not available for models fitted with "
                                      "solver='mcmc'")
        v.check_interval("n_features", n_features, low=self.n_features_in_, integer=True)
        extra = int(n_features) - self.n_features_in_
        if extra == 0:
            return self
        at = np.full(extra, self.n_features_in_) if at is None else np.asarray(at)
        if at.shape != (extra,) or at.dtype.kind not in "iu":
            raise ValueError(f"at must hold {extra} integer positions, got {at!r}")
        if at.min() < 0 or at.max() > self.n_features_in_:
            raise ValueError(f"at must lie in [0, {self.n_features_in_}]")
        rng = check_random_state(self.random_state if random_state is None else random_state)
        dt = self.V_.dtype
        new_V = rng.normal(0.0, self.init_std, size=(extra, self.V_.shape[1])).astype(dt)
        # Everything is computed before anything is assigned: a grow that fails (out of
        # memory) leaves the model as it was.
        w = np.insert(self.w_, at, 0).astype(dt)
        V = np.insert(self.V_, at, new_V, axis=0).astype(dt)
        accumulators = getattr(self, "_accumulators", None)
        if accumulators is not None:
            a0, aw, aV = accumulators
            accumulators = (a0, np.insert(aw, at, 0).astype(dt),
                            np.insert(aV, at, 0, axis=0).astype(dt))
        self.w_, self.V_, self.n_features_in_ = w, V, int(n_features)
        if accumulators is not None:
            self._accumulators = accumulators
        return self

    def _fit(self, X, y, sample_weight, eval_set, callbacks, n_epochs, *, reset, classes=None,
             partial=False):
        with restore_on_failure(self):
            self._fit_unsafe(X, y, sample_weight, eval_set, callbacks, n_epochs, reset, classes,
                             partial)
        return self

    def _fit_unsafe(self, X, y, sample_weight, eval_set, callbacks, n_epochs, reset, classes,
                    partial=False):
        self._check_hyperparameters()
        dtype = v.resolve_dtype(self.dtype)
        if not reset:
            check_warm(self, dtype)
        X, y = v.check_X_y(self, X, y, dtype=dtype, reset=reset, y_numeric=self._loss == SQUARE)
        v.check_model_size(X.shape[1], self.n_factors, dtype)
        y = self._encode_targets(y, reset=reset, classes=classes).astype(dtype)
        sw = v.check_sample_weight(sample_weight, X, dtype)
        evaluation = self._prepare_eval_set(eval_set, dtype)
        if evaluation is None and self.early_stopping_rounds is not None:
            warnings.warn("early_stopping_rounds needs an eval_set; every epoch will run",
                          UserWarning, stacklevel=3)
        n_threads = v.resolve_n_jobs(self.n_jobs)
        rng = check_random_state(self.random_state)
        if self.solver == "mcmc":
            with threadpool_limits(limits=1, user_api="blas"):
                fit_mcmc(self, X, y, sw, evaluation, callbacks or (), n_epochs, reset,
                         n_threads, dtype, rng, partial=partial)
            return
        for name in MCMC_ATTRS:  # a previous MCMC fit's samples no longer describe the model
            self.__dict__.pop(name, None)
        hp = self._solver_hyperparameters()
        if isinstance(X, DesignMatrix):
            counts = column_counts(X, sw)
            if self.solver == "sgd":  # SGD reads materialized rows; ALS sweeps the blocks
                X = v.as_kernel_csr(X.to_csr(dtype))
        else:
            counts = weighted_column_counts(X, sw)

        state, accumulators = self._starting_state(counts, y, sw, dtype, rng, reset)
        if self._loss == SQUARE:
            self._widen_y_range(float(np.min(y)), float(np.max(y)), reset)

        if self.solver == "sgd":
            solver = SGDSolver(X, y, sw, self._loss, state, counts=counts, hp=hp, rng=rng,
                               n_threads=n_threads, accumulators=accumulators)
        else:
            solver = ALSSolver(X, y, sw, self._loss, state, counts=counts, hp=hp,
                               n_threads=n_threads)
        self._publish(state)
        with threadpool_limits(limits=1, user_api="blas"):
            self._run_epochs(solver, state, evaluation, callbacks or (), n_epochs, n_threads)
        if self.solver == "sgd":
            self._accumulators = solver.accumulators

    def _starting_state(self, counts, y, sw, dtype, rng, reset: bool) -> tuple:
        """(parameters, AdaGrad sums or None) to train from, with ``history_`` to extend:
        a fresh start (``_initial_state``, from the targets ``y`` weighted by ``sw``) or
        copies of the fitted parameters."""
        if reset:
            self.history_ = {"train_loss": []}
            return self._initial_state(counts, y, sw, dtype, rng), None
        return warm_state(self)

    def _widen_y_range(self, lo: float, hi: float, reset: bool) -> None:
        """The clipping range: this fit's targets, and those of earlier fits when continuing."""
        if not reset:
            lo, hi = min(lo, self.y_range_[0]), max(hi, self.y_range_[1])
        self.y_range_ = (lo, hi)

    def _solver_hyperparameters(self) -> dict:
        return {
            "learning_rate": float(self.learning_rate),
            "lr_schedule": self.lr_schedule,
            "reg_bias": float(self.reg_bias),
            "reg_linear": float(self.reg_linear),
            "reg_factors": float(self.reg_factors),
            "reg_power": float(self.reg_power),
            "fit_intercept": bool(self.fit_intercept),
            "fit_linear": bool(self.fit_linear),
        }

    def _initial_state(self, counts, y, sw, dtype, rng) -> FMState:
        """Intercept at the (logit of the) mean target, w = 0, V ~ N(0, init_std²)."""
        w0 = self._initial_intercept(y.astype(np.float64), sw.astype(np.float64))
        n_features = len(counts)
        V = rng.normal(0.0, self.init_std, size=(n_features, self.n_factors)).astype(dtype)
        # A feature no (weighted) training row uses would otherwise keep random factors and
        # add noise to every prediction that mentions it.
        V[counts == 0] = 0
        return FMState(w0 if self.fit_intercept else 0.0, np.zeros(n_features, dtype), V)

    def _prepare_eval_set(self, eval_set, dtype):
        eval_set = v.check_eval_set(eval_set)
        if eval_set is None:
            return None
        X_val, y_val, w_val = eval_set
        X_val = v.check_X(self, X_val, dtype=dtype, reset=False)
        y_val = v.check_array_1d_finite("y of eval_set", y_val, X_val.shape[0], None)
        y_val = self._encode_eval_targets(y_val)
        if w_val is not None:
            w_val = v.check_sample_weight(w_val, X_val, np.float64)
        return X_val, y_val, w_val

    def _run_epochs(self, solver, state, evaluation, callbacks, n_epochs, n_threads):
        """The epochs of ALS, SGD or the Dask SGD (``evaluation``: a prepared eval set)."""
        validation = None
        if evaluation is not None:
            name = self._metric_name()
            metric, greater_is_better = METRICS[name]
            validation = Validation(
                f"val_{name}", lambda: self._score_eval_set(evaluation, metric, n_threads),
                greater_is_better, self.early_stopping_rounds, self.tol)

        def figures(result) -> dict:
            loss_sum, weight_sum = result
            logs = {"train_loss": self._report_loss(loss_sum, weight_sum)}
            if isinstance(solver, ALSSolver):
                logs["objective"] = solver.objective(loss_sum)
            return logs

        run_epochs(self, solver, state, figures, n_epochs=n_epochs, validation=validation,
                   callbacks=callbacks)

    def _score_eval_set(self, evaluation, metric, n_threads: int) -> float:
        """The validation metric of the current parameters on a prepared eval set."""
        X_val, y_val, w_val = evaluation
        return metric(y_val, self._eval_output(X_val, n_threads), w_val)

    def _publish(self, state: FMState) -> None:
        """Expose the live parameters as fitted attributes."""
        self.w0_ = float(state.w0[0])
        self.w_ = state.w
        self.V_ = state.V

    def save(self, path) -> None:
        """Write the fitted model to ``path`` (.npz, no pickle); ``fmrec.load_model`` reads it.

        The file keeps what continuing the training needs too (``warm_start``): the AdaGrad
        sums of SGD and the state of an MCMC chain.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (replaced if it exists; no suffix is added).
        """
        check_is_fitted(self, "V_")
        save_model(self, path)

    # ------------------------------------------------------------------ prediction
    def _is_mcmc(self) -> bool:
        """Fitted by MCMC: predictions average the retained samples."""
        return hasattr(self, "_mcmc_hyper")

    def parameter_sets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The parameter sets whose outputs the predictions average, stacked.

        For a model fitted by MCMC, its retained samples (the chain's current state while
        none is retained yet, during burn-in through ``partial_fit``); for any other model,
        one set: the fitted parameters.

        Returns
        -------
        w0s : ndarray of shape (n_sets,)
        ws : ndarray of shape (n_sets, n_features)
        Vs : ndarray of shape (n_sets, n_features, n_factors)
        """
        check_is_fitted(self, "V_")
        if self._is_mcmc() and len(self.samples_w0_):
            return self.samples_w0_, self.samples_w_, self.samples_V_
        return np.array([self.w0_]), self.w_[None], self.V_[None]

    def _mcmc_stats(self, X, link=None, std=False):
        """Posterior mean (and std) over the samples of ŷ (or link(ŷ)) for raw X."""
        check_is_fitted(self, "V_")
        X = v.check_X(self, X, dtype=self.V_.dtype, reset=False)
        return sample_stats(X, self.parameter_sets(), v.resolve_n_jobs(self.n_jobs), link, std)

    def _raw_output(self, X, n_threads: int) -> np.ndarray:
        """ŷ before any link or clipping, for a validated CSR X or DesignMatrix (for a model
        fitted by MCMC: the mean over the retained samples)."""
        if self._is_mcmc():
            return sample_stats(X, self.parameter_sets(), n_threads, std=False)[0]
        if isinstance(X, DesignMatrix):
            return fm_output(X, self.w0_, self.w_, self.V_)
        return predict_csr(X, self.w0_, self.w_, self.V_, n_threads)

    def _decision(self, X) -> np.ndarray:
        check_is_fitted(self, "V_")
        X = v.check_X(self, X, dtype=self.V_.dtype, reset=False)
        return self._raw_output(X, v.resolve_n_jobs(self.n_jobs))

    # ------------------------------------------------------------------ persistence
    def _to_record(self) -> tuple[dict, dict]:
        """Arrays and JSON metadata of the fitted model (see ``fmrec.persistence``): the
        parameters and history, the clipping range, the best epoch, the feature names, a
        ``groups`` array, and an MCMC chain (its samples, its
        hyperparameters and its groups; the file is then of ``SAMPLES_VERSION``)."""
        arrays, meta = fm_record(self)
        fitted = meta["fitted"]
        if hasattr(self, "y_range_"):
            fitted["y_range"] = [float(x) for x in self.y_range_]
        if hasattr(self, "best_epoch_"):
            fitted["best_epoch"] = int(self.best_epoch_)
        if hasattr(self, "feature_names_in_"):
            arrays["feature_names_in"] = np.asarray(self.feature_names_in_).astype(str)
        if self.groups is not None:
            groups = np.asarray(self.groups)
            if groups.dtype.kind not in "iuf":
                raise TypeError(f"cannot save groups of dtype {groups.dtype}")
            arrays["param.groups"] = groups
        if self._is_mcmc():
            for name in SAMPLE_ATTRS:
                arrays[f"mcmc.{name.rstrip('_')}"] = np.asarray(getattr(self, name))
            arrays["mcmc.groups"] = np.asarray(self._mcmc_groups)
            for key, value in self._mcmc_hyper.items():
                arrays[f"mcmc.hyper.{key}"] = np.asarray(value, dtype=np.float64)
            meta["format_version"] = SAMPLES_VERSION
        return arrays, meta

    @classmethod
    def _from_record(cls, meta: dict, arrays: dict):
        """The model ``_to_record`` described, every field and shape checked."""
        model, fitted = restore_fm(cls, meta, arrays, {"y_range": "list", "best_epoch": "count"})
        n, k = model.V_.shape
        if "y_range" in fitted:
            lo_hi = fitted["y_range"]
            if len(lo_hi) != 2 or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                          for x in lo_hi):
                raise ValueError(f"fitted.y_range must hold two numbers, got {lo_hi!r}")
            model.y_range_ = (float(lo_hi[0]), float(lo_hi[1]))
        if "best_epoch" in fitted:
            model.best_epoch_ = fitted["best_epoch"]
        if "feature_names_in" in arrays:
            names = check_array(arrays, "feature_names_in", (n,), "U")
            model.feature_names_in_ = names.astype(object)
        if "param.groups" in arrays:
            model.groups = check_array(arrays, "param.groups", (n,), "iuf")
        if any(key.startswith("mcmc.") for key in arrays):
            model._restore_chain(arrays)
        return model

    def _restore_chain(self, arrays: dict) -> None:
        """The MCMC samples, hyperparameters and groups of a record, shapes checked."""
        n, k = self.V_.shape
        s = len(check_array(arrays, "mcmc.samples_w0", (None,)))
        self.samples_w0_ = arrays["mcmc.samples_w0"]
        self.samples_w_ = check_array(arrays, "mcmc.samples_w", (s, n))
        self.samples_V_ = check_array(arrays, "mcmc.samples_V", (s, n, k))
        self.samples_alpha_ = check_array(arrays, "mcmc.samples_alpha", (s,))
        g = len(check_array(arrays, "mcmc.hyper.lambda_w", (None,)))
        groups = check_array(arrays, "mcmc.groups", (n,), "iu")
        if n and (groups.min() < 0 or groups.max() >= g):
            raise ValueError(f"the MCMC groups must lie in [0, {g}) (the prior has {g} groups)")
        self._mcmc_groups = groups.astype(np.int32)
        shapes = {"alpha": (1,), "lambda_w": (g,), "mu_w": (g,), "lambda_V": (g, k),
                  "mu_V": (g, k)}
        self._mcmc_hyper = {key: check_array(arrays, f"mcmc.hyper.{key}", shape)
                            for key, shape in shapes.items()}
