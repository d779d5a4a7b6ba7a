"""Bad input gets a clear error naming the problem, never a crash or a silent wrong answer."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError

from fmrec import FMClassifier, FMRegressor
from fmrec.datasets import make_fm_regression


@pytest.fixture(scope="module")
def data():
    X, y, _ = make_fm_regression(n_samples=200, n_features=15, random_state=0)
    return X, y


@pytest.fixture(scope="module")
def fitted(data):
    return FMRegressor(n_epochs=2, random_state=0).fit(*data)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("sparse", [True, False])
def test_non_finite_X(data, value, sparse):
    X, y = data
    X = X.toarray()
    X[3, 4] = value
    with pytest.raises(ValueError, match="NaN|infinity"):
        FMRegressor(n_epochs=1).fit(sp.csr_matrix(X) if sparse else X, y)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_y(data, value):
    X, y = data
    y = y.copy()
    y[7] = value
    with pytest.raises(ValueError, match="NaN|infinity"):
        FMRegressor(n_epochs=1).fit(X, y)


def test_lengths_differ(data):
    X, y = data
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        FMRegressor(n_epochs=1).fit(X, y[:-1])


@pytest.mark.parametrize("weights,match", [
    (-1.0, "[Nn]egative"), (np.nan, "NaN|finite"), (np.inf, "infinity|finite"),
])
def test_bad_sample_weight(data, weights, match):
    X, y = data
    w = np.ones(len(y))
    w[5] = weights
    with pytest.raises(ValueError, match=match):
        FMRegressor(n_epochs=1).fit(X, y, sample_weight=w)


def test_sample_weight_wrong_length_or_all_zero(data):
    X, y = data
    with pytest.raises(ValueError, match="sample_weight"):
        FMRegressor(n_epochs=1).fit(X, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="zero"):
        FMRegressor(n_epochs=1).fit(X, y, sample_weight=np.zeros(len(y)))


def test_more_than_two_classes(data):
    X, y = data
    with pytest.raises(ValueError, match="Only binary classification"):
        FMClassifier(n_epochs=1).fit(X, np.arange(len(y)) % 3)


def test_continuous_labels_for_classifier(data):
    X, y = data
    with pytest.raises(ValueError, match="Unknown label type"):
        FMClassifier(n_epochs=1).fit(X, y)


def test_predict_width_differs(fitted, data):
    X, _ = data
    with pytest.raises(ValueError, match="15 features"):
        fitted.predict(sp.hstack([X, X], format="csr"))


def test_empty_input(data):
    X, y = data
    with pytest.raises(ValueError, match="0 sample"):
        FMRegressor(n_epochs=1).fit(X[:0], y[:0])
    with pytest.raises(ValueError, match="0 feature"):
        FMRegressor(n_epochs=1).fit(np.empty((5, 0)), np.ones(5))


def test_predict_before_fit(data):
    with pytest.raises(NotFittedError):
        FMRegressor().predict(data[0])


@pytest.mark.parametrize("param,value,error", [
    ("n_factors", 0, ValueError), ("n_factors", 2.5, TypeError), ("solver", "newton", ValueError),
    ("n_epochs", 0, ValueError), ("learning_rate", 0.0, ValueError),
    ("learning_rate", np.nan, ValueError), ("reg_factors", -1.0, ValueError),
    ("reg_linear", "a lot", TypeError), ("init_std", -0.1, ValueError),
    ("lr_schedule", "adam", ValueError), ("eval_metric", "auc", ValueError),
    ("early_stopping_rounds", 0, ValueError), ("dtype", "float16", ValueError),
    ("n_jobs", 0, ValueError), ("n_jobs", 1.5, TypeError),
])
def test_bad_hyperparameters_name_themselves(data, param, value, error):
    with pytest.raises(error, match=param):
        FMRegressor(**{"n_epochs": 1, param: value}).fit(*data)


def test_eval_set_checks(data, fitted):
    X, y = data
    with pytest.raises(TypeError, match="eval_set"):
        FMRegressor(n_epochs=1).fit(X, y, eval_set=X)
    with pytest.raises(ValueError, match="features"):
        FMRegressor(n_epochs=1).fit(X, y, eval_set=(X[:, :5], y))
    with pytest.raises(ValueError, match="eval_set"):
        FMRegressor(n_epochs=1).fit(X, y, eval_set=(X, y[:-2]))
    bad = y.copy()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        FMRegressor(n_epochs=1).fit(X, y, eval_set=(X, bad))


def test_warm_start_with_changed_shape_is_refused(data):
    X, y = data
    model = FMRegressor(n_epochs=1, warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model.fit(X[:, :10], y)
    with pytest.raises(ValueError, match="n_factors"):
        model.set_params(n_factors=3).fit(X, y)
    model.set_params(n_factors=8)
    assert model.predict(X).shape == (200,)


def test_non_numeric_X(data):
    _, y = data
    with pytest.raises(ValueError):
        FMRegressor(n_epochs=1).fit(np.array([["a", "b"]] * 200), y)


# ----------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("metric", ["rmse", "mae", "log_loss", "auc"])
@pytest.mark.parametrize(("y_true", "y_pred", "weights", "match"), [
    ([1.0, np.nan], [0.5, 0.5], None, "y_true is NaN or infinite at position 1"),
    ([1.0, 0.0], [0.5, np.inf], None, "is NaN or infinite at position 1"),
    ([1.0, 0.0], [0.5], None, "lengths differ"),
    ([1.0, 0.0], [0.5, 0.5], [1.0], "lengths differ"),
    ([1.0, 0.0], [0.5, 0.5], [1.0, np.nan], "sample_weight is NaN"),
    # Found by tests/test_properties.py: np.average divided by a zero weight sum.
    ([1.0, 0.0], [0.5, 0.5], [0.0, 0.0], "non-negative with a positive sum"),
    ([1.0, 0.0], [0.5, 0.5], [2.0, -1.0], "non-negative with a positive sum"),
    ([], [], None, "no values"),
    ([[1.0, 0.0]], [[0.5, 0.5]], None, "must be 1-D"),
])
def test_metrics_refuse_what_would_give_a_wrong_figure(metric, y_true, y_pred, weights,
                                                       match):
    """Issue 15: rmse of NaN input was NaN, and misaligned arrays were scored silently."""
    import fmrec.metrics

    with pytest.raises(ValueError, match=match):
        getattr(fmrec.metrics, metric)(y_true, y_pred, sample_weight=weights)


def test_classification_metrics_refuse_labels_they_do_not_define():
    """Found by tests/test_properties.py: auc of one class was NaN (with a warning), and
    log_loss of a label 2 was a number, negative."""
    from fmrec.metrics import auc, log_loss

    with pytest.raises(ValueError, match="AUC needs both labels in y_true, got only 1"):
        auc([1, 1], [0.2, 0.8])
    for metric in (auc, log_loss):
        with pytest.raises(ValueError, match="y_true must hold labels 0 and 1, got 2"):
            metric([0, 2], [0.2, 0.8])
    with pytest.raises(ValueError, match="both labels with a positive weight"):
        auc([0, 1], [0.0, 0.0], sample_weight=[0.0, 1.0])  # was NaN (the deep property run)
    assert auc([0, 1, 1], [0.1, 0.9, 0.2]) == pytest.approx(1.0)


def test_metrics_of_good_input():
    from fmrec.metrics import log_loss, mae, rmse

    assert rmse([1, 2], [1, 4]) == pytest.approx(np.sqrt(2))
    assert mae([1, 2], [1, 4], sample_weight=[1, 3]) == pytest.approx(1.5)
    assert log_loss([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2))


def test_targets_beyond_float32_are_named_not_reported_as_divergence():
    """Issue 15: y = 1e39 in a float32 model used to end as "diverged ... smaller
    learning_rate", even for ALS, which has none."""
    X, y = np.eye(3), np.array([1.0, 2.0, 1e39])
    for solver in ("als", "sgd"):
        with pytest.raises(ValueError, match=r"y holds 1e\+39 at row 2, beyond what float32"):
            FMRegressor(solver=solver, n_epochs=2).fit(X, y)
    FMRegressor(dtype="float64", n_epochs=2).fit(X, y)  # float64 holds it
