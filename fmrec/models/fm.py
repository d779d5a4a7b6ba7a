"""FMRegressor and FMClassifier: scikit-learn estimators over the Cython FM kernels."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import ndtr, ndtri
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from fmrec import _validation as v
from fmrec._kernels import predict as _predict
from fmrec._links import LOGISTIC, SQUARE, sigmoid
from fmrec.design import DesignMatrix, column_counts, fm_output
from fmrec.metrics import METRICS
from fmrec.models._record import fm_record, restore_fm
from fmrec.persistence import SAMPLES_VERSION, check_array, register, save_model
from fmrec.solvers._state import Diverged, FMState, weighted_column_counts
from fmrec.solvers.als import ALSSolver
from fmrec.solvers.mcmc import MCMC_ATTRS, SAMPLE_ATTRS, fit_mcmc, kernel_input, sample_stats
from fmrec.solvers.sgd import SGDSolver

logger = logging.getLogger("fmrec")

Callback = Callable[["BaseEstimator", int, dict], bool | None]


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
            True stops training. The estimator's parameters are those of that epoch.

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
        self.w_ = np.insert(self.w_, at, 0).astype(dt)
        self.V_ = np.insert(self.V_, at, new_V, axis=0).astype(dt)
        accumulators = getattr(self, "_accumulators", None)
        if accumulators is not None:
            a0, aw, aV = accumulators
            self._accumulators = (a0, np.insert(aw, at, 0).astype(dt),
                                  np.insert(aV, at, 0, axis=0).astype(dt))
        self.n_features_in_ = int(n_features)
        return self

    def _fit(self, X, y, sample_weight, eval_set, callbacks, n_epochs, *, reset, classes=None,
             partial=False):
        backup = dict(self.__dict__)
        try:
            self._fit_unsafe(X, y, sample_weight, eval_set, callbacks, n_epochs, reset, classes,
                             partial)
        except BaseException:
            # A failed fit leaves a previously fitted model exactly as it was.
            self.__dict__.clear()
            self.__dict__.update(backup)
            raise
        return self

    def _fit_unsafe(self, X, y, sample_weight, eval_set, callbacks, n_epochs, reset, classes,
                    partial=False):
        self._check_hyperparameters()
        dtype = v.resolve_dtype(self.dtype)
        if not reset:
            self._check_warm(dtype)
        X, y = v.check_X_y(self, X, y, dtype=dtype, reset=reset, y_numeric=self._loss == SQUARE)
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
        self.n_epochs_ = len(self.history_["train_loss"])

    def _check_warm(self, dtype) -> None:
        """Continuing a fitted model needs its dtype and rank."""
        if np.dtype(dtype) != self.V_.dtype:
            raise ValueError(f"dtype changed from {self.V_.dtype} to {np.dtype(dtype).name} "
                             "since the model was fitted; refit with warm_start=False")
        if self.V_.shape[1] != self.n_factors:
            raise ValueError(f"n_factors changed from {self.V_.shape[1]} to {self.n_factors} "
                             "since the model was fitted; refit with warm_start=False")

    def _starting_state(self, counts, y, sw, dtype, rng, reset: bool) -> tuple:
        """(parameters, AdaGrad sums or None) to train from, with ``history_`` to extend:
        a fresh start (``_initial_state``, from the targets ``y`` weighted by ``sw``) or
        copies of the fitted parameters."""
        if reset:
            self.history_ = {"train_loss": []}
            return self._initial_state(counts, y, sw, dtype, rng), None
        self.history_ = {key: list(val) for key, val in self.history_.items()}
        return (FMState(self.w0_, self.w_.copy(), self.V_.copy()),
                getattr(self, "_accumulators", None))

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
        name = self._metric_name()
        metric, greater_is_better = METRICS[name]
        key = f"val_{name}"
        rounds = self.early_stopping_rounds
        best_score, best_state, since_best = None, None, 0
        last_good = state.copy()
        start = len(self.history_["train_loss"])
        for epoch in range(start, start + n_epochs):
            try:
                loss_sum, weight_sum = solver.epoch()
            except Diverged as exc:
                state.assign(last_good)
                self._publish(state)
                hint = (f"training diverged at epoch {epoch} ({exc}); try a smaller "
                        f"learning_rate (now {self.learning_rate}) or more regularization")
                if epoch == start:
                    raise ValueError(hint) from None
                warnings.warn(hint + "; keeping the last finite parameters",
                              ConvergenceWarning, stacklevel=4)
                break
            self._publish(state)
            logs = {"train_loss": self._report_loss(loss_sum, weight_sum)}
            if isinstance(solver, ALSSolver):
                logs["objective"] = solver.objective(loss_sum)
            if evaluation is not None:
                logs[key] = self._score_eval_set(evaluation, metric, n_threads)
            for name_, value in logs.items():
                self.history_.setdefault(name_, []).append(value)
            if self.verbose:
                _log_epoch(epoch, logs)
            last_good = state.copy() if rounds is None or evaluation is None else last_good

            stop = False
            if evaluation is not None:
                score = logs[key] if greater_is_better else -logs[key]
                if best_score is None or score > best_score + self.tol:
                    best_score, best_state, since_best = score, state.copy(), 0
                    self.best_epoch_ = epoch
                    last_good = best_state
                else:
                    since_best += 1
                    stop = rounds is not None and since_best >= rounds
            for callback in callbacks:
                stop = bool(callback(self, epoch, logs)) or stop
            if stop:
                break
        if evaluation is not None and rounds is not None and best_state is not None:
            state.assign(best_state)
            self._publish(state)

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

    def _samples(self) -> tuple:
        """The retained samples; before any (burn-in, through partial_fit) the chain's state."""
        if len(self.samples_w0_):
            return self.samples_w0_, self.samples_w_, self.samples_V_
        return np.array([self.w0_]), self.w_[None], self.V_[None]

    def _mcmc_stats(self, X, link=None, std=False):
        """Posterior mean (and std) over the samples of ŷ (or link(ŷ)) for raw X."""
        check_is_fitted(self, "V_")
        X = v.check_X(self, X, dtype=self.V_.dtype, reset=False)
        X = kernel_input(X, self.V_.dtype)
        return sample_stats(X, self._samples(), v.resolve_n_jobs(self.n_jobs), link, std)

    def _raw_output(self, X, n_threads: int) -> np.ndarray:
        """ŷ before any link or clipping, for a validated CSR X or DesignMatrix (for a model
        fitted by MCMC: the mean over the retained samples)."""
        if self._is_mcmc():
            return sample_stats(kernel_input(X, self.V_.dtype), self._samples(), n_threads,
                                std=False)[0]
        if isinstance(X, DesignMatrix):
            return fm_output(X, self.w0_, self.w_, self.V_)
        out = np.empty(X.shape[0], dtype=self.V_.dtype)
        if X.shape[0]:
            _predict.predict(X.indptr, X.indices, X.data, self.w0_, self.w_, self.V_,
                             out, n_threads)
        return out.astype(np.float64)

    def _decision(self, X) -> np.ndarray:
        check_is_fitted(self, "V_")
        X = v.check_X(self, X, dtype=self.V_.dtype, reset=False)
        return self._raw_output(X, v.resolve_n_jobs(self.n_jobs))

    # ------------------------------------------------------------------ persistence
    def _to_record(self) -> tuple[dict, dict]:
        """Arrays and JSON metadata of the fitted model (see ``fmrec.persistence``): the
        parameters and history, the clipping range, the best epoch, the feature names, the
        AdaGrad sums of SGD, a ``groups`` array, and an MCMC chain (its samples, its
        hyperparameters and its groups; the file is then of ``SAMPLES_VERSION``)."""
        arrays, meta = fm_record(self)
        fitted = meta["fitted"]
        if hasattr(self, "y_range_"):
            fitted["y_range"] = [float(x) for x in self.y_range_]
        if hasattr(self, "best_epoch_"):
            fitted["best_epoch"] = int(self.best_epoch_)
        if hasattr(self, "feature_names_in_"):
            arrays["feature_names_in"] = np.asarray(self.feature_names_in_).astype(str)
        if getattr(self, "_accumulators", None) is not None:
            arrays.update(zip(("acc_w0", "acc_w", "acc_V"), self._accumulators, strict=True))
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
        if any(key.startswith("acc_") for key in arrays):
            acc = tuple(check_array(arrays, name, shape) for name, shape in
                        (("acc_w0", (1,)), ("acc_w", (n,)), ("acc_V", (n, k))))
            if any(a.dtype != model.V_.dtype for a in acc):
                raise ValueError(f"the AdaGrad sums must be of the parameters' dtype "
                                 f"{model.V_.dtype}")
            model._accumulators = acc
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


