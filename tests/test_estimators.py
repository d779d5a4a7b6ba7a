"""FMRegressor / FMClassifier behaviour: scikit-learn conventions, convergence, training control."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fmrec import FMClassifier, FMRegressor
from fmrec.datasets import make_fm_classification, make_fm_regression
from fmrec.metrics import auc, rmse

SOLVERS = ["als", "sgd"]


def expected_failures(estimator):
    if estimator.solver == "sgd":  # rows are visited in random order: weights != repeats
        reason = "SGD is stochastic: a weight of 2 is not the same as a repeated row"
    elif estimator.dtype == "float32" and isinstance(estimator, FMRegressor):
        reason = "float32 sums in another order agree to ~1e-6; the check demands 1e-7"
    else:
        return {}
    return {"check_sample_weight_equivalence_on_dense_data": reason,
            "check_sample_weight_equivalence_on_sparse_data": reason}


@parametrize_with_checks([
    FMRegressor(n_epochs=5, random_state=0),
    FMRegressor(n_epochs=5, dtype="float64", random_state=0),
    FMRegressor(solver="sgd", n_epochs=5, random_state=0),
    FMClassifier(n_epochs=5, random_state=0),
    FMClassifier(n_epochs=5, dtype="float64", random_state=0),
    FMClassifier(solver="sgd", n_epochs=5, random_state=0),
], expected_failed_checks=expected_failures)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def regression():
    X, y, truth = make_fm_regression(n_samples=12_000, n_features=300, n_factors=4,
                                     nnz_per_row=6, noise=0.1, random_state=0)
    return X[:10_000], y[:10_000], X[10_000:], y[10_000:], truth


@pytest.mark.parametrize("solver", SOLVERS)
def test_recovers_ground_truth_fm(regression, solver):
    X, y, X_test, y_test, truth = regression
    settings = {"als": {"n_epochs": 30, "reg_linear": 1e-3, "reg_factors": 1e-3},
                "sgd": {"n_epochs": 60, "learning_rate": 0.05, "reg_linear": 1e-4,
                        "reg_factors": 1e-4}}[solver]
    model = FMRegressor(n_factors=4, solver=solver, random_state=0, **settings).fit(X, y)
    test_rmse = rmse(y_test, model.predict(X_test))
    # Irreducible error is the noise (0.1); the targets' own spread is > 10x that.
    assert np.std(y_test) > 10 * truth["noise"]
    assert test_rmse < 1.25 * truth["noise"], test_rmse


@pytest.mark.parametrize("solver", SOLVERS)
def test_classifier_reaches_bayes_auc(solver):
    X, y, truth = make_fm_classification(n_samples=24_000, n_features=200, random_state=1)
    q = X[20_000:] @ truth["V"]
    sq = X[20_000:].multiply(X[20_000:]) @ truth["V"] ** 2
    true_logit = X[20_000:] @ truth["w"] + 0.5 * (q**2 - sq).sum(axis=1)
    bayes = auc(y[20_000:], true_logit)
    settings = {"als": {"n_epochs": 20, "reg_linear": 1e-3, "reg_factors": 1e-3},
                "sgd": {"n_epochs": 30, "learning_rate": 0.05, "reg_linear": 1e-4,
                        "reg_factors": 1e-4}}[solver]
    clf = FMClassifier(n_factors=4, solver=solver, random_state=0, **settings)
    clf.fit(X[:20_000], y[:20_000])
    got = auc(y[20_000:], clf.predict_proba(X[20_000:])[:, 1])
    assert got > bayes - 0.02, (got, bayes)


@pytest.mark.parametrize("solver", SOLVERS)
def test_fixed_seed_is_reproducible(regression, solver):
    X, y, *_ = regression
    a = FMRegressor(solver=solver, n_epochs=3, random_state=42).fit(X, y)
    b = FMRegressor(solver=solver, n_epochs=3, random_state=42).fit(X, y)
    np.testing.assert_array_equal(a.V_, b.V_)
    np.testing.assert_array_equal(a.w_, b.w_)
    c = FMRegressor(solver=solver, n_epochs=3, random_state=43).fit(X, y)
    assert not np.array_equal(a.V_, c.V_)


def test_hogwild_threads_train_as_well(regression):
    X, y, X_test, y_test, _ = regression
    one = FMRegressor(solver="sgd", n_epochs=20, n_jobs=1, random_state=0).fit(X, y)
    two = FMRegressor(solver="sgd", n_epochs=20, n_jobs=-1, random_state=0).fit(X, y)
    assert rmse(y_test, two.predict(X_test)) < 1.05 * rmse(y_test, one.predict(X_test))


def test_als_history_objective_is_monotone(regression):
    X, y, *_ = regression
    model = FMRegressor(n_epochs=10, dtype="float64", random_state=0).fit(X, y)
    objective = np.array(model.history_["objective"])
    assert np.all(np.diff(objective) <= 1e-9 * objective[:-1])
    assert len(model.history_["train_loss"]) == model.n_epochs_ == 10


def test_als_warm_start_continues_exactly(regression):
    X, y, *_ = regression
    full = FMRegressor(n_epochs=6, random_state=0).fit(X, y)
    part = FMRegressor(n_epochs=3, random_state=0, warm_start=True).fit(X, y)
    part.fit(X, y)
    np.testing.assert_array_equal(part.V_, full.V_)
    assert part.n_epochs_ == 6
    assert part.history_["train_loss"] == full.history_["train_loss"]


@pytest.mark.parametrize("solver", SOLVERS)
def test_sample_weight_two_equals_duplicated_rows(solver):
    X, y, _ = make_fm_regression(n_samples=400, n_features=30, random_state=3)
    w = np.ones(400)
    w[:100] = 2.0
    X_dup, y_dup = sp.vstack([X, X[:100]], format="csr"), np.concatenate([y, y[:100]])
    kw = {"solver": solver, "n_epochs": 4, "dtype": "float64", "random_state": 0}
    if solver == "als":
        a = FMRegressor(**kw).fit(X, y, sample_weight=w)
        b = FMRegressor(**kw).fit(X_dup, y_dup)
        np.testing.assert_allclose(a.V_, b.V_, rtol=1e-8, atol=1e-10)
    else:  # SGD visits rows in random order: compare the fitted quality instead
        a = FMRegressor(**kw).fit(X, y, sample_weight=w)
        b = FMRegressor(**kw).fit(X, y)
        assert rmse(y[:100], a.predict(X[:100])) < rmse(y[:100], b.predict(X[:100]))


def test_zero_weight_rows_are_ignored():
    X, y, _ = make_fm_regression(n_samples=300, n_features=20, random_state=4)
    y_noisy = y.copy()
    y_noisy[:50] = 1e3
    w = np.r_[np.zeros(50), np.ones(250)]
    a = FMRegressor(n_epochs=5, dtype="float64", random_state=0)
    a.fit(X, y_noisy, sample_weight=w)
    b = FMRegressor(n_epochs=5, dtype="float64", random_state=0)
    b.fit(X, y, sample_weight=w)
    np.testing.assert_allclose(a.V_, b.V_, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("solver", SOLVERS)
def test_early_stopping_keeps_best_epoch(regression, solver):
    X, y, X_val, y_val, _ = regression
    # Little regularization and many factors: validation error turns up after a while.
    model = FMRegressor(n_factors=32, solver=solver, n_epochs=200, reg_linear=0, reg_factors=0,
                        learning_rate=0.2, early_stopping_rounds=3, random_state=0)
    model.fit(X[:1500], y[:1500], eval_set=(X_val, y_val))
    history = model.history_["val_rmse"]
    assert model.n_epochs_ < 200
    assert model.n_epochs_ == model.best_epoch_ + 1 + 3
    assert min(history) == history[model.best_epoch_]
    assert rmse(y_val, model.predict(X_val)) == pytest.approx(min(history), rel=1e-6)


def test_callback_sees_logs_and_can_stop(regression):
    X, y, X_val, y_val, _ = regression
    seen = []

    def callback(estimator, epoch, logs):
        seen.append((epoch, dict(logs), estimator.predict(X_val[:2])))
        return epoch == 2

    model = FMClassifier(n_epochs=10, eval_metric="auc", random_state=0)
    model.fit(X, y > np.median(y), eval_set=(X_val, y_val > np.median(y)),
              callbacks=[callback])
    assert [e for e, *_ in seen] == [0, 1, 2] and model.n_epochs_ == 3
    assert set(seen[0][1]) == {"train_loss", "objective", "val_auc"}
    assert model.history_["val_auc"] == [logs["val_auc"] for _, logs, _ in seen]


def test_partial_fit_sgd_learns_online(regression):
    X, y, X_test, y_test, _ = regression
    model = FMRegressor(solver="sgd", random_state=0)
    errors = []
    for _ in range(8):
        for chunk in np.array_split(np.arange(X.shape[0]), 4):
            model.partial_fit(X[chunk], y[chunk])
        errors.append(rmse(y_test, model.predict(X_test)))
    assert errors[-1] < 0.8 * errors[0]
    assert model.n_epochs_ == 32


def test_partial_fit_classifier_takes_classes_on_first_call():
    X, y, _ = make_fm_classification(n_samples=400, n_features=30, random_state=2)
    labels = np.where(y == 1, "pos", "neg")
    clf = FMClassifier(solver="sgd", random_state=0)
    clf.partial_fit(X[:10], np.full(10, "neg"), classes=["neg", "pos"])
    clf.partial_fit(X[10:], labels[10:])
    assert clf.classes_.tolist() == ["neg", "pos"]
    with pytest.raises(ValueError, match="not among"):
        clf.partial_fit(X[:5], np.full(5, "maybe"))


def test_classifier_labels_any_two_values():
    X, y, _ = make_fm_classification(n_samples=2000, n_features=40, random_state=5)
    labels = np.where(y == 1, "like", "dislike")
    clf = FMClassifier(n_epochs=5, random_state=0).fit(X, labels)
    assert clf.classes_.tolist() == ["dislike", "like"]
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    predicted = clf.predict(X)
    assert set(predicted) <= {"like", "dislike"}
    np.testing.assert_array_equal(predicted == "like", clf.decision_function(X) > 0)
    np.testing.assert_array_equal(predicted == "like", proba[:, 1] > 0.5)


def test_logistic_output_is_stable_for_huge_margins():
    X = sp.csr_matrix(np.eye(4))
    clf = FMClassifier(n_epochs=2, random_state=0).fit(X, [0, 1, 0, 1])
    clf.w_[:] = [-1e5, 1e5, -800, 800]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proba = clf.predict_proba(X)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba[:, 1], [0, 1, 0, 1], atol=1e-12)


def test_regression_predictions_clipped_to_training_range():
    X, y, _ = make_fm_regression(n_samples=500, n_features=20, random_state=6)
    model = FMRegressor(n_epochs=5, random_state=0).fit(X, y)
    model.w_[0] = 1e3  # push some outputs far outside the training range
    assert model.predict(X).max() <= y.max() and model.predict(X).min() >= y.min()
    model.set_params(clip_predictions=False)
    assert model.predict(X).max() > y.max()


def test_fit_intercept_and_linear_can_be_switched_off(regression):
    X, y, *_ = regression
    model = FMRegressor(n_epochs=3, fit_intercept=False, fit_linear=False).fit(X, y)
    assert model.w0_ == 0.0 and not model.w_.any()
    sgd = FMRegressor(solver="sgd", n_epochs=3, fit_intercept=False, fit_linear=False)
    sgd.fit(X, y)
    assert sgd.w0_ == 0.0 and not sgd.w_.any()


def test_dense_and_sparse_inputs_agree(regression):
    X, y, *_ = regression
    X, y = X[:500], y[:500]
    a = FMRegressor(n_epochs=3, random_state=0).fit(X, y)
    b = FMRegressor(n_epochs=3, random_state=0).fit(X.toarray(), y)
    c = FMRegressor(n_epochs=3, random_state=0).fit(X.tocoo(), y)
    np.testing.assert_array_equal(a.V_, b.V_)
    np.testing.assert_array_equal(a.V_, c.V_)


def test_float64_and_float32(regression):
    X, y, *_ = regression
    a = FMRegressor(n_epochs=3, random_state=0).fit(X, y)
    b = FMRegressor(n_epochs=3, dtype="float64", random_state=0).fit(X, y)
    assert a.V_.dtype == np.float32 and b.V_.dtype == np.float64
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-3, atol=1e-3)


def test_diverging_sgd_raises_with_learning_rate_hint(regression):
    X, y, *_ = regression
    model = FMRegressor(solver="sgd", lr_schedule="constant", learning_rate=50.0,
                        random_state=0)
    with pytest.raises(ValueError, match="learning_rate"):
        model.fit(X, y * 100)


def test_divergence_later_keeps_last_finite_parameters(regression):
    X, y, *_ = regression

    def corrupt(estimator, epoch, logs):
        if epoch == 1:  # the live parameters turn non-finite: the next epoch diverges
            estimator.V_[:] = np.inf

    model = FMRegressor(solver="sgd", n_epochs=5, random_state=0)
    with pytest.warns(ConvergenceWarning, match="learning_rate"):
        model.fit(X, y, callbacks=[corrupt])
    assert np.isfinite(model.V_).all() and model.n_epochs_ == 2
    assert np.isfinite(model.predict(X)).all()


def test_failed_fit_leaves_fitted_model_intact(regression):
    X, y, *_ = regression
    model = FMRegressor(n_epochs=3, random_state=0).fit(X, y)
    before = (model.w0_, model.w_.copy(), model.V_.copy(), model.n_features_in_)
    bad = X.toarray()[:, :10]
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        model.fit(bad, y)
    with pytest.raises(ValueError):
        model.set_params(solver="sgd", learning_rate=1e6, lr_schedule="constant").fit(X, y * 1e3)
    model.set_params(solver="als")
    assert model.w0_ == before[0] and model.n_features_in_ == before[3]
    np.testing.assert_array_equal(model.w_, before[1])
    np.testing.assert_array_equal(model.V_, before[2])
    assert model.predict(X[:5]).shape == (5,)


def test_works_in_sklearn_tools(regression):
    X, y, *_ = regression
    X, y = X[:2000], y[:2000]
    scores = cross_val_score(FMRegressor(n_epochs=5, random_state=0), X, y, cv=3,
                             scoring="neg_root_mean_squared_error")
    assert scores.shape == (3,) and np.all(scores < 0)
    grid = GridSearchCV(make_pipeline(MaxAbsScaler(), FMRegressor(n_epochs=3, random_state=0)),
                        {"fmregressor__reg_factors": [0.01, 0.1]}, cv=2).fit(X, y)
    assert grid.best_params_["fmregressor__reg_factors"] in (0.01, 0.1)
    cloned = clone(FMRegressor(n_factors=5, solver="sgd"))
    assert cloned.get_params()["n_factors"] == 5 and not hasattr(cloned, "V_")


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_sgd_and_als_minimize_the_same_objective(power):
    """At the ALS optimum the SGD epoch's summed gradient (tiny constant steps) vanishes."""
    X, y, _ = make_fm_regression(n_samples=300, n_features=20, n_factors=2, random_state=8)
    kw = {"n_factors": 2, "reg_bias": 0.01, "reg_linear": 0.3, "reg_factors": 0.5,
          "reg_power": power, "dtype": "float64", "random_state": 0}
    als = FMRegressor(n_epochs=300, **kw).fit(X, y)

    def sgd_gradient(w, V):
        lr = 1e-9
        sgd = FMRegressor(solver="sgd", lr_schedule="constant", learning_rate=lr, n_epochs=1,
                          warm_start=True, **kw).fit(X, y)  # initializes the shapes
        sgd.w0_, sgd.w_, sgd.V_ = als.w0_, w.copy(), V.copy()
        sgd.fit(X, y)
        return np.r_[(w - sgd.w_) / lr, ((V - sgd.V_) / lr).ravel()]

    at_optimum = np.linalg.norm(sgd_gradient(als.w_, als.V_))
    elsewhere = np.linalg.norm(sgd_gradient(als.w_ * 1.2, als.V_ * 1.2))
    assert at_optimum < 1e-3 * elsewhere, (at_optimum, elsewhere)


