"""Bayesian FM by Gibbs sampling (solver="mcmc"): kernel against the NumPy reference, exact
posterior of a linear model, convergence, probit calibration, reproducibility, bad input,
persistence, warm start, and MovieLens 100K."""

import time

import numpy as np
import pytest
import reference as R
import scipy.sparse as sp
from conftest import random_csr

from fmrec._kernels import als
from fmrec.solvers._state import FMState

NO_CODES = np.empty(0, np.uint8)


def kernel_gibbs(X, y, s, w0, w, V, *, normals, groups, prior, alpha, w0_prec, n_threads=1,
                 fit_intercept=True, fit_linear=True):
    dt = w.dtype
    r, q = np.empty(X.shape[0], dt), np.empty((X.shape[0], V.shape[1]), dt)
    als.compute_caches(X.indptr, X.indices, X.data, y.astype(dt), R.SQUARE, w0, w, V, r, q, 1)
    C = X.tocsc()
    C.sort_indices()
    W0, W, VV = np.array([w0], dt), w.copy(), V.copy()
    blocks = (als.conflict_free_blocks(C.indptr, C.indices, X.shape[0]) if n_threads > 1
              else np.array([0, X.shape[1]], dtype=np.int64))
    d = X.shape[1]
    out = als.als_sweep(C.indptr, C.indices, C.data, NO_CODES, y.astype(dt), s.astype(dt),
                        R.SQUARE, W0, W, VV, r, q, w0_prec, np.zeros(d, dt), np.zeros(d, dt),
                        fit_intercept, fit_linear, blocks, n_threads, None, normals,
                        groups.astype(np.int32), prior, alpha, 0.0, 0)  # parallel at any size
    return W0[0], W, VV, r, out


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("flags", [(True, True), (False, False)])
@pytest.mark.parametrize("one_hot", [False, True])
def test_gibbs_sweep_matches_reference(weighted, flags, one_hot):
    rng = np.random.default_rng(5)
    n, d, k = 50, 12, 3
    if one_hot:  # two one-hot fields: conflict-free blocks that threads share
        X = sp.hstack([sp.eye(6, format="csr")[rng.integers(0, 6, n)],
                       sp.eye(5, format="csr")[rng.integers(0, 5, n)],
                       sp.csr_matrix((n, 1))], format="csr")  # an empty column
        X.indices, X.indptr = X.indices.astype(np.int32), X.indptr.astype(np.int32)
    else:
        X = random_csr(n, d - 1, 0.3, np.float64, np.int32, seed=7)
        X = sp.hstack([X, sp.csr_matrix((n, 1))], format="csr")
    X.sort_indices()
    y = rng.normal(size=n)
    s = rng.uniform(0.5, 2.0, n) if weighted else np.ones(n)
    w0, w, V = 0.2, rng.normal(0, 0.5, d), rng.normal(0, 0.3, (d, k))
    groups = np.arange(d) % 3
    prior = np.column_stack([rng.uniform(0.5, 2, 3), rng.normal(0, 0.1, 3),
                             rng.uniform(0.5, 2, (3, k)), rng.normal(0, 0.1, (3, k))])
    normals = rng.standard_normal(1 + d * (k + 1))
    fi, fl = flags
    kw = dict(normals=normals, groups=groups, prior=prior, alpha=1.7, w0_prec=0.3,
              fit_intercept=fi, fit_linear=fl)
    ref = R.gibbs_sweep(X, y, s, w0, w, V, **kw)
    for n_threads in (1, 2):
        W0, W, VV, r, (loss_sum, weight_sum, bad) = kernel_gibbs(X, y, s, w0, w, V,
                                                                n_threads=n_threads, **kw)
        np.testing.assert_allclose(W0, ref[0], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(W, ref[1], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(VV, ref[2], rtol=1e-9, atol=1e-9)
        yhat = R.predict(X, *ref)
        np.testing.assert_allclose(r, yhat - y, rtol=1e-9, atol=1e-9)
        assert loss_sum == pytest.approx(0.5 * np.sum(s * (yhat - y) ** 2), rel=1e-9)
        assert not bad
        if n_threads == 1:
            first = (W0, W, VV)
        else:  # bit-identical for any number of threads
            assert W0 == first[0] and np.array_equal(W, first[1])
            assert np.array_equal(VV, first[2])
    if not fl:
        assert np.array_equal(ref[1], w)  # untouched
    # an empty column is drawn from its prior
    row = prior[groups[d - 1]]
    base = 1 + (d - 1) * (k + 1)
    np.testing.assert_allclose(ref[2][d - 1], row[2 + k:] + normals[base + 1:base + 1 + k]
                               / np.sqrt(row[2:2 + k]))


def test_gibbs_sweep_rejects_bad_prior():
    X = random_csr(10, 4, 0.5, np.float64, np.int32, seed=1)
    kw = dict(normals=np.zeros(1 + 4 * 3), groups=np.zeros(4, int), alpha=1.0, w0_prec=0.0)
    args = (X, np.ones(10), np.ones(10), 0.0, np.zeros(4), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="positive"):
        kernel_gibbs(*args, prior=np.zeros((1, 6)), **kw)
    with pytest.raises(ValueError, match="no row"):
        kernel_gibbs(*args, prior=np.ones((1, 6)), **{**kw, "groups": np.array([0, 1, 0, 0])})
    with pytest.raises(ValueError, match="normals"):
        kernel_gibbs(*args, prior=np.ones((1, 6)), **{**kw, "normals": np.zeros(3)})


# ---------------------------------------------------------------------- the estimators
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fmrec import FMClassifier, FMRegressor, load_model  # noqa: E402
from fmrec.datasets import (  # noqa: E402
    ML100K_ITEMS,
    ML100K_USERS,
    load_ml100k_split,
    make_fm_classification,
    make_fm_regression,
    one_hot_user_item,
)
from fmrec.metrics import auc, rmse  # noqa: E402


def test_linear_model_matches_exact_gaussian_posterior():
    """With α, λ and μ fixed and V pinned at ~0 by a huge prior precision, (w0, w) has a
    Gaussian posterior in closed form; the chain's mean and variance must match it."""
    rng = np.random.default_rng(0)
    n, d = 30, 4
    X = rng.normal(size=(n, d))
    y = 0.5 + X @ np.array([1.0, -0.5, 0.0, 0.3]) + rng.normal(0, 0.5, n)
    alpha, lam, mu, lam0 = 4.0, 2.0, 0.3, 1.0
    Xt = np.column_stack([np.ones(n), X])
    prior_prec = np.diag([lam0] + [lam] * d)
    prior_mean = np.array([0.0] + [mu] * d)
    cov = np.linalg.inv(alpha * Xt.T @ Xt + prior_prec)
    mean = cov @ (alpha * Xt.T @ y + prior_prec @ prior_mean)

    model = FMRegressor(n_factors=1, solver="mcmc", n_epochs=20100, n_burn_in=100,
                        dtype="float64", random_state=0)
    model._mcmc_fixed = {"alpha": alpha, "lambda_w": lam, "mu_w": mu, "w0_prec": lam0,
                         "lambda_V": 1e12, "mu_V": 0.0}
    model.fit(X, y)
    draws = np.column_stack([model.samples_w0_, model.samples_w_]).astype(np.float64)
    assert draws.shape == (20000, d + 1)
    assert np.abs(model.samples_V_).max() < 1e-4
    # Monte Carlo standard errors from 20 batches (they allow for autocorrelation)
    batches = draws.reshape(20, -1, d + 1)
    se_mean = batches.mean(axis=1).std(axis=0, ddof=1) / np.sqrt(20)
    np.testing.assert_array_less(np.abs(draws.mean(axis=0) - mean), 4 * se_mean)
    assert np.all(se_mean < 0.05 * np.sqrt(np.diag(cov)))  # the check has teeth
    rel_var = batches.var(axis=1) / np.diag(cov)
    se_var = rel_var.std(axis=0, ddof=1) / np.sqrt(20)
    assert np.all(se_var < 0.02)
    np.testing.assert_array_less(np.abs(draws.var(axis=0) / np.diag(cov) - 1), 4 * se_var + 0.01)
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.05 * np.diag(cov).max())


@pytest.fixture(scope="module")
def regression():
    X, y, _ = make_fm_regression(6000, 200, 4, 5, noise=0.1, random_state=0)
    return X[1000:], y[1000:], X[:1000], y[:1000]


@pytest.fixture(scope="module")
def classification():
    X, y, _ = make_fm_classification(6000, 200, 4, 5, random_state=0)
    return X[1000:], y[1000:], X[:1000], y[:1000]


def test_regression_converges_and_reports_posterior_mean(regression):
    X, y, X_val, y_val = regression
    model = FMRegressor(n_factors=4, solver="mcmc", n_epochs=100, random_state=0)
    model.fit(X, y, eval_set=(X_val, y_val))
    baseline = rmse(y_val, np.full_like(y_val, y.mean()))
    score = rmse(y_val, model.predict(X_val))
    assert score < 0.15 < 0.2 * baseline  # the noise level is 0.1
    # history's validation metric is that of the running posterior mean
    assert model.history_["val_rmse"][-1] == pytest.approx(score, rel=1e-9)
    assert len(model.history_["train_loss"]) == 100 == model.n_epochs_
    assert len(model.samples_w0_) == 90 and model.samples_V_.dtype == np.float32
    assert 50 < model.noise_precision_ < 150  # 1 / 0.1²
    mean, std = model.predict(X_val, return_std=True)
    np.testing.assert_array_equal(mean, model.predict(X_val))
    assert np.all(std > 0) and np.median(std) < 0.1


def test_thinning_keeps_at_most_n_samples(regression):
    X, y, _, _ = regression
    model = FMRegressor(n_factors=2, solver="mcmc", n_epochs=30, n_burn_in=5, n_samples=7,
                        random_state=0).fit(X[:500], y[:500])
    assert len(model.samples_w0_) == 7
    # the last sweep is always retained
    assert model.samples_w0_[-1] == pytest.approx(model.w0_)
    np.testing.assert_array_equal(model.samples_V_[-1], model.V_)


def test_probit_classification_is_calibrated(classification):
    from sklearn.metrics import brier_score_loss, log_loss

    X, y, X_val, y_val = classification
    mcmc = FMClassifier(n_factors=4, solver="mcmc", n_epochs=100, random_state=0).fit(
        X, y, eval_set=(X_val, y_val))
    als_ = FMClassifier(n_factors=4, solver="als", n_epochs=100, random_state=0).fit(X, y)
    p, p_als = mcmc.predict_proba(X_val)[:, 1], als_.predict_proba(X_val)[:, 1]
    print(f"\nprobit MCMC: AUC {auc(y_val, p):.4f} log loss {log_loss(y_val, p):.4f} "
          f"Brier {brier_score_loss(y_val, p):.4f}; logistic ALS: AUC {auc(y_val, p_als):.4f} "
          f"log loss {log_loss(y_val, p_als):.4f} Brier {brier_score_loss(y_val, p_als):.4f}")
    assert auc(y_val, p) > 0.82
    assert log_loss(y_val, p) <= log_loss(y_val, p_als) + 0.002
    assert brier_score_loss(y_val, p) <= brier_score_loss(y_val, p_als) + 0.001
    assert mcmc.history_["val_logloss"][-1] == pytest.approx(log_loss(y_val, p), rel=1e-6)
    np.testing.assert_array_equal(mcmc.predict(X_val), (p > 0.5).astype(int))


def test_reproducible_with_a_seed(regression):
    X, y, X_val, _ = regression
    X, y = X[:1500], y[:1500]

    def fit(seed, n_jobs=1):
        return FMRegressor(n_factors=3, solver="mcmc", n_epochs=15, random_state=seed,
                           n_jobs=n_jobs).fit(X, y).predict(X_val)

    first = fit(0)
    np.testing.assert_array_equal(first, fit(0))
    np.testing.assert_array_equal(first, fit(0, n_jobs=2))  # any number of threads
    assert not np.allclose(first, fit(1))


def test_groups_are_used(regression):
    X, y, X_val, _ = regression
    groups = np.arange(X.shape[1]) % 3
    model = FMRegressor(n_factors=2, solver="mcmc", n_epochs=12, random_state=0,
                        groups=groups * 10).fit(X[:800], y[:800])  # any non-negative labels
    assert model._mcmc_hyper["lambda_V"].shape == (3, 2)
    plain = FMRegressor(n_factors=2, solver="mcmc", n_epochs=12, random_state=0).fit(
        X[:800], y[:800])
    assert plain._mcmc_hyper["lambda_V"].shape == (1, 2)
    assert not np.array_equal(model.predict(X_val), plain.predict(X_val))


@pytest.mark.parametrize("kwargs,fit_kw,exc,match", [
    ({"groups": np.zeros(5, int)}, {}, ValueError, r"groups must hold one integer per feature"),
    ({"groups": -np.ones(200, int)}, {}, ValueError, "non-negative"),
    ({"groups": np.full(200, 0.5)}, {}, ValueError, "integers"),
    ({"early_stopping_rounds": 3}, {}, ValueError, "does not apply to solver='mcmc'"),
    ({"n_epochs": 5, "n_burn_in": 5}, {}, ValueError, "no sample after n_burn_in"),
    ({"n_burn_in": -1}, {}, ValueError, "n_burn_in"),
    ({"n_samples": 0}, {}, ValueError, "n_samples"),
    ({}, {"y_nan": True}, ValueError, "NaN"),
    ({}, {"sample_weight": -1.0}, ValueError, "(?i)negative"),
])
def test_bad_input_leaves_fitted_model_intact(regression, kwargs, fit_kw, exc, match):
    X, y, X_val, _ = regression
    X, y = X[:400], y[:400].copy()
    model = FMRegressor(n_factors=2, solver="mcmc", n_epochs=12, random_state=0).fit(X, y)
    before = model.predict(X_val)
    samples = model.samples_V_.copy()
    model.set_params(**kwargs)
    if fit_kw.get("y_nan"):
        y[7] = np.nan
    sw = np.full(len(y), fit_kw["sample_weight"]) if "sample_weight" in fit_kw else None
    with pytest.raises(exc, match=match):
        model.fit(X, y, sample_weight=sw)
    np.testing.assert_array_equal(model.predict(X_val), before)
    np.testing.assert_array_equal(model.samples_V_, samples)


def test_other_misuse(regression):
    X, y, X_val, _ = regression
    als_ = FMRegressor(n_factors=2, n_epochs=2).fit(X[:300], y[:300])
    with pytest.raises(ValueError, match="return_std=True needs"):
        als_.predict(X_val, return_std=True)
    model = FMRegressor(n_factors=2, solver="mcmc", n_epochs=12, random_state=0,
                        warm_start=True).fit(X[:300], y[:300])
    with pytest.raises(NotImplementedError, match="grow"):
        model.grow(300)
    model.partial_fit(X[:300], y[:300])  # one more sweep of the chain
    assert model.n_epochs_ == 13 and len(model.samples_w0_) == 2 + 1
    fresh = FMRegressor(n_factors=2, solver="mcmc", random_state=0).partial_fit(X[:300],
                                                                              y[:300])
    assert len(fresh.samples_w0_) == 0  # burn-in: predictions use the chain's state
    np.testing.assert_allclose(fresh.predict(X_val, return_std=True)[1], 0)
    model.set_params(groups=np.arange(200) % 2)
    with pytest.raises(ValueError, match="groups changed"):
        model.fit(X[:300], y[:300])
    # ALS continuing from the chain's state, or refitting, drops the samples: predictions
    # are the ALS model's again
    model.set_params(solver="als", groups=None).fit(X[:300], y[:300])
    assert not hasattr(model, "samples_w0_")
    with pytest.raises(ValueError, match="needs a model fitted by MCMC"):
        model.set_params(solver="mcmc").fit(X[:300], y[:300])
    model.set_params(solver="als", warm_start=False).fit(X[:300], y[:300])
    assert not hasattr(model, "samples_w0_")
    from reference import predict as ref_predict
    np.testing.assert_allclose(model.predict(X_val), np.clip(
        ref_predict(X_val, model.w0_, model.w_, model.V_), *model.y_range_), rtol=1e-4,
        atol=1e-4)


def test_save_load_and_warm_start(regression, classification, tmp_path):
    X, y, X_val, y_val = regression
    X, y = X[:1000], y[:1000]
    model = FMRegressor(n_factors=3, solver="mcmc", n_epochs=20, n_burn_in=5, random_state=0,
                        warm_start=True, groups=np.arange(200) % 2).fit(X, y)
    path = tmp_path / "mcmc.npz"
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(X_val), model.predict(X_val))
    for a, b in zip(loaded.predict(X_val, return_std=True),
                    model.predict(X_val, return_std=True), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.groups, model.groups)
    assert loaded.noise_precision_ == model.noise_precision_

    # warm start continues the chain: more samples, longer history, and the same
    # continuation from the loaded copy
    model.fit(X, y)
    loaded.fit(X, y)
    assert len(model.samples_w0_) == 15 + 20 and model.n_epochs_ == 40
    np.testing.assert_array_equal(loaded.samples_V_, model.samples_V_)
    np.testing.assert_array_equal(loaded.predict(X_val), model.predict(X_val))
    # the continuation used fresh draws, not the first call's again
    assert not np.allclose(model.samples_w_[15:].mean(0), model.samples_w_[:15].mean(0),
                           atol=1e-7)

    Xc, yc, Xc_val, _ = classification
    clf = FMClassifier(n_factors=2, solver="mcmc", n_epochs=12, random_state=0).fit(
        Xc[:800], np.where(yc[:800] > 0, "yes", "no"))
    clf.save(path)
    again = load_model(path)
    np.testing.assert_array_equal(again.predict_proba(Xc_val), clf.predict_proba(Xc_val))
    np.testing.assert_array_equal(again.predict(Xc_val), clf.predict(Xc_val))


