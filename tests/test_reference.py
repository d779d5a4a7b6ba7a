"""The NumPy reference itself, checked from first principles (finite differences, brute force)."""

import numpy as np
import pytest
import reference as R
from conftest import random_csr


@pytest.fixture
def problem():
    rng = np.random.default_rng(3)
    X = random_csr(30, 9, 0.4, seed=3)
    w0, w, V = 0.2, rng.normal(size=9), rng.normal(0, 0.5, (9, 3))
    y = R.predict(X, w0, w, V) + rng.normal(size=30)
    s = rng.uniform(0.5, 2.0, 30)
    return X, y, s, w0, w, V


def test_identity_matches_pairwise_sum(problem):
    X, _, _, w0, w, V = problem
    np.testing.assert_allclose(R.predict(X, w0, w, V), R.predict_pairwise(X, w0, w, V),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", [R.SQUARE, R.LOGISTIC])
def test_loss_gradient_and_curvature_by_finite_differences(loss):
    yhat = np.linspace(-6, 6, 25)
    y = np.where(np.arange(25) % 2 == 0, 1.0, 0.0) if loss == R.LOGISTIC else np.cos(yhat)
    h = 1e-5
    num_grad = (R.loss_value(loss, yhat + h, y) - R.loss_value(loss, yhat - h, y)) / (2 * h)
    np.testing.assert_allclose(R.loss_gradient(loss, yhat, y), num_grad, rtol=1e-6, atol=1e-9)
    num_curv = (R.loss_gradient(loss, yhat + h, y) - R.loss_gradient(loss, yhat - h, y)) / (2 * h)
    np.testing.assert_allclose(R.loss_curvature(loss, yhat), np.maximum(num_curv, 1e-6),
                               rtol=1e-5, atol=1e-9)


def test_log_loss_is_stable_for_large_outputs():
    yhat = np.array([-1e4, 1e4, -800.0, 800.0])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    out = R.loss_value(R.LOGISTIC, yhat, y)
    np.testing.assert_allclose(out, [1e4, 1e4, 0.0, 0.0], atol=1e-12)


def test_output_gradients_by_finite_differences(problem):
    X, _, _, w0, w, V = problem
    x = X[5].toarray().ravel()
    _, dw, dV = R.output_gradients(x, V)
    h = 1e-6
    for j in range(len(w)):
        e = np.zeros_like(w)
        e[j] = h
        num = (R.predict(x[None], w0, w + e, V) - R.predict(x[None], w0, w - e, V))[0] / (2 * h)
        assert num == pytest.approx(dw[j], abs=1e-7)
        for f in range(V.shape[1]):
            E = np.zeros_like(V)
            E[j, f] = h
            num = (R.predict(x[None], w0, w, V + E) - R.predict(x[None], w0, w, V - E))[0] / (2 * h)
            assert num == pytest.approx(dV[j, f], abs=1e-7)


@pytest.mark.parametrize("loss", [R.SQUARE, R.LOGISTIC])
def test_sgd_step_follows_objective_gradient(problem, loss):
    """One SGD row step equals -lr times the gradient of that row's regularized loss."""
    X, y, s, w0, w, V = problem
    if loss == R.LOGISTIC:
        y = (y > np.median(y)).astype(float)
    i, lr, regs = 7, 1e-3, (0.1, 0.2, 0.3)
    nw0, nw, nV, _, _ = R.sgd_epoch(X, y, s, [i], w0, w, V, loss=loss, learning_rate=lr,
                                     adagrad=False, reg_bias=regs[0], reg_linear=regs[1],
                                     reg_factors=regs[2])
    x = X[i].toarray().ravel()
    touched = x != 0

    def row_objective(w0_, w_, V_):
        yhat = R.predict(x[None], w0_, w_, V_)[0]
        pen = regs[0] * w0_**2 + regs[1] * np.sum(w_[touched] ** 2) + regs[2] * np.sum(
            V_[touched] ** 2)
        return s[i] * (R.loss_value(loss, yhat, y[i]) + 0.5 * pen)

    h = 1e-6
    g0 = (row_objective(w0 + h, w, V) - row_objective(w0 - h, w, V)) / (2 * h)
    assert (w0 - nw0) / lr == pytest.approx(g0, rel=1e-5, abs=1e-8)
    for j in np.flatnonzero(touched):
        e = np.zeros_like(w)
        e[j] = h
        gj = (row_objective(w0, w + e, V) - row_objective(w0, w - e, V)) / (2 * h)
        assert (w[j] - nw[j]) / lr == pytest.approx(gj, rel=1e-5, abs=1e-8)
        for f in range(V.shape[1]):
            E = np.zeros_like(V)
            E[j, f] = h
            gjf = (row_objective(w0, w, V + E) - row_objective(w0, w, V - E)) / (2 * h)
            assert (V[j, f] - nV[j, f]) / lr == pytest.approx(gjf, rel=1e-5, abs=1e-8)
    untouched = ~touched
    np.testing.assert_array_equal(nw[untouched], w[untouched])
    np.testing.assert_array_equal(nV[untouched], V[untouched])


def test_als_coordinate_update_is_the_exact_minimizer(problem):
    """For the square loss each ALS coordinate lands on the 1-D minimum of the objective."""
    X, y, s, w0, w, V = problem
    d = X.shape[1]
    rl, rf = np.full(d, 0.5), np.full(d, 0.7)
    nw0, nw, nV = R.als_sweep(X, y, s, w0, w, V, loss=R.SQUARE, reg_bias=0.3, reg_linear=rl,
                              reg_factors=rf)

    def J(w0_, w_, V_):
        return R.objective(X, y, s, R.SQUARE, w0_, w_, V_, 0.3, rl, rf)

    base = J(nw0, nw, nV)
    # The last updated coordinate (V[d-1, k-1]) is exactly optimal given all others.
    for step in (1e-3, -1e-3):
        E = np.zeros_like(nV)
        E[-1, -1] = step
        assert J(nw0, nw, nV + E) > base
    assert base < J(w0, w, V)


def test_als_objective_decreases_for_logistic_newton_steps(problem):
    X, y, s, w0, w, V = problem
    y = (y > np.median(y)).astype(float)
    d = X.shape[1]
    rl, rf = np.full(d, 0.5), np.full(d, 0.5)
    before = R.objective(X, y, s, R.LOGISTIC, w0, w, V, 0.1, rl, rf)
    nw0, nw, nV = R.als_sweep(X, y, s, w0, w, V, loss=R.LOGISTIC, reg_bias=0.1,
                              reg_linear=rl, reg_factors=rf)
    assert R.objective(X, y, s, R.LOGISTIC, nw0, nw, nV, 0.1, rl, rf) < before