def test_verbose_logs_each_epoch(caplog):
    X, y, _ = make_fm_regression(n_samples=100, n_features=10, random_state=0)
    with caplog.at_level("INFO", logger="fmrec"):
        FMRegressor(n_epochs=3, verbose=1).fit(X, y)
    assert [r.getMessage().split()[1] for r in caplog.records] == ["0", "1", "2"]
    assert "train_loss=" in caplog.records[0].getMessage()


def test_als_threads_change_nothing_but_speed():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 200, 5000), rng.integers(0, 300, 5000)
    X = sp.csr_matrix((np.ones(10_000), np.column_stack([users, 200 + items]).ravel(),
                       np.arange(0, 10_001, 2)), shape=(5000, 500))
    y = rng.normal(3, 1, 5000)
    one = FMRegressor(n_epochs=5, n_jobs=1, random_state=0).fit(X, y)
    two = FMRegressor(n_epochs=5, n_jobs=2, random_state=0).fit(X, y)
    np.testing.assert_array_equal(one.V_, two.V_)
    np.testing.assert_array_equal(one.w_, two.w_)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("power", [0.0, 0.5])
def test_features_unseen_in_training_contribute_nothing(solver, power):
    X, y, _ = make_fm_regression(n_samples=500, n_features=30, random_state=9)
    X = sp.hstack([X, sp.csr_matrix((500, 5), dtype=X.dtype)], format="csr")
    model = FMRegressor(solver=solver, n_epochs=3, reg_power=power, random_state=0).fit(X, y)
    assert not model.V_[30:].any() and not model.w_[30:].any()
    X_new = X[:10].toarray()
    X_new[:, 30:] = 1.0
    np.testing.assert_allclose(model.predict(X_new), model.predict(X[:10]), rtol=1e-6)


def test_early_stopping_without_eval_set_warns(regression):
    X, y, *_ = regression
    with pytest.warns(UserWarning, match="eval_set"):
        model = FMRegressor(n_epochs=3, early_stopping_rounds=2).fit(X[:500], y[:500])
    assert model.n_epochs_ == 3


@pytest.mark.parametrize("values", ["ones", "few", "many"])
def test_als_same_model_whatever_the_value_storage(values, monkeypatch):
    """One-hot, few-valued and continuous matrices take different CSC storage paths."""
    X, y, _ = make_fm_regression(n_samples=600, n_features=40, random_state=11)
    rng = np.random.default_rng(0)
    X.data = {"ones": np.ones(X.nnz), "few": rng.choice([0.5, 1.0, 2.0], X.nnz),
              "many": rng.uniform(0.5, 1.5, X.nnz)}[values].astype(X.dtype)
    model = FMRegressor(n_epochs=3, dtype="float64", random_state=0).fit(X, y)
    monkeypatch.setattr("fmrec.solvers._blocks.value_table", lambda data, max_size=256: None)
    reference = FMRegressor(n_epochs=3, dtype="float64", random_state=0).fit(X, y)  # plain CSC
    np.testing.assert_array_equal(model.V_, reference.V_)