def test_callbacks_see_every_sweep(regression):
    X, y, _, _ = regression
    seen = []

    def callback(est, epoch, logs):
        seen.append((epoch, len(getattr(est, "samples_w0_", [])), logs["train_loss"]))
        return epoch == 7

    FMRegressor(n_factors=2, solver="mcmc", n_epochs=20, n_burn_in=3, random_state=0).fit(
        X[:300], y[:300], callbacks=[callback])
    assert [e for e, _, _ in seen] == list(range(8))
    assert [s for _, s, _ in seen] == [0, 0, 0, 1, 2, 3, 4, 5]


def test_design_matrix_short_blocks_sweep_as_flat_columns():
    from fmrec.design import DesignMatrix, RelationBlock

    rng = np.random.default_rng(0)
    # ~1.5 per row: flat (MCMC samples blocks of more than 2 per row per entity)
    users = sp.random(20, 6, density=0.25, format="csr", random_state=1)
    index = rng.integers(0, 20, 300)
    flat = sp.random(300, 5, density=0.3, format="csr", random_state=2)
    D = DesignMatrix(flat, [RelationBlock(users, index)])
    y = rng.normal(size=300)
    a = FMRegressor(n_factors=2, solver="mcmc", n_epochs=12, random_state=0).fit(D, y)
    b = FMRegressor(n_factors=2, solver="mcmc", n_epochs=12, random_state=0).fit(D.to_csr(), y)
    np.testing.assert_allclose(a.samples_V_, b.samples_V_, rtol=1e-6)
    # a design is predicted in float64 from its blocks' sums, CSR rows by the float32
    # kernel: the two differ by float32 rounding of terms of order 1
    np.testing.assert_allclose(a.predict(D), b.predict(D.to_csr()), rtol=1e-6, atol=1e-6)