@register
class FMRegressor(RegressorMixin, _BaseFM):
    """Factorization Machine regressor (square loss).

    ŷ(x) = w0 + Σ_i w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j, fitted by coordinate descent
    (``solver="als"``, libFM's ALS: no learning rate) or SGD/AdaGrad (``solver="sgd"``).

    Parameters
    ----------
    n_factors : int, default=8
        Rank k of the pairwise interactions (columns of ``V_``).
    solver : {"als", "sgd", "mcmc"}, default="als"
        Coordinate descent (exact per-coordinate minimization), stochastic gradient, or
        Bayesian FM by Gibbs sampling (libFM's MCMC; see ``fmrec.solvers.mcmc``). MCMC has no
        regularization or learning rate to tune: priors on w0, w and V and normal-gamma
        hyperpriors (per group, see ``groups``) are sampled with them, so ``learning_rate``,
        ``lr_schedule``, ``reg_*`` and ``reg_power`` are ignored; ``init_std`` sets the
        chain's starting V. Predictions average the retained samples.
    n_epochs : int, default=50
        Sweeps (ALS, MCMC) or passes over the shuffled rows (SGD).
    learning_rate : float, default=0.05
        SGD step size (the AdaGrad base rate with ``lr_schedule="adagrad"``).
    lr_schedule : {"adagrad", "constant"}, default="adagrad"
        SGD step rule. AdaGrad scales each parameter's step by its gradient history.
    reg_bias, reg_linear, reg_factors : float, default=0.0, 0.5, 1.0
        L2 penalties of w0, w and V. Both solvers minimize
        Σ_i s_i loss_i + ½ Σ_θ reg_θ n_θ^reg_power θ², where n_θ is the (sample-weighted)
        number of training rows that involve θ, so the same values mean the same objective
        whichever solver runs.
    reg_power : float in [0, 1], default=0.5
        How penalties grow with a feature's frequency: 0 is libFM's plain L2 penalty, 1
        penalizes every occurrence (plain SGD's habit, and ALS-WR's).
    init_std : float, default=0.1
        Standard deviation of the normal initialization of ``V_``.
    fit_intercept, fit_linear : bool, default=True
        Learn w0 / w; when False they stay at 0.
    eval_metric : {"rmse", "mae"}, default="rmse"
        Validation metric recorded in ``history_`` with an ``eval_set``.
    early_stopping_rounds : int or None, default=None
        With an ``eval_set``: stop after this many epochs without improvement by more than
        ``tol`` and keep the best epoch's parameters.
    tol : float, default=0.0
        Minimum improvement of the validation metric that counts for early stopping.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the data copy and of the parameters. float32 halves memory.
    random_state : int, RandomState or None
        Seeds the initialization and the SGD row order. With ``n_jobs=1`` results are
        bit-for-bit reproducible; Hogwild SGD on several threads is not.
    n_jobs : int or None, default=1
        Threads of the kernels (-1: every core). SGD runs Hogwild; ALS sweeps are sequential
        and use threads for their caches; prediction is parallel over rows.
    warm_start : bool, default=False
        Continue from the fitted parameters on the next ``fit``.
    verbose : int, default=0
        Log each epoch's figures to the ``fmrec`` logger.
    n_burn_in : int, default=10
        MCMC: sweeps of a fresh chain whose samples are discarded.
    n_samples : int or None, default=None
        MCMC: at most this many samples are retained per ``fit`` call, evenly spaced over the
        sweeps after burn-in and always including the last (thinning); None keeps every
        sweep after burn-in. The samples cost n_kept × n_features × (n_factors + 1) × 4 bytes
        (float32), e.g. 19 MB for 200 samples of 2,625 features at rank 8.
    groups : array-like of int of shape (n_features,), optional
        MCMC: the group of every feature (e.g. the encoder field it comes from); each group
        has its own prior means and precisions of w and of each factor of V. Labels are any
        non-negative integers. Default: one group for all features. Ignored by the other
        solvers.
    clip_predictions : bool, default=True
        Clip ``predict`` to the range of the training targets, as libFM does.

    Attributes
    ----------
    w0_ : float
    w_ : ndarray of shape (n_features,)
    V_ : ndarray of shape (n_features, n_factors)
    history_ : dict of lists
        Per epoch: ``train_loss`` (mean squared error before each SGD update, or after the
        ALS sweep), ``objective`` (ALS), and ``val_<metric>`` with an eval set.
    y_range_ : tuple of float
        Training target range used for clipping.
    n_features_in_ : int
    samples_w0_, samples_w_, samples_V_, samples_alpha_ : ndarray
        MCMC only: the retained samples of w0, w (float32), V (float32) and of the noise
        precision α, in sweep order; ``w0_``, ``w_`` and ``V_`` hold the chain's last state
        (where ``warm_start`` continues), not an average.

    With ``solver="mcmc"``, ``history_`` holds per sweep the current sample's ``train_loss``,
    its ``noise_precision`` and, with an ``eval_set``, the metric of the running posterior
    mean over the samples retained so far (the current sample's during burn-in);
    ``early_stopping_rounds`` must stay None. Sample weights scale each row's noise
    precision.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from fmrec import FMRegressor
    >>> X = sp.random(200, 30, density=0.1, format="csr", random_state=0)
    >>> y = np.asarray(X.sum(axis=1)).ravel()
    >>> model = FMRegressor(n_factors=4, n_epochs=5, random_state=0).fit(X, y)
    >>> model.predict(X[:3]).shape
    (3,)
    >>> bayes = FMRegressor(n_factors=4, solver="mcmc", n_epochs=30, random_state=0).fit(X, y)
    >>> mean, std = bayes.predict(X[:3], return_std=True)
    >>> bayes.samples_V_.shape
    (20, 30, 4)
    """

    _loss = SQUARE
    _default_metric = "rmse"
    _allowed_metrics = ("rmse", "mae")

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
        clip_predictions: bool = True,
    ):
        super().__init__(
            n_factors,
            solver=solver,
            n_epochs=n_epochs,
            learning_rate=learning_rate,
            lr_schedule=lr_schedule,
            reg_bias=reg_bias,
            reg_linear=reg_linear,
            reg_factors=reg_factors,
            reg_power=reg_power,
            init_std=init_std,
            fit_intercept=fit_intercept,
            fit_linear=fit_linear,
            eval_metric=eval_metric,
            early_stopping_rounds=early_stopping_rounds,
            tol=tol,
            dtype=dtype,
            random_state=random_state,
            n_jobs=n_jobs,
            warm_start=warm_start,
            verbose=verbose,
            n_burn_in=n_burn_in,
            n_samples=n_samples,
            groups=groups,
        )
        self.clip_predictions = clip_predictions

    def _encode_targets(self, y, *, reset, classes=None):
        return y

    def _encode_eval_targets(self, y):
        return np.asarray(y, dtype=np.float64)

    def _initial_intercept(self, y, sw) -> float:
        return float(np.average(y, weights=sw))

    def _report_loss(self, loss_sum, weight_sum) -> float:
        return 2.0 * loss_sum / weight_sum  # the kernels sum ½(ŷ-y)²: report the MSE

    def _eval_output(self, X, n_threads):
        return self._clip(self._raw_output(X, n_threads))

    def _clip(self, out):
        return np.clip(out, *self.y_range_) if self.clip_predictions else out

    def predict(self, X, return_std: bool = False):
        """Predicted targets, clipped to the training range unless ``clip_predictions=False``.

        For a model fitted with ``solver="mcmc"`` this is the mean of the retained samples'
        outputs; ``return_std=True`` also returns their standard deviation per row (the
        posterior uncertainty of ŷ(x), not including the noise: add ``1 / noise_precision_``
        to its square for the predictive variance of a new target).
        """
        if not return_std:
            return self._clip(self._decision(X))
        if not self._is_mcmc():
            raise ValueError("return_std=True needs a model fitted with solver='mcmc'")
        mean, std = self._mcmc_stats(X, std=True)
        return self._clip(mean), std

    @property
    def noise_precision_(self) -> float:
        """MCMC: posterior mean of the noise precision α over the retained samples."""
        if not self._is_mcmc():
            raise AttributeError("noise_precision_ exists for models fitted with "
                                 "solver='mcmc'")
        return float(np.mean(self.samples_alpha_)) if len(self.samples_alpha_) else \
            float(self._mcmc_hyper["alpha"][0])


