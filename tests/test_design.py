"""DesignMatrix (relation blocks): construction, prediction, counts, and the block ALS sweep
against the NumPy reference on the materialized rows."""

import numpy as np
import pytest
import reference as R
import scipy.sparse as sp

from fmrec import FMClassifier, FMRegressor
from fmrec.design import DesignMatrix, RelationBlock, column_counts, fm_output
from fmrec.solvers import _blocks
from fmrec.solvers._state import FMState, penalty_scale, weighted_column_counts
from fmrec.solvers.als import ALSSolver


def relational(n=120, flat_cols=4, seed=0, dtype=np.float64):
    """Samples over 15 users × 9 block features and 12 items × 6, plus a flat part.

    User 14 has no samples and user block column 8 is empty, to cover both corner cases.
    """
    rng = np.random.default_rng(seed)
    users = sp.random(15, 9, density=0.35, format="csr", random_state=seed + 1,
                      data_rvs=lambda m: rng.uniform(0.2, 1.5, m)).astype(dtype).tolil()
    users[:, 8] = 0
    users = users.tocsr()
    users.eliminate_zeros()
    items = sp.random(12, 6, density=0.4, format="csr", random_state=seed + 2,
                      data_rvs=lambda m: rng.uniform(0.2, 1.5, m)).astype(dtype)
    flat = None
    if flat_cols:
        flat = sp.random(n, flat_cols, density=0.4, format="csr", random_state=seed + 3,
                         data_rvs=rng.standard_normal).astype(dtype)
    X = DesignMatrix(flat, [RelationBlock(users, rng.integers(0, 14, n)),
                            RelationBlock(items, rng.integers(0, 12, n))])
    return X


def test_shape_offsets_and_materialized_rows():
    X = relational()
    assert X.shape == (120, 4 + 9 + 6) and len(X) == 120
    np.testing.assert_array_equal(X.block_offsets, [0, 4, 13, 19])
    dense = X.to_csr().toarray()
    np.testing.assert_array_equal(dense[:, 4:13], X.blocks[0].matrix.toarray()[X.blocks[0].index])
    np.testing.assert_array_equal(dense[:, :4], X.flat.toarray())
    part = X.take([5, 0, 7])
    np.testing.assert_array_equal(part.to_csr().toarray(), dense[[5, 0, 7]])


def test_blocks_only_design():
    X = relational(flat_cols=0)
    assert X.shape == (120, 15) and X.flat.shape == (120, 0)


@pytest.mark.parametrize("bad,message", [
    (lambda U: RelationBlock(U, np.array([0, 20])), "outside"),
    (lambda U: RelationBlock(U, np.array([0.5])), "integers"),
    (lambda U: DesignMatrix(sp.csr_matrix((3, 2)), [RelationBlock(U, np.array([0, 1]))]),
     "block 0 indexes 2 samples"),
    (lambda U: DesignMatrix(None, []), "flat part or at least one block"),
    (lambda U: DesignMatrix(None, [U]), "RelationBlock"),
])
def test_construction_errors(bad, message):
    U = sp.identity(4, format="csr")
    with pytest.raises((ValueError, TypeError), match=message):
        bad(U)


def test_fm_output_and_counts_equal_the_materialized_rows():
    X = relational()
    rng = np.random.default_rng(4)
    w0, w, V = 0.2, rng.normal(size=19), rng.normal(0, 0.4, (19, 3))
    np.testing.assert_allclose(fm_output(X, w0, w, V, chunk_rows=7),
                               R.predict(X.to_csr(), w0, w, V), rtol=1e-12, atol=1e-12)
    s = rng.uniform(0, 2, 120)
    np.testing.assert_allclose(column_counts(X, s), weighted_column_counts(X.to_csr(), s))


def one_block_epoch(X, y, s, loss, w0, w, V, hp, dtype):
    counts = column_counts(X, s)
    state = FMState(w0, w.astype(dtype), V.astype(dtype))
    solver = ALSSolver(X, y.astype(dtype), s.astype(dtype), loss, state, counts=counts, hp=hp,
                       n_threads=1)
    loss_sum, _ = solver.epoch()
    return state, counts, loss_sum