def long_block_design(n=300, seed=0):
    from fmrec.design import DesignMatrix, RelationBlock

    rng = np.random.default_rng(seed)
    users = sp.random(20, 12, density=0.6, format="csr", random_state=seed + 1,
                      data_rvs=rng.standard_normal)  # ~7 per row: swept per entity
    users = sp.vstack([users, sp.csr_matrix((1, 12))], format="csr")  # an empty entity
    users = sp.hstack([users, sp.csr_matrix((21, 1))], format="csr")  # an unused column
    flat = random_csr(n, 5, 0.4, np.float64, np.int32, seed=seed + 2)
    return DesignMatrix(flat, [RelationBlock(users, rng.integers(0, 21, n))])


@pytest.mark.parametrize("flags", [(True, True), (False, False)])
@pytest.mark.parametrize("weighted", [False, True])
def test_gibbs_sweep_with_relation_block_matches_reference(flags, weighted):
    from fmrec.solvers._state import FMState
    from fmrec.solvers.mcmc import MCMCSolver, initial_hyper, prior_table

    D = long_block_design()
    n, d, k = D.shape[0], D.shape[1], 3
    rng = np.random.default_rng(4)
    y = rng.normal(size=n)
    s = rng.uniform(0.5, 2.0, n) if weighted else np.ones(n)
    groups = (np.arange(d) % 2).astype(np.int32)
    fixed = {"alpha": 1.7, "lambda_w": [0.8, 1.5], "mu_w": [0.1, -0.2],
             "lambda_V": rng.uniform(0.5, 2.0, (2, k)), "mu_V": rng.normal(0, 0.1, (2, k)),
             "w0_prec": 0.3}
    w0, w, V = 0.2, rng.normal(0, 0.5, d), rng.normal(0, 0.3, (d, k))
    fi, fl = flags
    state = FMState(w0, w.copy(), V.copy())
    solver = MCMCSolver(D, y, s, False, state, groups=groups, hyper=initial_hyper(2, k),
                        rng=np.random.default_rng(9), n_threads=1, fit_intercept=fi,
                        fit_linear=fl, fixed=fixed)
    assert len(solver.parts) == 1  # the block is swept per entity
    mse = solver.epoch()
    normals = np.random.default_rng(9).standard_normal(1 + d * (k + 1))  # the same draws
    ref = R.gibbs_sweep(D.to_csr(), y, s, w0, w, V, normals=normals, groups=groups,
                        prior=prior_table(solver.hyper), alpha=1.7, w0_prec=0.3,
                        fit_intercept=fi, fit_linear=fl, block_starts=[5])
    np.testing.assert_allclose(state.w0[0], ref[0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(state.w, ref[1], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(state.V, ref[2], rtol=1e-9, atol=1e-9)
    yhat = R.predict(D.to_csr(), *ref)
    np.testing.assert_allclose(solver.r, yhat - y, rtol=1e-9, atol=1e-9)
    assert mse == pytest.approx(np.sum(s * (yhat - y) ** 2) / np.sum(s), rel=1e-9)


def two_block_design(n=400, seed=0, k_users=14, k_items=9):
    """A flat part and two long blocks (users, items: ~5 non-zeros per row each, so both
    are swept per entity), an entity without samples and an empty column in each."""
    from fmrec.design import DesignMatrix, RelationBlock

    rng = np.random.default_rng(seed)
    blocks = []
    for b, (n_e, width) in enumerate([(25, k_users), (18, k_items)]):
        B = sp.random(n_e, width - 1, density=0.45, format="csr", random_state=seed + b,
                      data_rvs=lambda m: rng.uniform(0.2, 1.5, m))
        B = sp.hstack([B, sp.csr_matrix((n_e, 1))], format="csr")  # an unused column
        blocks.append(RelationBlock(B, rng.integers(0, n_e - 1, n)))  # entity n_e - 1 unused
    flat = random_csr(n, 4, 0.4, np.float64, np.int32, seed=seed + 5)
    return DesignMatrix(flat, blocks)


def gibbs_inputs(d, k, seed=4):
    rng = np.random.default_rng(seed)
    groups = (np.arange(d) % 3).astype(np.int32)
    prior = np.column_stack([rng.uniform(0.5, 2, 3), rng.normal(0, 0.1, 3),
                             rng.uniform(0.5, 2, (3, k)), rng.normal(0, 0.1, (3, k))])
    return groups, prior, rng.standard_normal(1 + d * (k + 1))


@pytest.mark.parametrize("k", [4, 8])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fit_linear", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_block_sweep_equals_the_per_pass_path(dtype, fit_linear, weighted, k):
    """The square loss's two-row-pass block sweep (per-entity statistics) draws what the
    per-pass path (2(k + 1) row passes) draws from the same normals: the same conditionals,
    in the same order, up to rounding."""
    from fmrec.solvers._blocks import split_design

    D = two_block_design()
    n, d = D.shape
    rng = np.random.default_rng(1)
    y = rng.normal(size=n).astype(dtype)
    s = (rng.uniform(0.5, 2.0, n) if weighted else np.ones(n)).astype(dtype)
    w0, w, V = 0.2, rng.normal(0, 0.5, d).astype(dtype), rng.normal(0, 0.3, (d, k)).astype(dtype)
    groups, prior, normals = gibbs_inputs(d, k)
    gibbs = {"alpha": 1.7, "normals": normals, "groups": groups, "prior": prior}
    flat, parts, _ = split_design(D, dtype, max_row_nnz=2.0)
    assert len(parts) == 2
    out = []
    for per_pass in (False, True):
        state = FMState(w0, w.copy(), V.copy())
        r, q = np.empty(n, dtype), np.empty((n, k), dtype)
        als.compute_caches(flat.indptr, flat.indices, flat.data, y, R.SQUARE, w0, state.w,
                           state.V, r, q, 1)
        for part in parts:
            part.add_to_caches(state.w, state.V, r, q)
        for part in parts:
            sq = part.sweep(state, r, q, y, s, R.SQUARE, None, None, fit_linear, gibbs=gibbs,
                            per_pass=per_pass)
        assert (sq is None) == per_pass
        out.append((state.w, state.V, r, q, sq))
    (w_a, V_a, r_a, q_a, sq), (w_b, V_b, r_b, q_b, _) = out
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == np.float64 else {"rtol": 2e-4, "atol": 2e-4}
    np.testing.assert_allclose(w_a, w_b, **tol)
    np.testing.assert_allclose(V_a, V_b, **tol)
    np.testing.assert_allclose(r_a, r_b, **tol)
    np.testing.assert_allclose(q_a, q_b, **tol)
    if not fit_linear:
        np.testing.assert_array_equal(w_a, w)
    assert sq == pytest.approx(float(np.sum(s.astype(float) * r_a.astype(float) ** 2)),
                               rel=tol["rtol"])
    # the block's empty last column is drawn from its prior
    for part in parts:
        j = part.hi - 1
        row, base = prior[groups[j]], 2 + j * (k + 1)
        np.testing.assert_allclose(V_a[j], row[2 + k:] + normals[base:base + k]
                                   / np.sqrt(row[2:2 + k]), **tol)


def test_block_sweep_falls_back_where_its_statistics_would_not_fit(monkeypatch):
    """Entities nearly as many as rows: block_sweep's k² doubles per entity would outgrow
    the row caches, so the per-pass path sweeps the block (same draws, to rounding)."""
    from fmrec.solvers import _blocks
    from fmrec.solvers.mcmc import MCMCSolver, initial_hyper

    D = two_block_design(n=30, seed=3)
    n, d = D.shape
    k = 8
    rng = np.random.default_rng(2)
    y = rng.normal(size=n)
    groups, prior, _ = gibbs_inputs(d, k)
    fixed = {"alpha": 0.9, "lambda_w": prior[:, 0], "mu_w": prior[:, 1],
             "lambda_V": prior[:, 2:2 + k], "mu_V": prior[:, 2 + k:]}
    V = rng.normal(0, 0.3, (d, k))
    out = []
    for limit in (1 << 26, 0):
        monkeypatch.setattr(_blocks, "MOMENTS_MAX_BYTES", limit)
        state = FMState(0.1, np.zeros(d), V.copy())
        solver = MCMCSolver(D, y, np.ones(n), False, state, groups=groups,
                            hyper=initial_hyper(3, k), rng=np.random.default_rng(9),
                            n_threads=1, fit_intercept=True, fit_linear=True, fixed=fixed)
        assert all(part.moments_fit(k, solver.q) == (limit > 0) for part in solver.parts)
        mse = solver.epoch()
        out.append((state.w.copy(), state.V.copy(), mse))
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-10, atol=1e-10)
    assert out[0][2] == pytest.approx(out[1][2], rel=1e-10)


@pytest.mark.parametrize("k", [3, 8])
@pytest.mark.parametrize("weighted", [False, True])
def test_gibbs_sweep_with_two_blocks_matches_reference(k, weighted):
    from fmrec.solvers.mcmc import MCMCSolver, initial_hyper

    D = two_block_design(seed=2)
    n, d = D.shape
    rng = np.random.default_rng(6)
    y = rng.normal(size=n)
    s = rng.uniform(0.5, 2.0, n) if weighted else np.ones(n)
    groups, prior, _ = gibbs_inputs(d, k)
    fixed = {"alpha": 0.9, "lambda_w": prior[:, 0], "mu_w": prior[:, 1],
             "lambda_V": prior[:, 2:2 + k], "mu_V": prior[:, 2 + k:], "w0_prec": 0.3}
    w0, w, V = 0.2, rng.normal(0, 0.5, d), rng.normal(0, 0.3, (d, k))
    state = FMState(w0, w.copy(), V.copy())
    solver = MCMCSolver(D, y, s, False, state, groups=groups, hyper=initial_hyper(3, k),
                        rng=np.random.default_rng(9), n_threads=1, fit_intercept=True,
                        fit_linear=True, fixed=fixed)
    assert len(solver.parts) == 2
    mse = solver.epoch()
    normals = np.random.default_rng(9).standard_normal(1 + d * (k + 1))
    offsets = D.block_offsets
    ref = R.gibbs_sweep(D.to_csr(), y, s, w0, w, V, normals=normals, groups=groups,
                        prior=prior, alpha=0.9, w0_prec=0.3, block_starts=offsets[1:-1])
    np.testing.assert_allclose(state.w0[0], ref[0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(state.w, ref[1], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(state.V, ref[2], rtol=1e-9, atol=1e-9)
    yhat = R.predict(D.to_csr(), *ref)
    np.testing.assert_allclose(solver.r, yhat - y, rtol=1e-9, atol=1e-9)
    assert mse == pytest.approx(np.sum(s * (yhat - y) ** 2) / np.sum(s), rel=1e-9)


def test_block_sweep_rejects_bad_arguments():
    from fmrec.solvers._blocks import split_design

    D = two_block_design(n=50)
    flat, parts, _ = split_design(D, np.float64, max_row_nnz=2.0)
    part, d, k = parts[0], D.shape[1], 2
    w, V = np.zeros(d), np.zeros((d, k))
    r, q, s = np.zeros(50), np.zeros((50, k)), np.ones(50)
    lo, hi = part.lo, part.hi
    work = np.empty(als.block_workspace_size(part.n_entities, k))
    args = (part.indptr, part.indices, part.data, part.index, part.order, part.starts, r, q,
            s, w[lo:hi], V[lo:hi], True)
    groups, prior, normals = gibbs_inputs(d, k)
    with pytest.raises(ValueError, match="block_workspace_size"):
        als.block_sweep(*args, work[:-10], col0=lo, normals=normals, groups=groups,
                        prior=prior)
    with pytest.raises(ValueError, match="cover"):
        als.block_sweep(*args, work, col0=lo, normals=normals[:10], groups=groups, prior=prior)
    with pytest.raises(ValueError, match="no row"):
        als.block_sweep(*args, work, col0=lo, normals=normals, groups=groups + 3, prior=prior)
    with pytest.raises(ValueError, match="reg_linear"):
        als.block_sweep(*args, work)
    bad = (*args[:4], part.order[1:], *args[5:])
    with pytest.raises(ValueError, match="every row"):
        als.block_sweep(*bad, work, col0=lo, normals=normals, groups=groups, prior=prior)


@pytest.mark.parametrize("cls", [FMRegressor, FMClassifier])
def test_design_matrix_with_long_block_fits_like_flat_rows(cls):
    D = long_block_design(n=2000, seed=3)
    X = D.to_csr()
    rng = np.random.default_rng(0)
    truth = R.predict(X, 0.5, rng.normal(0, 0.5, X.shape[1]),
                      rng.normal(0, 0.2, (X.shape[1], 2)))
    y = truth + rng.normal(0, 0.1, len(truth))
    if cls is FMClassifier:
        y = (y > np.median(y)).astype(int)
    # this small problem needs a long burn-in (whichever the scan order)
    kw = dict(n_factors=2, solver="mcmc", n_epochs=500, n_burn_in=250, random_state=0)
    a, b = cls(**kw).fit(D, y), cls(**kw).fit(X, y)
    if cls is FMRegressor:
        ra, rb = rmse(truth, a.predict(D)), rmse(truth, b.predict(X))
        assert ra < 0.1 and rb < 0.1 and abs(ra - rb) < 0.03
    else:
        pa, pb = a.predict_proba(D)[:, 1], b.predict_proba(X)[:, 1]
        assert auc(y, pa) > 0.9 and abs(auc(y, pa) - auc(y, pb)) < 0.02


def test_movielens_u1_ids_only(ml100k_dir):
    train, test = load_ml100k_split("u1", ml100k_dir)
    X, y = one_hot_user_item(train), train["rating"].to_numpy(np.float64)
    X_test, y_test = one_hot_user_item(test), test["rating"].to_numpy(np.float64)
    fields = np.r_[np.zeros(ML100K_USERS, int), np.ones(ML100K_ITEMS, int)]  # user, item id
    start = time.perf_counter()
    model = FMRegressor(n_factors=8, solver="mcmc", n_epochs=200, random_state=0,
                        groups=fields).fit(X, y)
    elapsed = time.perf_counter() - start
    score = rmse(y_test, model.predict(X_test))
    print(f"\nml-100k u1, ids only, rank 8, 200 sweeps, groups user/item: test RMSE "
          f"{score:.4f}, fit {elapsed:.2f} s")
    assert score <= 0.910


def test_truncated_latent_targets():
    from scipy.stats import truncnorm

    from fmrec.solvers.mcmc import truncated_latent

    rng = np.random.default_rng(0)
    for mean in (-40.0, -3.0, 0.0, 2.0, 40.0):
        yhat = np.full(20000, mean)
        for positive in (True, False):
            z = truncated_latent(yhat, np.full(20000, positive), rng.random(20000))
            assert np.all(np.isfinite(z))
            assert np.all(z >= 0) if positive else np.all(z <= 0)
            a, b = (-mean, np.inf) if positive else (-np.inf, -mean)
            expected = mean + truncnorm.mean(a, b)
            sd = truncnorm.std(a, b)
            assert abs(z.mean() - expected) < 5 * sd / np.sqrt(20000) + 1e-6


def test_hyperparameter_conditionals_concentrate():
    from fmrec.solvers.mcmc import sample_group_prior

    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1], 20000).astype(np.int32)
    theta = np.r_[rng.normal(0.5, 2.0, 20000), rng.normal(-1.0, 0.1, 20000)]
    mu, lam = sample_group_prior(theta, groups, np.bincount(groups).astype(float),
                                 np.ones(2), rng)
    np.testing.assert_allclose(mu, [0.5, -1.0], atol=0.05)
    np.testing.assert_allclose(lam, [1 / 4, 100], rtol=0.05)
    V = np.column_stack([theta, -theta])
    mu, lam = sample_group_prior(V, groups, np.bincount(groups).astype(float),
                                 np.ones((2, 2)), rng)
    np.testing.assert_allclose(mu, [[0.5, -0.5], [-1.0, 1.0]], atol=0.05)
    np.testing.assert_allclose(lam, [[1 / 4, 1 / 4], [100, 100]], rtol=0.05)


@pytest.mark.parametrize("shape", [(500,), (500, 4)])
def test_group_sums_by_membership_draw_the_bincount_bits(shape):
    """sample_group_prior sums per group with one sparse product; the draws are those of
    per-column np.bincount sums, bit for bit (the same adds in the same order)."""
    from fmrec.solvers import mcmc as M

    rng = np.random.default_rng(2)
    groups = rng.integers(0, 5, shape[0]).astype(np.int32)
    theta = rng.normal(size=shape)
    sizes = np.bincount(groups, minlength=6).astype(float)  # group 5 is empty
    lam = rng.uniform(0.5, 2.0, (6,) + shape[1:])

    def bincount_sums(values):
        cols = values.reshape(len(values), -1).T
        out = np.column_stack([np.bincount(groups, c, minlength=6) for c in cols])
        return out.reshape((6,) + values.shape[1:])

    size = sizes if theta.ndim == 1 else sizes[:, None]
    draws = np.random.default_rng(3)
    mu = ((bincount_sums(theta) + M.GAMMA0 * M.MU0) / (size + M.GAMMA0)
          + draws.standard_normal(lam.shape) / np.sqrt((size + M.GAMMA0) * lam))
    rate = 0.5 * (M.B0 + bincount_sums((theta - mu[groups]) ** 2)
                  + M.GAMMA0 * (mu - M.MU0) ** 2)
    expected = (mu, np.maximum(draws.gamma(0.5 * (M.A0 + size + 1), 1.0 / rate), 1e-300))
    got = M.sample_group_prior(theta, groups, sizes, lam, np.random.default_rng(3),
                               M.group_membership(groups, 6))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls", [FMRegressor, FMClassifier])
def test_cache_reuse_between_refreshes_is_exact(regression, classification, cls, monkeypatch):
    """The caches the sweep leaves behind equal a rebuild (up to rounding)."""
    import fmrec.solvers.mcmc as M

    X, y, X_val, _ = regression if cls is FMRegressor else classification
    X, y = X[:800], y[:800]

    def fit():
        return cls(n_factors=3, solver="mcmc", n_epochs=25, dtype="float64",
                   random_state=0).fit(X, y)

    reused = fit()
    monkeypatch.setattr(M, "CACHE_REFRESH", 1)
    rebuilt = fit()
    np.testing.assert_allclose(reused.samples_V_, rebuilt.samples_V_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reused.history_["train_loss"], rebuilt.history_["train_loss"],
                               rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", [R.SQUARE, R.LOGISTIC])
def test_als_parallel_blocks_match_one_thread(dtype, loss):
    """The parallel path over conflict-free blocks (forced at any block size) gives the
    one-thread bits, for ALS as for Gibbs sampling."""
    rng = np.random.default_rng(1)
    n = 400
    X = sp.hstack([sp.eye(30, format="csr")[rng.integers(0, 30, n)],
                   sp.eye(40, format="csr")[rng.integers(0, 40, n)],
                   random_csr(n, 5, 0.3, np.float64, np.int32, seed=2)], format="csr")
    X = X.astype(dtype)
    X.indices, X.indptr = X.indices.astype(np.int32), X.indptr.astype(np.int32)
    y = rng.normal(size=n) if loss == R.SQUARE else (rng.random(n) < 0.5).astype(float)
    d, k = X.shape[1], 4
    C = X.tocsc()
    C.sort_indices()
    results = []
    for n_threads in (1, 2):
        init = np.random.default_rng(5)
        w, V = init.normal(0, 0.1, d).astype(dtype), init.normal(0, 0.1, (d, k)).astype(dtype)
        r, q = np.empty(n, dtype), np.empty((n, k), dtype)
        als.compute_caches(X.indptr, X.indices, X.data, y.astype(dtype), loss, 0.0, w, V, r,
                           q, 1)
        blocks = (als.conflict_free_blocks(C.indptr, C.indices, n) if n_threads > 1
                  else np.array([0, d], dtype=np.int64))
        assert n_threads == 1 or np.diff(blocks).max() >= 30  # the id fields run in parallel
        W0 = np.zeros(1, dtype)
        als.als_sweep(C.indptr, C.indices, C.data, NO_CODES, y.astype(dtype),
                      np.ones(n, dtype), loss, W0, w, V, r, q, 0.1, np.full(d, 0.5, dtype),
                      np.full(d, 0.7, dtype), True, True, blocks, n_threads,
                      parallel_min_nnz=0)
        results.append((W0, w, V, r))
    for a, b in zip(*results, strict=True):
        assert np.array_equal(a, b)


def _expected_failures(estimator):
    reason = "Gibbs sampling is random: a weight of 2 draws differently from a repeated row"
    return {"check_sample_weight_equivalence_on_dense_data": reason,
            "check_sample_weight_equivalence_on_sparse_data": reason}


@parametrize_with_checks([
    FMRegressor(solver="mcmc", n_epochs=12, n_burn_in=2, random_state=0),
    FMClassifier(solver="mcmc", n_epochs=12, n_burn_in=2, random_state=0),
], expected_failed_checks=_expected_failures)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_parameter_sets_are_the_samples_predictions_average():
    """An MCMC model's parameter_sets are its retained samples (the chain's state during
    burn-in); any other model's, its one fitted set."""
    from fmrec import FMRanker

    X, y, _ = make_fm_regression(n_samples=120, n_features=15, random_state=0)
    bayes = FMRegressor(n_factors=3, solver="mcmc", n_epochs=6, n_burn_in=2,
                        random_state=0).fit(X, y)
    w0s, ws, Vs = bayes.parameter_sets()
    assert Vs.shape == (4, 15, 3)
    np.testing.assert_array_equal(Vs, bayes.samples_V_)
    outputs = [X @ w + w0 + 0.5 * (((X @ V) ** 2).sum(1) - (X.multiply(X) @ V**2).sum(1))
               for w0, w, V in zip(w0s, ws.astype(np.float64), Vs.astype(np.float64),
                                   strict=True)]
    np.testing.assert_allclose(bayes.predict(X), np.clip(np.mean(outputs, axis=0),
                                                         *bayes.y_range_), rtol=1e-5)
    early = FMRegressor(n_factors=3, solver="mcmc", n_burn_in=5, random_state=0)
    early.partial_fit(X, y)  # still in burn-in: no sample kept
    assert len(early.samples_w0_) == 0
    np.testing.assert_array_equal(early.parameter_sets()[2][0], early.V_)
    als = FMRegressor(n_factors=3, n_epochs=2, random_state=0).fit(X, y)
    w0s, ws, Vs = als.parameter_sets()
    assert w0s.tolist() == [als.w0_] and Vs.shape == (1, 15, 3)
    np.testing.assert_array_equal(ws[0], als.w_)
    U = sp.eye(4, 7, format="csr")
    I = sp.eye(3, 7, k=4, format="csr")  # noqa: E741
    ranker = FMRanker(n_factors=2, n_epochs=1, random_state=0).fit(U, I, [0, 1], [0, 2])
    np.testing.assert_array_equal(ranker.parameter_sets()[2][0], ranker.V_)