@register
class FMClassifier(ClassifierMixin, _BaseFM):
    """Factorization Machine binary classifier (log loss on σ(ŷ)).

    Same parameters as :class:`FMRegressor` (without ``clip_predictions``); ``eval_metric``
    is "logloss" (default) or "auc". Labels can be any two values; ``classes_`` holds them
    sorted and the second is the positive class. With ``solver="mcmc"`` the link is the
    probit Φ(ŷ) instead of σ(ŷ) (Gibbs sampling with truncated-normal latent targets) and
    ``predict_proba`` averages Φ(ŷ) over the retained samples.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from fmrec import FMClassifier
    >>> X = sp.random(200, 30, density=0.1, format="csr", random_state=0)
    >>> y = np.where(np.asarray(X.sum(axis=1)).ravel() > 0.5, "yes", "no")
    >>> clf = FMClassifier(n_factors=4, n_epochs=5, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    """

    _loss = LOGISTIC
    _default_metric = "logloss"
    _allowed_metrics = ("logloss", "auc")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def _encode_targets(self, y, *, reset, classes=None):
        check_classification_targets(y)
        if reset:
            found = np.unique(y)
            labels = np.unique(classes) if classes is not None else found
            if len(labels) != 2:
                raise ValueError(f"Only binary classification is supported: y needs exactly "
                                 f"2 classes, got {len(labels)} "
                                 f"class{'es' if len(labels) > 1 else ''}: "
                                 f"{labels[:10].tolist()}")
            if classes is not None and not np.isin(found, labels).all():
                raise ValueError(f"y has labels outside classes={labels.tolist()}")
            self.classes_ = labels
        return self._labels_to_01(y)

    def _labels_to_01(self, y):
        y = np.asarray(y)
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            raise ValueError(f"y has labels {np.unique(y[unknown])[:5].tolist()} not among "
                             f"the fitted classes_ {self.classes_.tolist()}")
        return (y == self.classes_[1]).astype(np.float64)

    def _encode_eval_targets(self, y):
        return self._labels_to_01(y)

    def _initial_intercept(self, y, sw) -> float:
        p = float(np.clip(np.average(y, weights=sw), 1e-6, 1 - 1e-6))
        return math.log(p / (1 - p))

    def _report_loss(self, loss_sum, weight_sum) -> float:
        return loss_sum / weight_sum

    def _eval_output(self, X, n_threads):
        if self._is_mcmc():  # the posterior predictive probability
            return sample_stats(kernel_input(X, self.V_.dtype), self._samples(), n_threads,
                                ndtr, std=False)[0]
        out = self._raw_output(X, n_threads)
        return out if self._metric_name() == "auc" else sigmoid(out)

    def decision_function(self, X) -> np.ndarray:
        """The FM output ŷ (log-odds of the positive class ``classes_[1]``).

        With ``solver="mcmc"``: Φ⁻¹ of the posterior predictive probability (the mean over
        the samples of Φ(ŷ)), so it ranks rows exactly as ``predict_proba`` does.
        """
        if self._is_mcmc():
            p = self._mcmc_stats(X, link=ndtr)[0]
            return ndtri(np.clip(p, 1e-300, 1.0 - 1e-16))
        return self._decision(X)

    def predict_proba(self, X) -> np.ndarray:
        """Columns: P(classes_[0]), P(classes_[1]).

        With ``solver="mcmc"``, P(classes_[1]) is the mean over the retained samples of
        Φ(ŷ) (probit link).
        """
        check_is_fitted(self, "V_")
        if self._is_mcmc():
            p = self._mcmc_stats(X, link=ndtr)[0]
        else:
            p = sigmoid(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        """The more likely of ``classes_`` for each row."""
        check_is_fitted(self, "V_")
        if self._is_mcmc():
            return self.classes_[(self.predict_proba(X)[:, 1] > 0.5).astype(int)]
        return self.classes_[(self.decision_function(X) > 0).astype(int)]

    # ------------------------------------------------------------------ persistence
    def _to_record(self) -> tuple[dict, dict]:
        """``_BaseFM``'s record plus the labels ``classes_`` (numbers, booleans or str)."""
        arrays, meta = super()._to_record()
        classes = np.asarray(self.classes_)
        if classes.dtype.kind not in "biufU":
            raise TypeError(f"cannot save classes_ of dtype {classes.dtype} without pickle; "
                            "use labels that are numbers, booleans or strings")
        arrays["classes"] = classes
        return arrays, meta

    @classmethod
    def _from_record(cls, meta: dict, arrays: dict):
        """The classifier ``_to_record`` described (its two labels included)."""
        model = super()._from_record(meta, arrays)
        model.classes_ = check_array(arrays, "classes", (2,), "biufU")
        return model


def _log_epoch(epoch: int, logs: dict) -> None:
    # verbose=1 should show something even when the application configured no logging.
    if not logger.hasHandlers():
        logger.addHandler(logging.StreamHandler())
        logger.setLevel(logging.INFO)
    logger.info("epoch %d %s", epoch, " ".join(f"{k}={val:.6g}" for k, val in logs.items()))

