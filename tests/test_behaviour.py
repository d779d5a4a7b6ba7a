"""One behaviour suite run over every model kind.

``BehaviourTests`` holds the tests; each ``Test*`` subclass below supplies an adapter that knows
how to build, fit and query one kind of model (in the way implicit runs one base test class over
all of its recommenders). Every model must:

- save and load itself: same class, the same outputs bit for bit, the same ``history_``;
- leave a fitted model bit-identical when a later fit fails (bad data, a raising callback);
- call ``callback(estimator, epoch, logs)`` once per epoch, after the epoch's figures are in
  ``history_``, and stop when a callback returns True;
- continue training with ``warm_start=True``, extending ``history_``;
- reject NaN/inf, a wrong number of columns and out-of-range hyperparameters with ValueError.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import scipy.sparse as sp

import fmrec
from fmrec import FMClassifier, FMRanker, FMRegressor

N_ROWS, N_COLS = 60, 12


class CallbackError(RuntimeError):
    """Raised by a test callback; never by fmrec itself."""


# ---------------------------------------------------------------------- adapters
class FMAdapter:
    """FMRegressor / FMClassifier on a tiny random CSR design."""

    def __init__(self, cls, solver: str):
        self.cls, self.solver = cls, solver
        self.loaded_class = cls

    def make(self, **params):
        base = dict(n_factors=3, n_epochs=3, random_state=0, solver=self.solver)
        if self.solver == "mcmc":
            base["n_burn_in"] = 1
        return self.cls(**{**base, **params})

    def data(self):
        rng = np.random.default_rng(0)
        X = sp.random(N_ROWS, N_COLS, density=0.3, format="csr", random_state=1,
                      data_rvs=rng.standard_normal)
        y = X @ rng.standard_normal(N_COLS) + 0.1 * rng.standard_normal(N_ROWS)
        if issubclass(self.cls, FMClassifier):
            y = (y > np.median(y)).astype(int)
        return {"X": X, "y": y}

    def fit(self, model, data, callbacks=None):
        return model.fit(data["X"], data["y"], callbacks=callbacks)

    def output(self, model, data) -> np.ndarray:
        if issubclass(self.cls, FMClassifier):
            return np.asarray(model.predict_proba(data["X"]))
        return np.asarray(model.predict(data["X"]))

    def with_bad_value(self, data, value) -> dict:
        X = data["X"].copy()
        X.data[3] = value
        return {**data, "X": X}

    def failing_fits(self, data) -> dict:
        """Fits that must raise ValueError: name -> data."""
        return {"nan in X": self.with_bad_value(data, np.nan),
                "y too short": {**data, "y": data["y"][:-1]}}

    def output_wrong_columns(self, model, data):
        return self.output(model, {**data, "X": data["X"][:, :-1]})


class DaskAdapter(FMAdapter):
    """DaskFMRegressor / DaskFMClassifier on the same data as chunked dask arrays."""

    def __init__(self, cls, client):
        super().__init__(cls, "sgd")
        self.client = client
        # A Dask model saves itself as its in-memory class (it needs no cluster to predict).
        self.loaded_class = cls._local_class

    def make(self, **params):
        return super().make(client=self.client, **params)

    def data(self):
        data = super().data()
        return {**data, "dX": self._dask(data["X"]), "dy": da.from_array(data["y"], chunks=20)}

    @staticmethod
    def _dask(X):
        return da.from_array(sp.csr_matrix(X), chunks=(20, X.shape[1]), asarray=False)

    def fit(self, model, data, callbacks=None):
        return model.fit(data["dX"], data["dy"], callbacks=callbacks)

    def output(self, model, data) -> np.ndarray:
        if not isinstance(model, self.cls):  # the in-memory model load_model gives back
            return super().output(model, data)
        # np.asarray computes the lazy dask result
        return super().output(model, {**data, "X": data["dX"]})

    def with_bad_value(self, data, value) -> dict:
        data = super().with_bad_value(data, value)
        return {**data, "dX": self._dask(data["X"])}

    def failing_fits(self, data) -> dict:
        return {"nan in X": self.with_bad_value(data, np.nan),
                "y too short": {**data, "dy": da.from_array(data["y"][:-1], chunks=20)}}

    def output_wrong_columns(self, model, data):
        return self.output(model, {**data, "dX": self._dask(data["X"][:, :-1])})


class RankerAdapter:
    """FMRanker on one-hot users and items."""

    cls = loaded_class = FMRanker

    def make(self, **params):
        return FMRanker(**{**dict(n_factors=3, n_epochs=3, random_state=0), **params})

    def data(self):
        n_users, n_items = 15, 10
        U = sp.hstack([sp.eye(n_users), sp.csr_matrix((n_users, n_items))]).tocsr()
        I = sp.hstack([sp.csr_matrix((n_items, n_users)), sp.eye(n_items)]).tocsr()  # noqa: E741
        rng = np.random.default_rng(0)
        return {"U": U, "I": I, "users": rng.integers(0, n_users, 60),
                "items": rng.integers(0, n_items, 60)}

    def fit(self, model, data, callbacks=None):
        return model.fit(data["U"], data["I"], data["users"], data["items"],
                         callbacks=callbacks)

    def output(self, model, data) -> np.ndarray:
        return model.score_matrix(data["U"], data["I"])

    def with_bad_value(self, data, value) -> dict:
        U = data["U"].copy().astype(np.float64)
        U.data[3] = value
        return {**data, "U": U}

    def failing_fits(self, data) -> dict:
        return {"nan in U": self.with_bad_value(data, np.nan),
                "items too short": {**data, "items": data["items"][:-1]}}

    def output_wrong_columns(self, model, data):
        return model.score_matrix(data["U"][:, :-1], data["I"][:, :-1])


# ---------------------------------------------------------------------- helpers
def snapshot(model) -> dict:
    """A deep copy of the model's state (objects that cannot be copied, e.g. a Dask client,
    are kept by reference and compared by identity)."""
    out = {}
    for key, value in model.__dict__.items():
        try:
            out[key] = copy.deepcopy(value)
        except Exception:
            out[key] = value
    return out


def same(a, b) -> bool:
    """Bit-identical: arrays by dtype and values (NaN equal to NaN), containers recursively."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:
        return a is b


