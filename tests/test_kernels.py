"""Each Cython kernel against the NumPy reference (reference)."""

from types import SimpleNamespace

import numpy as np
import pytest
import reference as R
import scipy.sparse as sp
from conftest import assert_same_bits_with_and_without_avx, random_csr

from fmrec._kernels import als, predict, sgd

NO_CODES = np.empty(0, np.uint8)
CASES = [(np.float64, np.int32), (np.float64, np.int64), (np.float32, np.int32),
         (np.float32, np.int64)]


def tolerance(dtype):
    return {"rtol": 1e-10, "atol": 1e-10} if dtype == np.float64 else {"rtol": 2e-4, "atol": 2e-4}


def params(d, k, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return 0.3, rng.normal(0, 0.5, d).astype(dtype), rng.normal(0, 0.3, (d, k)).astype(dtype)


def targets(X, loss, seed=2):
    rng = np.random.default_rng(seed)
    y = R.predict(X, 0.1, rng.normal(size=X.shape[1]), rng.normal(0, 0.3, (X.shape[1], 2)))
    y = y + rng.normal(0, 0.3, X.shape[0])
    return y if loss == R.SQUARE else (y > np.median(y)).astype(float)


@pytest.mark.parametrize("dtype,index_dtype", CASES)
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("shape,k", [((40, 15), 3), ((7, 3), 1), ((60, 30), 8)])
def test_predict(dtype, index_dtype, n_threads, shape, k):
    X = random_csr(*shape, 0.3, dtype, index_dtype, seed=shape[0], empty_rows=(0, 4))
    w0, w, V = params(shape[1], k, dtype)
    out = np.empty(shape[0], dtype)
    predict.predict(X.indptr, X.indices, X.data, w0, w, V, out, n_threads)
    np.testing.assert_allclose(out, R.predict_pairwise(X, w0, w, V), **tolerance(dtype))
    assert out[0] == pytest.approx(w0)  # an empty row predicts the intercept


def run_sgd(X, y, s, order, w0, w, V, *, loss, adagrad, fit_intercept=True, fit_linear=True,
            n_threads=1, lr=0.05, regs=(0.1, 0.2, 0.3), reg_scale=None, packed=False,
            acc=None):
    """One kernel epoch on copies of the parameters (and of ``acc``, default zeros);
    ``packed`` gives AdaGrad its packed per-feature records."""
    dt = w.dtype
    scale = np.empty(0, dt) if reg_scale is None else np.asarray(reg_scale, dt)
    W0, W, VV = np.array([w0], dt), w.copy(), V.copy()
    acc = ((np.zeros(1, dt), np.zeros_like(w), np.zeros_like(V)) if acc is None
           else tuple(a.astype(dt) for a in acc))
    size = sgd.workspace_size(*V.shape) if packed else 0
    out = sgd.sgd_epoch(X.indptr, X.indices, X.data, y.astype(dt), s.astype(dt),
                        np.asarray(order, np.intp), W0, W, VV, *acc, loss, lr, adagrad, *regs,
                        scale, fit_intercept, fit_linear, n_threads, np.empty(size, dt))
    return W0[0], W, VV, acc, out


@pytest.mark.parametrize("dtype,index_dtype", CASES)
@pytest.mark.parametrize("loss", [R.SQUARE, R.LOGISTIC])
@pytest.mark.parametrize("adagrad,packed", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("flags", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("k", [4, 8])
@pytest.mark.parametrize("scaled", [False, True])
def test_sgd_epoch_matches_reference(dtype, index_dtype, loss, adagrad, packed, flags, k,
                                     scaled):
    X = random_csr(50, 12, 0.3, dtype, index_dtype, seed=5, empty_rows=(3,))
    y = targets(X, loss)
    s = np.random.default_rng(0).uniform(0.5, 2.0, 50)
    w0, w, V = params(12, k, dtype)
    order = np.random.default_rng(1).permutation(50)
    reg_scale = np.random.default_rng(2).uniform(0.1, 3.0, 12) if scaled else None
    fit_intercept, fit_linear = flags
    ref = R.sgd_epoch(X, y, s, order, w0, w, V, loss=loss, learning_rate=0.05, adagrad=adagrad,
                      reg_bias=0.1, reg_linear=0.2, reg_factors=0.3, reg_scale=reg_scale,
                      fit_intercept=fit_intercept, fit_linear=fit_linear)
    got = run_sgd(X, y, s, order, w0, w, V, loss=loss, adagrad=adagrad,
                  fit_intercept=fit_intercept, fit_linear=fit_linear, reg_scale=reg_scale,
                  packed=packed)
    tol = tolerance(dtype)
    assert got[0] == pytest.approx(ref[0], rel=tol["rtol"], abs=tol["atol"])
    np.testing.assert_allclose(got[1], ref[1], **tol)
    np.testing.assert_allclose(got[2], ref[2], **tol)
    loss_sum, weight_sum, n_bad = got[4]
    assert loss_sum == pytest.approx(ref[4], rel=tol["rtol"])
    assert weight_sum == pytest.approx(s.sum(), rel=1e-6) and n_bad == 0
    if adagrad:
        np.testing.assert_allclose(got[3][2], ref[3][2], **tol)
        np.testing.assert_allclose(got[3][1], ref[3][1], **tol)


@pytest.mark.parametrize("dtype,index_dtype", CASES)
@pytest.mark.parametrize("loss", [R.SQUARE, R.LOGISTIC])
@pytest.mark.parametrize("flags", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("k", [1, 3, 8, 12])
@pytest.mark.parametrize("scaled", [False, True])
def test_sgd_adagrad_packed_records_give_the_flat_bits(dtype, index_dtype, loss, flags, k,
                                                        scaled):
    """The packed layout only moves the parameters: w, V, their AdaGrad sums and the loss
    are bit-identical to the flat arrays' (from non-zero sums, so they are read back too)."""
    X = random_csr(300, 40, 0.15, dtype, index_dtype, seed=11, empty_rows=(0, 7))
    y = targets(X, loss)
    rng = np.random.default_rng(3)
    s = rng.uniform(0.5, 2.0, 300)
    w0, w, V = params(40, k, dtype)
    acc = (np.array([0.5]), rng.uniform(0, 1, 40), rng.uniform(0, 1, (40, k)))
    order = rng.permutation(300)
    reg_scale = rng.uniform(0.1, 3.0, 40) if scaled else None
    kw = dict(loss=loss, adagrad=True, fit_intercept=flags[0], fit_linear=flags[1],
              reg_scale=reg_scale, acc=acc)
    flat = run_sgd(X, y, s, order, w0, w, V, **kw)
    packed = run_sgd(X, y, s, order, w0, w, V, packed=True, **kw)
    assert flat[0] == packed[0] and flat[4] == packed[4]
    for a, b in [(flat[1], packed[1]), (flat[2], packed[2]), *zip(flat[3], packed[3], strict=True)]:
        np.testing.assert_array_equal(a, b)


def _k8_adagrad_epoch(dtype, index_dtype, packed):
    """One AdaGrad epoch at k = 8 with a penalty scale: (w0, w, V, acc_w, acc_V, loss)."""
    X = random_csr(400, 50, 0.2, dtype, index_dtype, seed=13, empty_rows=(2,))
    y = targets(X, R.SQUARE)
    rng = np.random.default_rng(5)
    w0, w, V = params(50, 8, dtype)
    got = run_sgd(X, y, rng.uniform(0.5, 2.0, 400), rng.permutation(400), w0, w, V,
                  loss=R.SQUARE, adagrad=True, reg_scale=rng.uniform(0.1, 3.0, 50),
                  packed=packed)
    return np.array(got[0]), got[1], got[2], got[3][1], got[3][2], np.array(got[4][0])


def test_sgd_avx_and_sse2_adagrad_rows_give_the_same_bits(tmp_path):
    """The k = 8 AdaGrad rows pick AVX at run time where the CPU has it; FMREC_NO_AVX=1
    forces the SSE2 ones. Same lanes, same operations, no FMA: the same bits."""
    script = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import test_kernels as t\n"
        "from fmrec._kernels import sgd\n"
        "out = {'simd': np.array(sgd.simd_in_use())}\n"
        "for dt in (np.float32, np.float64):\n"
        "    for it in (np.int32, np.int64):\n"
        "        for packed in (False, True):\n"
        "            for i, a in enumerate(t._k8_adagrad_epoch(dt, it, packed)):\n"
        "                out[f'{dt.__name__}_{it.__name__}_{packed}_{i}'] = a\n"
        "np.savez(sys.argv[2], **out)\n")
    assert_same_bits_with_and_without_avx(script, tmp_path, n_arrays=48)


def test_sgd_workspace_too_small_is_refused():
    X = random_csr(10, 6, 0.5, np.float64, seed=1)
    w0, w, V = params(6, 8, np.float64)
    dt = np.float64
    with pytest.raises(ValueError, match="workspace"):
        sgd.sgd_epoch(X.indptr, X.indices, X.data, np.zeros(10), np.ones(10),
                      np.arange(10, dtype=np.intp), np.array([w0]), w, V, np.zeros(1),
                      np.zeros_like(w), np.zeros_like(V), R.SQUARE, 0.05, True, 0.1, 0.2, 0.3,
                      np.empty(0, dt), True, True, 1,
                      np.empty(sgd.workspace_size(6, 8) - 1, dt))


def test_sgd_one_thread_is_bit_reproducible():
    X = random_csr(200, 40, 0.1, np.float32, seed=9)
    y, s = targets(X, R.SQUARE), np.ones(200)
    w0, w, V = params(40, 8, np.float32)
    order = np.random.default_rng(4).permutation(200)
    a = run_sgd(X, y, s, order, w0, w, V, loss=R.SQUARE, adagrad=True)
    b = run_sgd(X, y, s, order, w0, w, V, loss=R.SQUARE, adagrad=True)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])


@pytest.mark.parametrize("adagrad,packed", [(False, False), (True, False), (True, True)])
def test_sgd_two_threads_without_conflicts_match_reference(adagrad, packed):
    """Rows of the two halves of the order touch disjoint features, so Hogwild has no races
    and two threads (each taking one half: 2 x 3 chunks of 1024 rows) must give the sequential
    result."""
    rng = np.random.default_rng(7)
    n, half = 6 * 1024, 20
    cols = np.where(np.arange(n)[:, None] < n // 2, 0, half) + np.sort(
        np.argsort(rng.random((n, half)), axis=1)[:, :4], axis=1)
    X = sp.csr_matrix((rng.normal(size=4 * n), cols.ravel(), np.arange(0, 4 * n + 1, 4)),
                      shape=(n, 2 * half))
    y, s = targets(X, R.SQUARE), np.ones(n)
    w0, w, V = params(2 * half, 4, np.float64)
    order = np.concatenate([rng.permutation(n // 2), n // 2 + rng.permutation(n // 2)])
    ref = R.sgd_epoch(X, y, s, order, w0, w, V, loss=R.SQUARE, learning_rate=0.05,
                      adagrad=adagrad, reg_bias=0.1, reg_linear=0.2, reg_factors=0.3,
                      fit_intercept=False)
    got = run_sgd(X, y, s, order, w0, w, V, loss=R.SQUARE, adagrad=adagrad,
                  fit_intercept=False, n_threads=2, packed=packed)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-10, atol=1e-12)
    assert got[4][0] == pytest.approx(ref[4], rel=1e-10)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_sgd_solver_packs_only_where_it_pays_and_fits_the_same(monkeypatch, n_jobs):
    """FMRegressor's AdaGrad fit (the solver holding its workspace across epochs, with
    reg_power's per-feature scale) ends in the same bits packed or flat on one thread; on two
    (Hogwild) both fit the data about equally well."""
    from fmrec import FMRegressor
    from fmrec.solvers import sgd as solver

    X = random_csr(2000, 60, 0.1, np.float32, seed=4)
    y = targets(X, R.SQUARE)
    real, sizes = sgd.sgd_epoch, []

    def spy(*args):
        sizes.append(args[-1].shape[0])  # the workspace
        return real(*args)

    monkeypatch.setattr(solver, "_sgd", SimpleNamespace(sgd_epoch=spy,
                                                        workspace_size=sgd.workspace_size))
    fits = {}
    for min_nnz in (0, 10**9):
        monkeypatch.setattr(solver, "PACK_MIN_NNZ_PER_FEATURE", min_nnz)
        seen = []
        model = FMRegressor(solver="sgd", n_epochs=4, random_state=0, n_jobs=n_jobs,
                            reg_linear=0.01, reg_factors=0.01)
        model.fit(X, y, callbacks=[lambda est, epoch, logs, seen=seen: seen.append(est.V_.copy())])
        fits[min_nnz] = model, seen
    assert sizes == [sgd.workspace_size(60, 8)] * 4 + [0] * 4
    (packed, seen_p), (flat, seen_f) = fits[0], fits[10**9]
    if n_jobs == 1:
        np.testing.assert_array_equal(packed.w_, flat.w_)
        np.testing.assert_array_equal(packed.V_, flat.V_)
        for a, b in zip(packed._accumulators, flat._accumulators, strict=True):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(seen_p, seen_f, strict=True):  # what every epoch published
            np.testing.assert_array_equal(a, b)
    else:
        # Two Hogwild fits differ run to run: on this 60-feature problem 20 of them ended
        # within -1% / +4% of the one-thread (sequential) loss, packed or flat, under load
        # too; so each is held to the sequential fit, which is the same for both layouts.
        sequential = FMRegressor(solver="sgd", n_epochs=4, random_state=0, n_jobs=1,
                                 reg_linear=0.01, reg_factors=0.01).fit(X, y)
        target = sequential.history_["train_loss"][-1]
        for model in (packed, flat):
            assert model.history_["train_loss"][-1] == pytest.approx(target, rel=0.1)
            assert model.history_["train_loss"][-1] < 0.5 * model.history_["train_loss"][0]


def test_sgd_reports_non_finite_rows():
    X = random_csr(20, 5, 0.5, np.float64, seed=1, empty_rows=())
    w0, w, V = params(5, 2, np.float64)
    V[:] = 1e200
    got = run_sgd(X, targets(X, R.SQUARE), np.ones(20), np.arange(20), w0, w, V,
                  loss=R.SQUARE, adagrad=False)
    assert got[4][2] > 0


def als_caches(X, y, loss, w0, w, V, n_threads=1):
    n, k = X.shape[0], V.shape[1]
    r, q = np.empty(n, w.dtype), np.empty((n, k), w.dtype)
    als.compute_caches(X.indptr, X.indices, X.data, y.astype(w.dtype), loss, w0, w, V, r, q,
                       n_threads)
    return r, q


@pytest.mark.parametrize("dtype,index_dtype", CASES)
@pytest.mark.parametrize("loss", [R.SQUARE, R.LOGISTIC])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_als_caches(dtype, index_dtype, loss, n_threads):
    X = random_csr(45, 10, 0.3, dtype, index_dtype, seed=11)
    y = targets(X, loss)
    w0, w, V = params(10, 3, dtype)
    r, q = als_caches(X, y, loss, w0, w, V, n_threads)
    yhat = R.predict(X, w0, w, V)
    np.testing.assert_allclose(r, yhat - y if loss == R.SQUARE else yhat, **tolerance(dtype))
    np.testing.assert_allclose(q, X.astype(np.float64) @ V.astype(np.float64),
                               **tolerance(dtype))


def run_als(X, y, s, w0, w, V, *, loss, reg_bias, rl, rf, fit_intercept=True, fit_linear=True,
            blocks=None, n_threads=1):
    dt = w.dtype
    r, q = als_caches(X, y, loss, w0, w, V)
    C = X.tocsc()
    C.sort_indices()
    W0, W, VV = np.array([w0], dt), w.copy(), V.copy()
    if blocks is None:
        blocks = np.array([0, X.shape[1]], dtype=np.int64)
    out = als.als_sweep(C.indptr, C.indices, C.data, NO_CODES, y.astype(dt), s.astype(dt), loss,
                        W0, W, VV, r, q, reg_bias, rl.astype(dt), rf.astype(dt), fit_intercept,
                        fit_linear, blocks, n_threads)
    return W0[0], W, VV, r, q, out


@pytest.mark.parametrize("dtype,index_dtype", CASES)
@pytest.mark.parametrize("loss", [R.SQUARE, R.LOGISTIC])
@pytest.mark.parametrize("flags", [(True, True), (False, False)])
@pytest.mark.parametrize("weights", ["random", "ones"])  # ones: the sweep skips reading them
# The caches go to and from factor-major scratch eight factors at a time, then one by one.
@pytest.mark.parametrize("k", [3, 8, 11])
def test_als_sweep_matches_reference(dtype, index_dtype, loss, flags, weights, k):
    X = random_csr(40, 10, 0.3, dtype, index_dtype, seed=13)
    X = sp.hstack([X, sp.csr_matrix((40, 1), dtype=dtype)], format="csr")  # an empty column
    X.indices, X.indptr = X.indices.astype(index_dtype), X.indptr.astype(index_dtype)
    y = targets(X, loss)
    rng = np.random.default_rng(3)
    s = rng.uniform(0.5, 2.0, 40) if weights == "random" else np.ones(40)
    rl, rf = rng.uniform(0.1, 1.0, 11), rng.uniform(0.1, 1.0, 11)
    w0, w, V = params(11, k, dtype)
    ref = R.als_sweep(X, y, s, w0, w, V, loss=loss, reg_bias=0.4, reg_linear=rl,
                      reg_factors=rf, fit_intercept=flags[0], fit_linear=flags[1])
    got = run_als(X, y, s, w0, w, V, loss=loss, reg_bias=0.4, rl=rl, rf=rf,
                  fit_intercept=flags[0], fit_linear=flags[1])
    tol = tolerance(dtype)
    assert got[0] == pytest.approx(ref[0], rel=tol["rtol"], abs=tol["atol"])
    np.testing.assert_allclose(got[1], ref[1], **tol)
    np.testing.assert_allclose(got[2], ref[2], **tol)
    # The caches left behind describe the new parameters, and the loss sum matches them.
    yhat = R.predict(X, ref[0], ref[1], ref[2])
    np.testing.assert_allclose(got[3], yhat - y if loss == R.SQUARE else yhat, **tol)
    loss_sum, weight_sum, bad = got[5]
    assert loss_sum == pytest.approx(np.sum(s * R.loss_value(loss, yhat, y)), rel=tol["rtol"])
    assert bad == 0


def _sigmoid(z):
    """sigmoid in float64 from NumPy's exp, in the kernels' overflow-free form."""
    e = np.exp(-np.abs(np.asarray(z, np.float64)))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_array_matches_numpy(dtype):
    """The logistic sweeps' vector sigmoid: within 1e-15 of NumPy's everywhere exp(-|z|) is
    a normal number, whole vectors and the lanes' leftovers alike (lengths 0 to 9)."""
    rng = np.random.default_rng(0)
    z = np.concatenate([np.linspace(-700, 700, 20001), rng.normal(0, 5, 20000),
                        rng.normal(0, 1e-3, 1000), [0.0, -0.0, 1e-300, -1e-300, 36.7, -36.7]])
    z = z.astype(dtype)
    got = als.sigmoid_array(z)
    assert got.dtype == np.float64 and got.shape == z.shape
    np.testing.assert_allclose(got, _sigmoid(z), rtol=1e-15, atol=0)
    for n in range(10):
        np.testing.assert_allclose(als.sigmoid_array(z[7:7 + n]), _sigmoid(z[7:7 + n]),
                                   rtol=1e-15, atol=0)
    assert als.sigmoid_array(np.array([0.0], dtype))[0] == 0.5


def test_sigmoid_array_far_tails():
    """Past exp(-708) the sigmoid is 1 or, below zero, 0 (not NumPy's subnormals: both are
    0 up to 1e-308); infinities saturate, NaN stays NaN."""
    z = np.array([708.0, 709.0, 745.0, 800.0, 1e300, np.inf, -709.0, -745.0, -800.0, -np.inf,
                  np.nan])
    got = als.sigmoid_array(z)
    np.testing.assert_array_equal(got[:6], 1.0)
    assert np.all((got[6:10] >= 0) & (got[6:10] < 1e-307))
    assert np.isnan(got[10])
    np.testing.assert_array_equal(als.sigmoid_array(-z[1:6]), 0.0)


def test_als_avx_and_sse2_give_the_same_bits(tmp_path):
    """The vector sigmoid and the column sums on 4 lanes of doubles: one AVX register, or
    two SSE2 ones (FMREC_NO_AVX=1). The same operations per lane, no FMA: the same bits,
    and so the same sweeps under both losses, with and without weights."""
    script = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import test_kernels as t\n"
        "from fmrec._kernels import als, bpr\n"
        "z = np.random.default_rng(1).normal(0, 8, 1003)\n"
        "out = {'simd': np.array(bpr.simd_in_use())}\n"
        "for dt in (np.float32, np.float64):\n"
        "    out[f'sigmoid_{dt.__name__}'] = als.sigmoid_array(z.astype(dt))\n"
        "    for loss in (0, 1):\n"
        "        for unit in (True, False):\n"
        "            for i, a in enumerate(t._als_sweep_on_long_columns(dt, loss, unit)):\n"
        "                out[f'sweep_{dt.__name__}_{loss}_{unit}_{i}'] = np.asarray(a)\n"
        "np.savez(sys.argv[2], **out)\n")
    assert_same_bits_with_and_without_avx(script, tmp_path, n_arrays=42)


def _als_sweep_on_long_columns(dtype, loss, unit_weights):
    """One ALS sweep on columns of about 90 rows (whole vectors and leftovers)."""
    X = random_csr(300, 12, 0.3, dtype, np.int32, seed=23)
    y = targets(X, loss)
    s = np.ones(300) if unit_weights else np.random.default_rng(2).uniform(0.5, 2.0, 300)
    rl, rf = np.full(12, 0.3), np.full(12, 0.5)
    w0, w, V = params(12, 4, dtype)
    return run_als(X, y, s, w0, w, V, loss=loss, reg_bias=0.2, rl=rl, rf=rf)[:5]


def test_als_objective_never_increases_on_square_loss():
    X = random_csr(300, 40, 0.08, np.float64, seed=17)
    y = targets(X, R.SQUARE)
    s = np.random.default_rng(5).uniform(0.2, 3.0, 300)
    rl, rf = np.full(40, 0.05), np.full(40, 0.1)
    w0, w, V = params(40, 5, np.float64)
    previous = R.objective(X, y, s, R.SQUARE, w0, w, V, 0.01, rl, rf)
    for _ in range(15):
        w0, w, V, *_ = run_als(X, y, s, w0, w, V, loss=R.SQUARE, reg_bias=0.01, rl=rl, rf=rf)
        current = R.objective(X, y, s, R.SQUARE, w0, w, V, 0.01, rl, rf)
        assert current <= previous * (1 + 1e-12)
        previous = current


def one_hot_fields(n_rows, sizes, seed):
    """Rows with exactly one non-zero per field (like user id + item id + …)."""
    rng = np.random.default_rng(seed)
    offsets = np.cumsum([0, *sizes[:-1]])
    cols = np.column_stack([o + rng.integers(0, s, n_rows) for o, s in zip(offsets, sizes,
                                                                           strict=True)])
    vals = rng.uniform(0.5, 1.5, cols.shape)
    return sp.csr_matrix((vals.ravel(), cols.ravel(), np.arange(0, cols.size + 1, len(sizes))),
                         shape=(n_rows, sum(sizes)))


def test_conflict_free_blocks_find_one_hot_fields():
    X = one_hot_fields(500, [30, 50, 7], seed=1)
    C = X.tocsc()
    blocks = als.conflict_free_blocks(C.indptr, C.indices, X.shape[0])
    np.testing.assert_array_equal(blocks, [0, 30, 80, 87])
    dense = X.toarray() != 0
    for lo, hi in zip(blocks[:-1], blocks[1:], strict=True):
        assert dense[:, lo:hi].sum(axis=1).max() <= 1


def test_conflict_free_blocks_on_random_columns():
    X = random_csr(300, 40, 0.1, seed=4, empty_rows=())
    C = X.tocsc()
    blocks = als.conflict_free_blocks(C.indptr, C.indices, X.shape[0])
    assert blocks[0] == 0 and blocks[-1] == 40 and np.all(np.diff(blocks) > 0)
    dense = X.toarray() != 0
    for lo, hi in zip(blocks[:-1], blocks[1:], strict=True):
        assert dense[:, lo:hi].sum(axis=1).max() <= 1


@pytest.mark.parametrize("loss", [R.SQUARE, R.LOGISTIC])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_als_parallel_blocks_give_the_serial_result_bit_for_bit(loss, dtype):
    X = one_hot_fields(2000, [120, 300, 9], seed=2).astype(dtype)
    y = targets(X, loss)
    s = np.random.default_rng(1).uniform(0.5, 2.0, 2000)
    C = X.tocsc()
    blocks = als.conflict_free_blocks(C.indptr, C.indices, X.shape[0])
    rl, rf = np.full(429, 0.5), np.full(429, 2.0)
    w0, w, V = params(429, 8, dtype)
    serial = run_als(X, y, s, w0, w, V, loss=loss, reg_bias=0.1, rl=rl, rf=rf)
    threaded = run_als(X, y, s, w0, w, V, loss=loss, reg_bias=0.1, rl=rl, rf=rf,
                       blocks=blocks, n_threads=2)
    for a, b in zip(serial[:5], threaded[:5], strict=True):
        np.testing.assert_array_equal(a, b)


def test_sgd_long_rows_across_chunks_grow_the_row_buffer():
    """1100 rows of ~40 non-zeros: the first chunk (1024 rows) needs more than the initial
    buffer of 32 entries per row, and a second, short chunk follows."""
    X = random_csr(1100, 50, 0.8, np.float64, seed=21, empty_rows=(5,))
    y = targets(X, R.SQUARE)
    s = np.ones(1100)
    w0, w, V = params(50, 3, np.float64)
    order = np.random.default_rng(3).permutation(1100)
    ref = R.sgd_epoch(X, y, s, order, w0, w, V, loss=R.SQUARE, learning_rate=0.001,
                      adagrad=False, reg_bias=0.1, reg_linear=0.2, reg_factors=0.3)
    got = run_sgd(X, y, s, order, w0, w, V, loss=R.SQUARE, adagrad=False, lr=0.001)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("form", ["unit", "codes"])
def test_als_sweep_with_compact_values_matches_explicit_values(form):
    X = one_hot_fields(300, [20, 30], seed=5)
    table = np.array([1.0]) if form == "unit" else np.array([0.25, 0.5, 1.0, 3.0])
    X.data = np.random.default_rng(0).choice(table, X.nnz)
    y = targets(X, R.SQUARE)
    s = np.ones(300)
    rl, rf = np.full(50, 0.5), np.full(50, 1.0)
    w0, w, V = params(50, 4, np.float64)
    explicit = run_als(X, y, s, w0, w, V, loss=R.SQUARE, reg_bias=0.0, rl=rl, rf=rf)
    r, q = als_caches(X, y, R.SQUARE, w0, w, V)
    C = X.tocsc()
    if form == "unit":
        values, codes = np.empty(0), NO_CODES
    else:
        values, codes = table, np.searchsorted(table, C.data).astype(np.uint8)
    W0, W, VV = np.array([w0]), w.copy(), V.copy()
    als.als_sweep(C.indptr, C.indices, values, codes, y, s, R.SQUARE, W0, W, VV, r, q, 0.0, rl,
                  rf, True, True, np.array([0, 50], dtype=np.int64), 1)
    np.testing.assert_array_equal(W, explicit[1])
    np.testing.assert_array_equal(VV, explicit[2])


def test_als_sweep_rejects_codes_past_the_table():
    X = one_hot_fields(50, [5, 5], seed=1)
    C = X.tocsc()
    r, q = np.zeros(50), np.zeros((50, 2))
    with pytest.raises(ValueError, match="table"):
        als.als_sweep(C.indptr, C.indices, np.array([1.0, 2.0]),
                      np.full(C.nnz, 7, np.uint8), np.zeros(50), np.ones(50), R.SQUARE,
                      np.zeros(1), np.zeros(10), np.zeros((10, 2)), r, q, 0.0, np.ones(10),
                      np.ones(10), True, True, np.array([0, 10], dtype=np.int64), 1)


@pytest.mark.parametrize("dtype,index_dtype", CASES)
@pytest.mark.parametrize("k", [3, 8])
@pytest.mark.parametrize("fit_linear", [True, False])
def test_als_block_sweep_equals_the_per_pass_path(dtype, index_dtype, k, fit_linear):
    """ALS over a relation block, square loss: block_sweep (per-entity statistics, two row
    passes) takes the exact coordinate minimizers the per-pass path takes, up to rounding."""
    from fmrec.design import DesignMatrix, RelationBlock
    from fmrec.solvers._blocks import split_design
    from fmrec.solvers._state import FMState

    rng = np.random.default_rng(3)
    n = 300
    users = random_csr(30, 16, 0.4, dtype, index_dtype, seed=4, empty_rows=(29,))
    D = DesignMatrix(random_csr(n, 3, 0.5, dtype, index_dtype, seed=6),
                     [RelationBlock(users, rng.integers(0, 30, n))])
    d = D.shape[1]
    y = targets(D.to_csr(), R.SQUARE).astype(dtype)
    s = rng.uniform(0.5, 2.0, n).astype(dtype)
    rl, rf = rng.uniform(0.1, 1.0, d).astype(dtype), rng.uniform(0.1, 1.0, d).astype(dtype)
    rl[-2] = rf[-2] = 0.0  # an unpenalized column
    w0, w, V = params(d, k, dtype)
    flat, parts, _ = split_design(D, dtype, max_row_nnz=2.0)
    (part,) = parts
    out = []
    for per_pass in (False, True):
        state = FMState(w0, w.copy(), V.copy())
        r, q = als_caches(flat, y, R.SQUARE, w0, state.w, state.V)
        part.add_to_caches(state.w, state.V, r, q)
        sq = part.sweep(state, r, q, y, s, R.SQUARE, rl, rf, fit_linear, per_pass=per_pass)
        out.append((state.w, state.V, r, q, sq))
    (w_a, V_a, r_a, q_a, sq), (w_b, V_b, r_b, q_b, _) = out
    tol = tolerance(dtype)
    for a, b in [(w_a, w_b), (V_a, V_b), (r_a, r_b), (q_a, q_b)]:
        np.testing.assert_allclose(a, b, **tol)
    assert sq == pytest.approx(float(np.sum(s.astype(float) * r_a.astype(float) ** 2)),
                               rel=tol["rtol"])
    yhat = R.predict(D.to_csr(np.float64), w0, w_a.astype(float), V_a.astype(float))
    np.testing.assert_allclose(r_a, yhat - y, **tol)  # the caches describe the new model


@pytest.mark.parametrize("dtype,index_dtype", CASES)
@pytest.mark.parametrize("loss", [R.SQUARE, R.LOGISTIC])
def test_block_caches_equal_those_of_the_materialized_rows(dtype, index_dtype, loss):
    """compute_caches over the flat columns plus block_add_to_caches for every block gives
    compute_caches over the materialized rows."""
    from fmrec.design import DesignMatrix, RelationBlock
    from fmrec.solvers._blocks import split_design

    rng = np.random.default_rng(8)
    n, k = 200, 5
    blocks = [RelationBlock(random_csr(n_e, width, 0.4, dtype, index_dtype, seed=n_e,
                                       empty_rows=(n_e - 1,)), rng.integers(0, n_e, n))
              for n_e, width in [(20, 11), (13, 7)]]
    D = DesignMatrix(random_csr(n, 3, 0.5, dtype, index_dtype, seed=6), blocks)
    X = D.to_csr(dtype)
    y = targets(X, loss).astype(dtype)
    w0, w, V = params(D.shape[1], k, dtype)
    flat, parts, _ = split_design(D, dtype, max_row_nnz=2.0)
    assert len(parts) == 2
    r, q = als_caches(flat, y, loss, w0, w, V)
    for part in parts:
        part.add_to_caches(w, V, r, q)
    r_ref, q_ref = als_caches(X, y, loss, w0, w, V)
    np.testing.assert_allclose(r, r_ref, **tolerance(dtype))
    np.testing.assert_allclose(q, q_ref, **tolerance(dtype))