@pytest.fixture(params=["per entity", "as columns"])
def block_layout(request, monkeypatch):
    """Sweep the blocks per entity, or let split_design turn them into ordinary columns."""
    per_entity = request.param == "per entity"
    monkeypatch.setattr(_blocks, "BLOCK_MIN_ROW_NNZ", 0.0 if per_entity else np.inf)
    return per_entity


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("loss", [R.SQUARE, R.LOGISTIC])
@pytest.mark.parametrize("flat_cols,fit_linear", [(4, True), (0, True), (3, False)])
def test_block_sweep_matches_reference(dtype, loss, flat_cols, fit_linear, block_layout):
    check_block_sweep(dtype, loss, flat_cols, fit_linear, block_layout)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logistic_block_sweep_over_several_sigmoid_chunks(dtype, block_layout):
    """600 rows: the per-entity sums take the rows' sigmoids 256 at a time (two whole
    chunks and a short one)."""
    check_block_sweep(dtype, R.LOGISTIC, 4, True, block_layout, n=600)


def check_block_sweep(dtype, loss, flat_cols, fit_linear, block_layout, n=120):
    """One ALS epoch over ``relational(n)`` against the NumPy reference sweep."""
    X = relational(n=n, flat_cols=flat_cols, dtype=dtype)
    Xm = X.to_csr()
    rng = np.random.default_rng(7)
    y = R.predict(Xm, 0.1, rng.normal(size=X.shape[1]), rng.normal(0, 0.4, (X.shape[1], 2)))
    y = y + rng.normal(0, 0.3, len(y))
    if loss == R.LOGISTIC:
        y = (y > np.median(y)).astype(float)
    s = rng.uniform(0.5, 2.0, len(y))
    w0, w, V = 0.3, rng.normal(0, 0.5, X.shape[1]), rng.normal(0, 0.3, (X.shape[1], 3))
    hp = {"reg_bias": 0.2, "reg_linear": 0.3, "reg_factors": 0.5, "reg_power": 0.5,
          "fit_intercept": True, "fit_linear": fit_linear}
    state, counts, loss_sum = one_block_epoch(X, y, s, loss, w0, w, V, hp, dtype)
    scale = penalty_scale(counts, 0.5)
    ref = R.als_sweep(Xm, y, s, w0, w, V, loss=loss, reg_bias=0.2 * s.sum() ** 0.5,
                      reg_linear=0.3 * scale, reg_factors=0.5 * scale, fit_linear=fit_linear,
                      block_starts=X.block_offsets[1:-1] if block_layout else None)
    tol = {"rtol": 1e-9, "atol": 1e-9} if dtype == np.float64 else {"rtol": 3e-4, "atol": 3e-4}
    assert state.w0[0] == pytest.approx(ref[0], **{"rel": tol["rtol"], "abs": tol["atol"]})
    np.testing.assert_allclose(state.w, ref[1], **tol)
    np.testing.assert_allclose(state.V, ref[2], **tol)
    yhat = R.predict(Xm, *ref)
    assert loss_sum == pytest.approx(np.sum(s * R.loss_value(loss, yhat, y)), rel=tol["rtol"])
    empty = flat_cols + 8  # no entity has it: no penalty either (n = 0), so it stays put
    np.testing.assert_array_equal(state.V[empty], V[empty].astype(dtype))