def assert_state_unchanged(before: dict, model, what: str = "a failed fit") -> None:
    after = model.__dict__
    assert before.keys() == after.keys(), f"{what} changed the attributes " \
        f"{sorted(before.keys() ^ after.keys())}"
    changed = [key for key in before if not same(before[key], after[key])]
    assert not changed, f"{what} changed {changed}"


# ---------------------------------------------------------------------- the suite
class BehaviourTests:
    """Every model kind runs these; subclasses provide the ``adapter`` fixture."""

    @pytest.fixture
    def adapter(self):
        raise NotImplementedError

    @pytest.fixture
    def data(self, adapter):
        return adapter.data()

    @pytest.fixture
    def fitted(self, adapter, data):
        return adapter.fit(adapter.make(), data)

    # -------------------------------------------------------------- save / load
    def test_save_load_round_trip(self, adapter, data, fitted, tmp_path):
        path = tmp_path / "model.npz"
        fitted.save(path)
        loaded = fmrec.load_model(path)
        assert type(loaded) is adapter.loaded_class
        expected, got = adapter.output(fitted, data), adapter.output(loaded, data)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
        assert same(loaded.history_, fitted.history_)
        assert loaded.n_epochs_ == fitted.n_epochs_

    # -------------------------------------------------------------- undo on failure
    def test_failed_fit_leaves_model_unchanged(self, adapter, data, fitted):
        for name, bad in adapter.failing_fits(data).items():
            before = snapshot(fitted)
            with pytest.raises(ValueError):
                adapter.fit(fitted, bad)
            assert_state_unchanged(before, fitted, name)

    def test_raising_callback_leaves_model_unchanged(self, adapter, data, fitted):
        def boom(estimator, epoch, logs):
            if epoch == 1:
                raise CallbackError("stop here")

        before = snapshot(fitted)
        w, V = fitted.w_.copy(), fitted.V_.copy()
        with pytest.raises(CallbackError):
            adapter.fit(fitted, data, callbacks=[boom])
        assert_state_unchanged(before, fitted)
        assert same(fitted.w_, w) and same(fitted.V_, V)

    def test_raising_callback_leaves_warm_model_unchanged(self, adapter, data, fitted):
        fitted.set_params(warm_start=True)

        def boom(estimator, epoch, logs):
            raise CallbackError("stop here")

        before = snapshot(fitted)
        with pytest.raises(CallbackError):
            adapter.fit(fitted, data, callbacks=[boom])
        assert_state_unchanged(before, fitted)

    # -------------------------------------------------------------- callbacks / history
    def test_callbacks_see_the_epoch_in_history(self, adapter, data):
        seen = []

        def record(estimator, epoch, logs):
            assert set(logs) <= set(estimator.history_), (logs.keys(), estimator.history_)
            seen.append({
                "epoch": epoch,
                "n_history": len(estimator.history_["train_loss"]),
                "mismatch": [key for key in logs
                             if not same(estimator.history_[key][-1], logs[key])],
                "estimator": estimator,
            })

        model = adapter.make(n_epochs=4)
        adapter.fit(model, data, callbacks=[record])
        assert [s["epoch"] for s in seen] == [0, 1, 2, 3]
        assert [s["n_history"] for s in seen] == [1, 2, 3, 4]
        assert all(not s["mismatch"] for s in seen), [s["mismatch"] for s in seen]
        assert all(s["estimator"] is model for s in seen)
        assert model.n_epochs_ == 4
        assert len(model.history_["train_loss"]) == 4

    def test_callback_returning_true_stops(self, adapter, data):
        calls = []

        def stop_at_one(estimator, epoch, logs):
            calls.append(epoch)
            return epoch == 1

        model = adapter.make(n_epochs=5)
        adapter.fit(model, data, callbacks=[stop_at_one])
        assert calls == [0, 1]
        assert model.n_epochs_ == 2
        assert all(len(values) == 2 for values in model.history_.values()), model.history_

    def test_every_callback_is_called_each_epoch(self, adapter, data):
        calls = {"a": [], "b": []}
        model = adapter.make(n_epochs=3)
        adapter.fit(model, data, callbacks=[lambda e, t, logs: calls["a"].append(t),
                                            lambda e, t, logs: calls["b"].append(t)])
        assert calls == {"a": [0, 1, 2], "b": [0, 1, 2]}

    # -------------------------------------------------------------- warm start
    def test_warm_start_continues(self, adapter, data):
        model = adapter.fit(adapter.make(n_epochs=3), data)
        first = copy.deepcopy(model.history_)
        model.set_params(warm_start=True, n_epochs=2)
        adapter.fit(model, data)
        assert len(model.history_["train_loss"]) == 5
        for key, values in first.items():
            assert same(model.history_[key][:3], values), key
        fresh = adapter.fit(adapter.make(n_epochs=2), data)
        assert not np.array_equal(adapter.output(model, data), adapter.output(fresh, data))

    # -------------------------------------------------------------- bad input
    def test_nan_in_input_is_rejected(self, adapter, data):
        with pytest.raises(ValueError, match="NaN"):
            adapter.fit(adapter.make(), adapter.with_bad_value(data, np.nan))

    def test_inf_in_input_is_rejected(self, adapter, data):
        with pytest.raises(ValueError, match="(?i)inf"):
            adapter.fit(adapter.make(), adapter.with_bad_value(data, np.inf))

    def test_wrong_number_of_columns_at_prediction(self, adapter, data, fitted):
        with pytest.raises(ValueError, match="columns|features"):
            adapter.output_wrong_columns(fitted, data)

    @pytest.mark.parametrize("name, value", [("n_factors", 0), ("n_epochs", 0),
                                             ("learning_rate", -0.1), ("reg_factors", -1.0),
                                             ("init_std", -1.0), ("dtype", "float16")])
    def test_hyperparameter_out_of_range(self, adapter, data, name, value):
        with pytest.raises(ValueError, match=name):
            adapter.fit(adapter.make(**{name: value}), data)


# ---------------------------------------------------------------------- the model kinds
@pytest.mark.parametrize("solver", ["als", "sgd", "mcmc"])
class TestFMRegressor(BehaviourTests):
    @pytest.fixture
    def adapter(self, solver):
        return FMAdapter(FMRegressor, solver)


@pytest.mark.parametrize("solver", ["als", "sgd", "mcmc"])
class TestFMClassifier(BehaviourTests):
    @pytest.fixture
    def adapter(self, solver):
        return FMAdapter(FMClassifier, solver)


class TestFMRanker(BehaviourTests):
    @pytest.fixture
    def adapter(self):
        return RankerAdapter()


try:
    import dask.array as da

    from fmrec.dask import DaskFMClassifier, DaskFMRegressor
except ImportError:  # the Dask extra is not installed: the two classes below skip
    da = DaskFMClassifier = DaskFMRegressor = None


class TestDaskFMRegressor(BehaviourTests):
    @pytest.fixture
    def adapter(self, dask_client):
        return DaskAdapter(DaskFMRegressor, dask_client)


class TestDaskFMClassifier(BehaviourTests):
    @pytest.fixture
    def adapter(self, dask_client):
        return DaskAdapter(DaskFMClassifier, dask_client)
