"""Bayesian Factorization Machine by Gibbs sampling (``solver="mcmc"``).

The model of Freudenthaler, Schmidt-Thieme and Rendle (2011), as in libFM and myFM:

    y_i ~ N(ŷ_i, 1 / (α s_i))           (s_i: sample weight, 1 by default)
    w0 ~ N(0, 1 / λ0)                     λ0 = 0: flat prior
    w_j ~ N(μ_w[g], 1 / λ_w[g])           g = group of feature j
    v_jf ~ N(μ_v[g, f], 1 / λ_v[g, f])
    μ ~ N(μ0, 1 / (γ0 λ)),  λ ~ Gamma(a0 / 2, rate b0 / 2),  α ~ Gamma(a0 / 2, rate b0 / 2)

with μ0 = 0, γ0 = a0 = b0 = 1 (libFM's defaults). Every parameter is drawn from its full
conditional by the ALS column pass (``als_sweep`` with its Gibbs arguments: O(k·nnz) per
sweep, the same result for any number of threads); the O(d·k) hyperparameters are drawn here
in NumPy before each sweep. Classification uses the probit link: each sweep first draws
latent targets z_i ~ N(ŷ_i, 1) truncated to z_i > 0 (positive rows) or z_i < 0, then sweeps
the square loss on z with α = 1.

Samples: after ``n_burn_in`` sweeps every retained sweep's (w0, w, V) is copied to float32
arrays (``n_samples`` thins them), costing n_kept × n_features × (n_factors + 1) × 4 bytes;
predictions average the retained samples' outputs (or, for the classifier, Φ of them).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.special import log_ndtr, ndtr, ndtri_exp

from fmrec._kernels import als as _als
from fmrec._links import LOGISTIC, SQUARE
from fmrec.design import DesignMatrix, fm_output
from fmrec.solvers._blocks import column_blocks_and_caches, kernel_csc, split_design
from fmrec.solvers._state import Diverged, FMState, predict_csr

# Hyperpriors (libFM's defaults): Gamma(A0 / 2, rate B0 / 2) on every precision and on α;
# N(MU0, 1 / (GAMMA0 λ)) on every prior mean; w0 flat.
A0, B0, GAMMA0, MU0, W0_PREC = 1.0, 1.0, 1.0, 0.0, 0.0
HYPER_NAMES = ("alpha", "lambda_w", "mu_w", "lambda_V", "mu_V")
CACHE_REFRESH = 10
# Blocks averaging more non-zeros per row than this are sampled per entity. One-hot ids (1)
# stay flat columns; an id plus a few categories or genres (ml-100k: users 3, items 2.7) is
# faster per entity, since their dense columns (a gender covers half the rows) cost a gather
# of every row's caches per factor where a block pass makes a few sequential passes: the
# sweep is 13-27% faster on ml-100k. (ALS keeps its own threshold: its figures were
# picked with it, and it gains nothing there.)
BLOCK_MIN_ROW_NNZ = 2.0


def initial_hyper(n_groups: int, k: int) -> dict:
    """α = 1, every λ = 1 and every μ = 0 (libFM's start)."""
    return {"alpha": np.ones(1), "lambda_w": np.ones(n_groups), "mu_w": np.zeros(n_groups),
            "lambda_V": np.ones((n_groups, k)), "mu_V": np.zeros((n_groups, k))}


def prior_table(hyper: dict) -> np.ndarray:
    """One row per group: [λ_w, μ_w, λ_v1..k, μ_v1..k], the kernel's ``prior``."""
    return np.ascontiguousarray(np.column_stack(
        [hyper["lambda_w"], hyper["mu_w"], hyper["lambda_V"], hyper["mu_V"]]), dtype=np.float64)


def group_membership(groups: np.ndarray, n_groups: int) -> sp.csr_matrix:
    """The (n_groups, d) 0/1 matrix of which group each column belongs to."""
    d = len(groups)
    return sp.csr_matrix((np.ones(d), (groups, np.arange(d))), shape=(n_groups, d))


def sample_group_prior(theta: np.ndarray, groups: np.ndarray, group_sizes: np.ndarray,
                       lam: np.ndarray, rng: np.random.Generator,
                       membership: sp.csr_matrix | None = None):
    """Draw (μ, λ) of every group (and factor, for 2-D ``theta``) from the normal-gamma
    conditional: μ | λ first, then λ | μ.

    The per-group sums are products with ``membership`` (``group_membership(groups)``,
    built here when not given): one sparse product for all factors, adding each group's
    values in column order as ``np.bincount`` would.
    """
    if membership is None:
        membership = group_membership(groups, len(group_sizes))
    sums = membership @ theta
    size = group_sizes if theta.ndim == 1 else group_sizes[:, None]
    mu = ((sums + GAMMA0 * MU0) / (size + GAMMA0)
          + rng.standard_normal(sums.shape) / np.sqrt((size + GAMMA0) * lam))
    ss = membership @ (theta - mu[groups]) ** 2
    rate = 0.5 * (B0 + ss + GAMMA0 * (mu - MU0) ** 2)
    lam = rng.gamma(0.5 * (A0 + size + 1), 1.0 / rate)
    return mu, np.maximum(lam, 1e-300)


def truncated_latent(yhat: np.ndarray, positive: np.ndarray, u: np.ndarray) -> np.ndarray:
    """z ~ N(ŷ, 1) truncated to z > 0 where ``positive``, else to z < 0, by inversion.

    With t ~ N(0, 1) | t > b (b = -ŷ for positives, ŷ for negatives), t = -Φ⁻¹(u Φ(-b)),
    computed through log Φ so it stays exact far in the tails; z = ŷ ± t.
    """
    b = np.where(positive, -yhat, yhat)
    t = -ndtri_exp(np.log(u) + log_ndtr(-b))
    t = np.maximum(t, b)  # rounding at the boundary
    return np.where(positive, yhat + t, yhat - t)


class MCMCSolver:
    """Gibbs sweeps over a CSR X or a DesignMatrix.

    ``hyper`` is the chain's hyperparameter state (see ``initial_hyper``), updated in place.
    ``fixed`` (a test hook, also reachable as the estimator's private ``_mcmc_fixed``
    attribute) pins any of ``alpha``, ``lambda_w``, ``mu_w``, ``lambda_V``, ``mu_V`` (values
    broadcast to their shapes) and sets ``w0_prec``; pinned ones are not drawn.
    """

    def __init__(self, X: sp.csr_matrix, y, sample_weight, classification: bool,
                 state: FMState, *, groups: np.ndarray, hyper: dict, rng: np.random.Generator,
                 n_threads: int, fit_intercept: bool, fit_linear: bool, fixed: dict | None = None):
        dt = state.w.dtype
        # A DesignMatrix's long relation blocks are swept per entity (fmrec.solvers._blocks), after
        # the flat columns, as in ALS; short ones join the flat columns.
        self.parts, self.skip = [], np.empty(0, np.uint8)
        if isinstance(X, DesignMatrix):
            X, self.parts, self.skip = split_design(X, dt, max_row_nnz=BLOCK_MIN_ROW_NNZ)
        self.X, self.y, self.sw, self.state = X, y, sample_weight, state
        self.classification, self.rng, self.n_threads = classification, rng, n_threads
        self.fit_intercept, self.fit_linear = fit_intercept, fit_linear
        self.groups = np.ascontiguousarray(groups, dtype=np.int32)
        self.n_groups = len(hyper["mu_w"])
        self.group_sizes = np.bincount(self.groups, minlength=self.n_groups).astype(np.float64)
        self.membership = group_membership(self.groups, self.n_groups)
        self.hyper = {key: np.array(val, dtype=np.float64) for key, val in hyper.items()}
        self.fixed = dict(fixed or {})
        for key, val in self.fixed.items():
            if key in self.hyper:
                self.hyper[key] = np.broadcast_to(np.asarray(val, np.float64),
                                                  self.hyper[key].shape).copy()
        if classification:
            self.hyper["alpha"][:] = 1.0
        self.w0_prec = float(self.fixed.get("w0_prec", W0_PREC))
        self.csc, self.values, self.codes = kernel_csc(X, dt)
        self.blocks, self.r, self.q = column_blocks_and_caches(self.csc, state.V.shape[1],
                                                               n_threads, dt)
        self.target = np.array(y, dtype=dt)  # y, or the latent z of the probit model
        # weights count as repetitions of rows (as in the other solvers), also in α's shape
        self.n_eff = float(np.sum(sample_weight, dtype=np.float64))
        self.dummy_reg = np.zeros(X.shape[1], dt)
        self.positive = np.asarray(y) > 0.5
        self.sweeps_since_refresh = None  # the caches are not filled yet
        self.sse = None
        self.normals = None

    def epoch(self) -> float:
        """One Gibbs scan; returns the training loss of the new sample (MSE, or the probit
        model's log loss)."""
        st, X = self.state, self.X
        # The sweep leaves the caches current (r = ŷ - target, q), so they are rebuilt from
        # scratch only every CACHE_REFRESH sweeps, against the slow drift of rounding.
        refresh = (self.sweeps_since_refresh is None
                   or self.sweeps_since_refresh >= CACHE_REFRESH - 1)
        if self.classification:
            if refresh:
                self._fill_caches(LOGISTIC)
                yhat = self.r.astype(np.float64)
            else:
                yhat = self.r.astype(np.float64) + self.target
            u = 1.0 - self.rng.random(len(yhat))  # in (0, 1]: log(u) stays finite
            z = truncated_latent(yhat, self.positive, u)
            self.target[:] = z
            self.r[:] = yhat - self.target
        elif refresh:
            self._fill_caches(SQUARE)
        self.sweeps_since_refresh = 0 if refresh else self.sweeps_since_refresh + 1
        self._sample_hyper()
        k = st.V.shape[1]
        # drawn into the same buffer every sweep (a fresh one costs its page faults)
        if self.normals is None or len(self.normals) != 1 + X.shape[1] * (k + 1):
            self.normals = np.empty(1 + X.shape[1] * (k + 1))
        normals = self.rng.standard_normal(out=self.normals)
        prior = prior_table(self.hyper)
        alpha = float(self.hyper["alpha"][0])
        loss_sum, weight_sum, bad = _als.als_sweep(
            self.csc.indptr, self.csc.indices, self.values, self.codes, self.target, self.sw,
            SQUARE, st.w0, st.w, st.V, self.r, self.q, self.w0_prec, self.dummy_reg,
            self.dummy_reg, self.fit_intercept, self.fit_linear, self.blocks, self.n_threads,
            self.skip, normals, self.groups, prior, alpha, MU0,
        )
        if self.parts:
            gibbs = {"alpha": alpha, "normals": normals, "groups": self.groups, "prior": prior}
            for part in self.parts:
                sq_sum = part.sweep(st, self.r, self.q, self.target, self.sw, SQUARE, None, None,
                                    self.fit_linear, gibbs=gibbs)
            if sq_sum is None:
                r = self.r.astype(np.float64)
                sq_sum = float(np.dot(self.sw.astype(np.float64), r * r))
            loss_sum = 0.5 * sq_sum  # the last block's push summed the rows after all blocks
            bad = bad or not np.isfinite(loss_sum)
        if bad or not st.is_finite():
            raise Diverged("the Gibbs sweep produced non-finite values")
        self.sse = 2.0 * loss_sum  # Σ s (ŷ - y)² of the new sample: α's next draw reads it
        if not self.classification:
            return 2.0 * loss_sum / weight_sum
        yhat = self.r.astype(np.float64) + self.target
        return probit_log_loss(self.y, yhat, self.sw)

    def _fill_caches(self, loss: int) -> None:
        st, X = self.state, self.X
        _als.compute_caches(X.indptr, X.indices, X.data, self.target, loss, float(st.w0[0]),
                            st.w, st.V, self.r, self.q, self.n_threads)
        for part in self.parts:
            part.add_to_caches(st.w, st.V, self.r, self.q)

    def _sample_hyper(self) -> None:
        h, rng, st = self.hyper, self.rng, self.state
        if not self.classification and "alpha" not in self.fixed:
            sse = self.sse
            if sse is None:  # first sweep: from the fresh caches
                r = self.r.astype(np.float64)
                sse = float(np.sum(self.sw * r * r))
            h["alpha"][:] = rng.gamma(0.5 * (A0 + self.n_eff), 2.0 / (B0 + sse))
        if self.fit_linear and not {"mu_w", "lambda_w"} <= self.fixed.keys():
            mu, lam = sample_group_prior(st.w.astype(np.float64), self.groups, self.group_sizes,
                                         h["lambda_w"], rng, self.membership)
            if "mu_w" not in self.fixed:
                h["mu_w"] = mu
            if "lambda_w" not in self.fixed:
                h["lambda_w"] = lam
        if st.V.shape[1] and not {"mu_V", "lambda_V"} <= self.fixed.keys():
            mu, lam = sample_group_prior(st.V.astype(np.float64), self.groups,
                                         self.group_sizes, h["lambda_V"], rng, self.membership)
            if "mu_V" not in self.fixed:
                h["mu_V"] = mu
            if "lambda_V" not in self.fixed:
                h["lambda_V"] = lam


def probit_log_loss(y, yhat, sw) -> float:
    p = np.clip(ndtr(yhat), 1e-15, 1 - 1e-15)
    losses = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    return float(np.average(losses, weights=sw))


def compact_groups(groups, n_features: int) -> tuple[np.ndarray, int]:
    """The validated ``groups`` as int32 codes 0..G-1 (one group for all when None)."""
    if groups is None:
        return np.zeros(n_features, np.int32), 1
    arr = np.asarray(groups)
    if arr.ndim != 1 or arr.shape[0] != n_features:
        raise ValueError(f"groups must hold one integer per feature, i.e. have shape "
                         f"({n_features},), got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"groups must be integers, got dtype {arr.dtype}")
    if n_features and arr.min() < 0:
        raise ValueError(f"groups must be non-negative, got {int(arr.min())} at position "
                         f"{int(np.argmin(arr))}")
    values, codes = np.unique(arr, return_inverse=True)
    return codes.astype(np.int32), len(values)


def kept_sweeps(start: int, n_epochs: int, n_burn_in: int, n_samples: int | None) -> set:
    """Global sweep indices (from ``start`` on) whose samples are retained: after burn-in,
    at most ``n_samples`` of them evenly spaced, always including the last sweep."""
    post = [t for t in range(start, start + n_epochs) if t >= n_burn_in]
    if n_samples is None or len(post) <= n_samples:
        return set(post)
    thin = math.ceil(len(post) / n_samples)
    return set(post[::-1][::thin][:n_samples])


def sample_stats(X, samples: tuple, n_threads: int, link=None, std: bool = True):
    """Mean (and standard deviation) over the samples of the output (or of link(output)).

    ``X`` is a kernel-ready CSR matrix or a DesignMatrix; a DesignMatrix is predicted block
    by block (``fm_output``), never materialized: its rows can be hundreds of non-zeros long
    (implicit feedback sets) while each block's per-entity sums are computed once per sample.
    """
    w0s, ws, Vs = samples
    total = np.zeros(X.shape[0])
    total2 = np.zeros(X.shape[0]) if std else None
    for s in range(len(w0s)):
        if isinstance(X, DesignMatrix):
            o = fm_output(X, float(w0s[s]), ws[s], Vs[s])
        else:
            o = predict_csr(X, w0s[s], np.ascontiguousarray(ws[s], dtype=X.dtype),
                            np.ascontiguousarray(Vs[s], dtype=X.dtype), n_threads)
        if link is not None:
            o = link(o)
        total += o
        if std:
            total2 += o * o
    mean = total / len(w0s)
    if not std:
        return mean, None
    return mean, np.sqrt(np.maximum(total2 / len(w0s) - mean * mean, 0.0))
