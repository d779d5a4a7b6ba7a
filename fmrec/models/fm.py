"""FMRegressor and FMClassifier: scikit-learn estimators over the Cython FM kernels."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr, ndtri
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from fmrec._links import LOGISTIC, SQUARE, sigmoid
from fmrec.models._base import _BaseFM
from fmrec.persistence import check_array, register
from fmrec.solvers.mcmc import sample_stats


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

    @classmethod
    def _from_record(cls, meta: dict, arrays: dict):
        """``_BaseFM``'s record, which for a regressor must hold the training targets' range
        (predictions are clipped to it) and no classifier's labels."""
        if "classes" in arrays:
            raise ValueError("a regressor's record holds class labels: the file is a "
                             "classifier's with another class name")
        fitted = meta.get("fitted")
        if isinstance(fitted, dict) and "y_range" not in fitted:
            raise ValueError("fitted lacks 'y_range', the range a regressor clips to")
        return super()._from_record(meta, arrays)


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
            return sample_stats(X, self.parameter_sets(), n_threads, ndtr, std=False)[0]
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