@pytest.mark.parametrize("model", [FMRegressor, FMClassifier])
def test_block_als_reaches_the_materialized_optimum(model, block_layout):
    X = relational(n=300, seed=3)
    rng = np.random.default_rng(0)
    y = X.to_csr() @ rng.normal(size=X.shape[1]) + rng.normal(0, 0.5, len(X))
    if model is FMClassifier:
        y = (y > 0).astype(int)
    kw = {"n_factors": 3, "n_epochs": 300, "dtype": "float64", "random_state": 0}
    blocks = model(**kw).fit(X, y)
    flat = model(**kw).fit(X.to_csr(), y)
    np.testing.assert_allclose(blocks.history_["objective"][-1], flat.history_["objective"][-1],
                               rtol=1e-9)
    np.testing.assert_allclose(blocks.decision_function(X) if model is FMClassifier
                               else blocks.predict(X),
                               flat.decision_function(X.to_csr()) if model is FMClassifier
                               else flat.predict(X.to_csr()), atol=1e-6)
    if model is FMRegressor:
        objective = np.array(blocks.history_["objective"])
        assert np.all(np.diff(objective) <= 1e-9 * objective[:-1])


@pytest.mark.parametrize("model", [FMRegressor, FMClassifier])
def test_mcmc_predicts_a_design_block_by_block(model, monkeypatch):
    # Every retained sample is applied to the blocks' per-entity sums; the rows (hundreds of
    # non-zeros long with implicit feedback sets) are never materialized.
    X = relational(n=300, seed=6)
    rng = np.random.default_rng(2)
    y = X.to_csr() @ rng.normal(size=X.shape[1]) + rng.normal(0, 0.5, len(X))
    if model is FMClassifier:
        y = (y > 0).astype(int)
    X_val, y_val = X.take(np.arange(40)), y[:40]
    fitted = model(n_factors=3, n_epochs=30, n_burn_in=5, solver="mcmc", random_state=0,
                   dtype="float64").fit(X, y, eval_set=(X_val, y_val))
    rows = X.to_csr()

    def refuse(*args, **kwargs):
        raise AssertionError("a DesignMatrix was materialized")

    monkeypatch.setattr(DesignMatrix, "to_csr", refuse)
    out = fitted.predict_proba(X)[:, 1] if model is FMClassifier else fitted.predict(X)
    refit = model(n_factors=3, n_epochs=30, n_burn_in=5, solver="mcmc", random_state=0,
                  dtype="float64").fit(X, y, eval_set=(X_val, y_val))  # validation too
    monkeypatch.undo()
    expected = (fitted.predict_proba(rows)[:, 1] if model is FMClassifier
                else fitted.predict(rows))
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(refit.history_[f"val_{fitted._metric_name()}"],
                               fitted.history_[f"val_{fitted._metric_name()}"], rtol=1e-10)


def test_estimators_take_designs_for_every_solver_and_check_them():
    X = relational(seed=5)
    y = np.random.default_rng(1).normal(size=len(X))
    for solver in ("als", "sgd"):
        model = FMRegressor(n_factors=2, n_epochs=3, solver=solver, random_state=0).fit(X, y)
        np.testing.assert_allclose(model.predict(X), model.predict(X.to_csr()), atol=1e-5)
    with pytest.raises(ValueError, match="19 features"):
        model.predict(X.to_csr()[:, :10])
    bad = relational(seed=5)
    bad.blocks[1].matrix.data[0] = np.nan
    with pytest.raises(ValueError, match="block 1 of X contains NaN"):
        FMRegressor(n_epochs=1).fit(bad, y)
    with pytest.raises(ValueError, match="shape"):
        FMRegressor(n_epochs=1).fit(X, y[:-1])


def test_split_design_keeps_long_blocks_and_materializes_short_ones():
    X = relational(n=50)
    long_users = RelationBlock(sp.random(15, 30, density=0.5, format="csr", random_state=0),
                               X.blocks[0].index)
    X = DesignMatrix(X.flat, [long_users, X.blocks[1]])
    flat, parts, skip = _blocks.split_design(X, np.float64)
    assert [(p.lo, p.hi) for p in parts] == [(4, 34)]
    np.testing.assert_array_equal(np.flatnonzero(skip), np.arange(4, 34))
    expected = X.to_csr().toarray()
    expected[:, 4:34] = 0
    np.testing.assert_array_equal(flat.toarray(), expected)
