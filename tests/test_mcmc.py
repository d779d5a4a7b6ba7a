"""Bayesian FM by Gibbs sampling (solver="mcmc"): kernel against the NumPy reference, exact
posterior of a linear model, convergence, probit calibration, reproducibility, bad input,
persistence, warm start, and MovieLens 100K."""

import time

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import random_csr

from fmrec import _reference as R
from fmrec._kernels import als

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
                        groups.astype(np.int32), prior, alpha)
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
