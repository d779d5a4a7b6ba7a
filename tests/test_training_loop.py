"""The one epoch loop (fmrec.models._training), checked once for every model and solver.

Callbacks see the same state in the same order everywhere: the epoch's figures are already
in ``history_``, ``n_epochs_`` counts the epoch, the parameters are the epoch's; keys a
callback adds to ``logs`` join ``history_``; returning True stops. Divergence, undo on a
failed fit, warm start and verbose logging behave alike too.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

from fmrec import FMClassifier, FMRanker, FMRegressor
from fmrec.datasets import make_fm_classification, make_fm_regression
from fmrec.solvers._state import Diverged
from fmrec.solvers.als import ALSSolver
from fmrec.solvers.bpr import BPRSolver
from fmrec.solvers.mcmc import MCMCSolver
from fmrec.solvers.sgd import SGDSolver

SOLVER_CLASSES = {"als": ALSSolver, "sgd": SGDSolver, "mcmc": MCMCSolver, "bpr": BPRSolver}


class Case:
    """One model kind: how to build it and fit it with callbacks."""

    def __init__(self, name, make, data, solver):
        self.name, self.make, self.data, self.solver = name, make, data, solver

    def fit(self, model, callbacks=None):
        return model.fit(*self.data, callbacks=callbacks)

    def __repr__(self):
        return self.name


def _pointwise(cls, solver, data):
    extra = {"n_burn_in": 1} if solver == "mcmc" else {}
    return Case(f"{cls.__name__}-{solver}",
                lambda **kw: cls(n_factors=3, solver=solver, random_state=0,
                                 **{"n_epochs": 4, **extra, **kw}),
                data, solver)


def _ranker_data():
    n_users, n_items = 25, 15
    U = sp.hstack([sp.eye(n_users), sp.csr_matrix((n_users, n_items))]).tocsr()
    I = sp.hstack([sp.csr_matrix((n_items, n_users)), sp.eye(n_items)]).tocsr()  # noqa: E741
    rng = np.random.default_rng(0)
    return U, I, rng.integers(0, n_users, 150), rng.integers(0, n_items, 150)


_X, _y, _ = make_fm_regression(n_samples=300, n_features=20, random_state=0)
_Xc, _yc, _ = make_fm_classification(n_samples=300, n_features=20, random_state=0)
CASES = [
    *[_pointwise(FMRegressor, s, (_X, _y)) for s in ("als", "sgd", "mcmc")],
    *[_pointwise(FMClassifier, s, (_Xc, _yc)) for s in ("als", "sgd", "mcmc")],
    Case("FMRanker", lambda **kw: FMRanker(n_factors=3, random_state=0,
                                           **{"n_epochs": 4, **kw}),
         _ranker_data(), "bpr"),
]


@pytest.fixture(params=CASES, ids=repr)
def case(request):
    return request.param


def test_callbacks_see_the_epoch_in_history_and_the_parameters(case):
    seen = []

    def callback(est, epoch, logs):
        seen.append({
            "epoch": epoch,
            "logs": dict(logs),
            "last": {key: values[-1] for key, values in est.history_.items()},
            "lengths": {len(values) for values in est.history_.values()},
            "n_epochs_": est.n_epochs_,
            "V": est.V_.copy(),
        })

    model = case.fit(case.make(), [callback])
    assert [s["epoch"] for s in seen] == [0, 1, 2, 3]
    for i, s in enumerate(seen):
        assert s["logs"]["train_loss"] == s["last"]["train_loss"]
        assert s["last"].keys() == s["logs"].keys()
        assert s["lengths"] == {i + 1}
        assert s["n_epochs_"] == i + 1
    # the callbacks saw each epoch's own parameters, the last one those the model keeps
    assert not np.array_equal(seen[0]["V"], seen[-1]["V"])
    np.testing.assert_array_equal(seen[-1]["V"], model.V_)
    assert model.n_epochs_ == 4
    assert all(len(values) == 4 for values in model.history_.values())


def test_keys_callbacks_add_go_to_history(case):
    def callback(est, epoch, logs):
        logs["custom"] = 10.0 * epoch

    model = case.fit(case.make(), [callback])
    assert model.history_["custom"] == [0.0, 10.0, 20.0, 30.0]


def test_returning_true_stops_after_every_callback_ran(case):
    calls = []

    def stop_at_1(est, epoch, logs):
        calls.append(("stop", epoch))
        return epoch == 1

    def other(est, epoch, logs):
        calls.append(("other", epoch))

    model = case.fit(case.make(), [stop_at_1, other])
    assert calls == [("stop", 0), ("other", 0), ("stop", 1), ("other", 1)]
    assert model.n_epochs_ == 2
    assert len(model.history_["train_loss"]) == 2


def test_warm_start_continues_the_epochs_and_the_history(case):
    model = case.fit(case.make(n_epochs=2, warm_start=True))
    first = model.history_["train_loss"][:]
    epochs = []
    case.fit(model, [lambda est, epoch, logs: epochs.append(epoch)])
    assert epochs == [2, 3]
    assert model.n_epochs_ == 4
    assert model.history_["train_loss"][:2] == first
    fresh = case.fit(case.make(n_epochs=2))
    assert case.fit(fresh).n_epochs_ == 2  # without warm_start, fit starts afresh


def test_a_failed_fit_leaves_the_model_as_it_was(case):
    def boom(est, epoch, logs):
        if epoch == 1:
            raise RuntimeError("boom")

    model = case.fit(case.make(n_epochs=2))
    before = {key: (val.copy() if isinstance(val, np.ndarray) else val)
              for key, val in model.__dict__.items()}
    history = {key: list(val) for key, val in model.history_.items()}
    with pytest.raises(RuntimeError, match="boom"):
        case.fit(model, [boom])
    assert model.__dict__.keys() == before.keys()
    np.testing.assert_array_equal(model.V_, before["V_"])
    np.testing.assert_array_equal(model.w_, before["w_"])
    assert model.history_ == history
    unfitted = case.make()
    with pytest.raises(RuntimeError, match="boom"):
        case.fit(unfitted, [boom])
    assert not hasattr(unfitted, "V_")


def _snapshot(value):
    """A deep copy of an attribute, arrays and containers of arrays included."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, tuple | list):
        return type(value)(_snapshot(v) for v in value)
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    return value


