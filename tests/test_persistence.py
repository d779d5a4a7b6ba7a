"""save / load_model: exact round trips, and clear errors for anything that is not our file."""

import json
import zipfile

import numpy as np
import pytest

from fmrec import FMClassifier, FMRegressor, load_model
from fmrec.datasets import make_fm_classification, make_fm_regression


@pytest.fixture(scope="module")
def regression():
    X, y, _ = make_fm_regression(n_samples=600, n_features=25, random_state=0)
    return X, y


@pytest.mark.parametrize("solver", ["als", "sgd"])
def test_regressor_round_trip(tmp_path, regression, solver):
    X, y = regression
    model = FMRegressor(n_factors=3, solver=solver, n_epochs=3, reg_factors=0.02,
                        random_state=0).fit(X, y, eval_set=(X, y))
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = load_model(path)
    assert type(loaded) is FMRegressor
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.history_ == model.history_
    assert loaded.y_range_ == model.y_range_ and loaded.n_epochs_ == 3


def test_sgd_training_continues_identically_after_reload(tmp_path, regression):
    X, y = regression
    kw = {"solver": "sgd", "n_epochs": 2, "random_state": 0, "warm_start": True}
    model = FMRegressor(**kw).fit(X, y)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    model.fit(X, y)
    loaded.fit(X, y)  # same seed, same AdaGrad accumulators: same result
    np.testing.assert_array_equal(model.V_, loaded.V_)


def test_classifier_round_trip_with_string_labels(tmp_path):
    X, y, _ = make_fm_classification(n_samples=500, n_features=20, random_state=0)
    clf = FMClassifier(n_epochs=3, random_state=0).fit(X, np.where(y == 1, "yes", "no"))
    clf.save(tmp_path / "clf.npz")
    loaded = load_model(tmp_path / "clf.npz")
    assert loaded.classes_.tolist() == ["no", "yes"]
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_feature_names_survive(tmp_path):
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame({"a": [0.0, 1.0, 1.0, 0.0] * 20, "b": [1.0, 0.0, 1.0, 1.0] * 20})
    model = FMRegressor(n_epochs=2, random_state=0).fit(X, np.arange(80.0))
    model.save(tmp_path / "m.npz")
    assert load_model(tmp_path / "m.npz").feature_names_in_.tolist() == ["a", "b"]


def test_save_before_fit_fails(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        FMRegressor().save(tmp_path / "m.npz")


def test_truncated_file(tmp_path, regression):
    FMRegressor(n_epochs=1).fit(*regression).save(tmp_path / "m.npz")
    raw = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a readable fmrec model"):
        load_model(tmp_path / "cut.npz")


def test_foreign_npz(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.arange(3))
    with pytest.raises(ValueError, match="no metadata"):
        load_model(tmp_path / "other.npz")


def test_text_file(tmp_path):
    (tmp_path / "notes.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a readable fmrec model"):
        load_model(tmp_path / "notes.npz")


def test_pickled_object_arrays_are_never_loaded(tmp_path):
    meta = np.array(json.dumps({"format": "fmrec-model", "format_version": 1,
                                "class": "FMRegressor", "params": {}, "fitted": {}}))
    np.savez(tmp_path / "evil.npz", metadata=meta, w=np.array([object()], dtype=object),
             V=np.zeros((1, 1)))
    with pytest.raises(ValueError, match="not a readable fmrec model|pickle"):
        load_model(tmp_path / "evil.npz")


def test_inconsistent_shapes_and_versions(tmp_path, regression):
    model = FMRegressor(n_epochs=1).fit(*regression)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as npz:
        arrays = dict(npz)
    meta = json.loads(str(arrays["metadata"]))

    def write(name, **changes):
        out = {**arrays, **changes}
        np.savez(tmp_path / name, **out)
        return tmp_path / name

    with pytest.raises(ValueError, match="inconsistent"):
        load_model(write("short.npz", w=arrays["w"][:-1]))
    with pytest.raises(ValueError, match="NaN"):
        load_model(write("nan.npz", V=np.full_like(arrays["V"], np.nan)))
    newer = dict(meta, format_version=99)
    with pytest.raises(ValueError, match="upgrade fmrec"):
        load_model(write("new.npz", metadata=np.array(json.dumps(newer))))
    alien = dict(meta, **{"class": "os.system"})
    with pytest.raises(ValueError, match="unknown model class"):
        load_model(write("alien.npz", metadata=np.array(json.dumps(alien))))
    with pytest.raises(ValueError, match="damaged"):
        load_model(write("garbled.npz", metadata=np.array("{not json")))
    with zipfile.ZipFile(tmp_path / "m.npz") as zf:
        assert "metadata.npy" in zf.namelist()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "absent.npz")


def test_format_version_marks_mcmc_samples(tmp_path):
    X = np.eye(6)
    y = np.arange(6.0)
    plain = FMRegressor(n_factors=2, n_epochs=2, random_state=0).fit(X, y)
    bayes = FMRegressor(n_factors=2, solver="mcmc", n_epochs=4, n_burn_in=1,
                        random_state=0).fit(X, y)
    versions = []
    for model in (plain, bayes):
        path = tmp_path / "m.npz"
        model.save(path)
        with np.load(path, allow_pickle=False) as npz:
            versions.append(json.loads(str(npz["metadata"]))["format_version"])
    # Files an older fmrec can read stay at version 1; samples need a reader that knows them.
    assert versions == [1, 2]