def _assert_same(a, b, where=""):
    if isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, tuple | list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    else:
        assert a == b or a is b, where


def test_a_failed_warm_start_leaves_every_attribute_bit_identical(case):
    """Continuing fails in its second epoch: nothing the first one updated in place (AdaGrad
    sums, the MCMC chain's hyperparameters and samples) may remain changed."""
    model = case.fit(case.make(n_epochs=2))
    before = {key: _snapshot(val) for key, val in model.__dict__.items()}
    start = model.n_epochs_

    def boom(est, epoch, logs):
        if epoch == start + 1:
            raise RuntimeError("boom")

    model.set_params(warm_start=True)
    before["warm_start"] = True
    with pytest.raises(RuntimeError, match="boom"):
        case.fit(model, [boom])
    for key, value in before.items():
        _assert_same(value, model.__dict__[key], key)
    assert model.__dict__.keys() == before.keys()


def _diverge_at(monkeypatch, case, at: int):
    cls = SOLVER_CLASSES[case.solver]
    original = cls.epoch
    calls = []

    def epoch(self):
        calls.append(1)
        result = original(self)
        if len(calls) > at:
            self.state.V[0, 0] = np.nan  # as a kernel would leave it
            raise Diverged("injected")
        return result

    monkeypatch.setattr(cls, "epoch", epoch)


def test_divergence_after_the_first_epoch_keeps_the_last_finite_parameters(case, monkeypatch):
    _diverge_at(monkeypatch, case, 2)
    seen = []
    model = case.make()
    with pytest.warns(ConvergenceWarning, match="diverged at (epoch|sweep) 2 \\(injected\\)"):
        case.fit(model, [lambda est, epoch, logs: seen.append(est.V_.copy())])
    assert model.n_epochs_ == 2
    assert all(len(values) == 2 for values in model.history_.values())
    np.testing.assert_array_equal(model.V_, seen[-1])
    assert np.isfinite(model.V_).all()


def test_divergence_in_the_first_epoch_raises_with_a_hint(case, monkeypatch):
    _diverge_at(monkeypatch, case, 0)
    model = case.make()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        with pytest.raises(ValueError, match="diverged at (epoch|sweep) 0 .*; (try|check)"):
            case.fit(model)
    assert not hasattr(model, "V_")


def test_verbose_logs_every_epoch_with_what_callbacks_added(case, caplog):
    def callback(est, epoch, logs):
        logs["custom"] = 1.0

    with caplog.at_level("INFO", logger="fmrec"):
        case.fit(case.make(n_epochs=3, verbose=1), [callback])
    messages = [r.getMessage() for r in caplog.records if r.name == "fmrec"]
    assert [m.split()[1] for m in messages] == ["0", "1", "2"]
    assert all("train_loss=" in m and "custom=1" in m for m in messages)


@pytest.mark.parametrize("solver", ["als", "sgd"])
def test_early_stopping_state_at_callback_time(solver):
    X, y = _X, _y
    seen = []

    def callback(est, epoch, logs):
        seen.append((epoch, est.best_epoch_, est.history_["val_rmse"][-1] == logs["val_rmse"]))

    model = FMRegressor(n_factors=3, solver=solver, n_epochs=40, early_stopping_rounds=2,
                        learning_rate=0.5, random_state=0)
    model.fit(X[:200], y[:200], eval_set=(X[200:], y[200:]), callbacks=[callback])
    val = model.history_["val_rmse"]
    for epoch, best, same in seen:
        assert same
        assert best == int(np.argmin(val[:epoch + 1]))
    assert model.best_epoch_ == int(np.argmin(val))
    assert model.n_epochs_ == len(val) == len(seen)


def test_dask_rounds_run_in_the_same_loop(dask_client):
    da = pytest.importorskip("dask.array")
    from fmrec.dask import DaskFMRegressor

    dX = da.from_array(sp.csr_matrix(_X), chunks=(100, _X.shape[1]), asarray=False)
    dy = da.from_array(np.asarray(_y), chunks=100)
    seen = []

    def callback(est, epoch, logs):
        seen.append((epoch, len(est.history_["train_loss"]), est.n_epochs_))
        logs["custom"] = float(epoch)
        return epoch == 1

    model = DaskFMRegressor(n_factors=3, n_epochs=4, random_state=0, client=dask_client)
    model.fit(dX, dy, callbacks=[callback])
    assert seen == [(0, 1, 1), (1, 2, 2)]
    assert model.history_["custom"] == [0.0, 1.0]
    assert model.n_epochs_ == 2
