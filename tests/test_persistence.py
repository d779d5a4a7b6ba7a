"""save / load_model: exact round trips, and clear errors for anything that is not our file."""

import ast
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError

import fmrec
from fmrec import FMClassifier, FMRegressor, Recommender, load_model
from fmrec.datasets import make_fm_classification, make_fm_regression, make_recsys


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


# ---------------------------------------------------------------------------- every kind
def fitted_state(model) -> dict:
    """Every fitted attribute and the private training state a file must keep."""
    names = ("w0_", "w_", "V_", "n_features_in_", "n_epochs_", "history_", "y_range_",
             "best_epoch_", "classes_", "feature_names_in_", "_accumulators", "samples_w0_",
             "samples_w_", "samples_V_", "samples_alpha_", "_mcmc_groups", "_mcmc_hyper")
    return {name: model.__dict__[name] for name in names if name in model.__dict__}


def assert_same_state(a, b) -> None:
    sa, sb = fitted_state(a), fitted_state(b)
    assert sa.keys() == sb.keys()
    for name, value in sa.items():
        other = sb[name]
        if isinstance(value, dict):
            assert value.keys() == other.keys(), name
            for key in value:
                np.testing.assert_array_equal(value[key], other[key], err_msg=f"{name}[{key}]")
        elif isinstance(value, tuple) and name == "_accumulators":
            for x, y in zip(value, other, strict=True):
                np.testing.assert_array_equal(x, y, err_msg=name)
                assert x.dtype == y.dtype
        else:
            np.testing.assert_array_equal(value, other, err_msg=name)
            assert np.asarray(value).dtype == np.asarray(other).dtype, name


def reload(model, tmp_path, name="m.npz"):
    model.save(tmp_path / name)
    return load_model(tmp_path / name)


ESTIMATORS = [(cls, solver) for cls in (FMRegressor, FMClassifier)
              for solver in ("als", "sgd", "mcmc")]


def estimator(cls, solver, **kw):
    extra = {"n_burn_in": 2, "groups": np.arange(25) % 3} if solver == "mcmc" else {}
    return cls(n_factors=3, solver=solver, n_epochs=5, random_state=0, warm_start=True,
               **extra, **kw)


def targets(cls, y):
    return np.where(y > np.median(y), "up", "down") if cls is FMClassifier else y


@pytest.mark.parametrize("cls,solver", ESTIMATORS)
def test_every_estimator_round_trips_and_continues_identically(tmp_path, regression, cls,
                                                               solver):
    X, y = regression
    y = targets(cls, y)
    model = estimator(cls, solver).fit(X, y)
    loaded = reload(model, tmp_path)
    assert type(loaded) is cls
    assert loaded.get_params().keys() == model.get_params().keys()
    assert_same_state(loaded, model)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # warm start: the AdaGrad sums and the MCMC chain make the next fit the same fit.
    model.fit(X, y)
    loaded.fit(X, y)
    assert_same_state(loaded, model)
    assert len(loaded.history_["train_loss"]) == 10


def test_float64_model_round_trips(tmp_path, regression):
    model = FMRegressor(n_factors=2, solver="sgd", n_epochs=2, dtype="float64",
                        random_state=0).fit(*regression)
    loaded = reload(model, tmp_path)
    assert loaded.V_.dtype == np.float64
    assert_same_state(loaded, model)


def test_ranker_round_trip(tmp_path):
    from fmrec import FMRanker

    U = sp.hstack([sp.eye(8), sp.csr_matrix((8, 6))]).tocsr()
    I = sp.hstack([sp.csr_matrix((6, 8)), sp.eye(6)]).tocsr()  # noqa: E741
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 8, 40), rng.integers(0, 6, 40)
    model = FMRanker(n_factors=3, n_epochs=3, random_state=0).fit(U, I, users, items)
    loaded = reload(model, tmp_path)
    assert type(loaded) is FMRanker and loaded.get_params() == model.get_params()
    assert_same_state(loaded, model)
    np.testing.assert_array_equal(loaded.score_matrix(U, I), model.score_matrix(U, I))
    with pytest.raises(NotFittedError):
        FMRanker().save(tmp_path / "unfitted.npz")
    # The AdaGrad sums travel with the file: warm starts continue alike.
    assert loaded._accumulators is not None
    for m in (model, loaded):
        m.set_params(warm_start=True, n_epochs=2, random_state=1).fit(U, I, users, items)
    np.testing.assert_array_equal(loaded.V_, model.V_)
    assert loaded.history_["train_loss"] == model.history_["train_loss"]


@pytest.fixture(scope="module")
def recsys():
    data = make_recsys(n_users=40, n_items=25, n_interactions=600, random_state=0)
    return data.interactions, data.users, data.items


def recommenders(recsys):
    from fmrec import FMRanker

    ratings, users, items = recsys
    return {
        "ratings": (Recommender(target="rating", user_features=users, item_features=items,
                                context=["device"], implicit=True, random_state=0,
                                model=FMRegressor(n_factors=3, n_epochs=3)), ratings),
        "implicit": (Recommender(model=FMRanker(n_factors=3, n_epochs=3), item_features=items,
                                 random_state=0), ratings[["user_id", "item_id"]]),
        "mcmc": (Recommender(target="rating", random_state=0, model=FMRegressor(
            n_factors=3, solver="mcmc", n_epochs=6, n_burn_in=2)), ratings),
    }


@pytest.mark.parametrize("kind", ["ratings", "implicit", "mcmc"])
def test_recommender_round_trip(tmp_path, recsys, kind):
    rec, df = recommenders(recsys)[kind]
    rec.fit(df)
    loaded = reload(rec, tmp_path)
    assert type(loaded) is Recommender and type(loaded.model_) is type(rec.model_)
    assert_same_state(loaded.model_, rec.model_)
    np.testing.assert_array_equal(loaded.feature_names_, rec.feature_names_)
    assert (loaded.seen_ != rec.seen_).nnz == 0
    ctx = {"device": df["device"].iloc[0]} if kind == "ratings" else None
    pd.testing.assert_frame_equal(loaded.recommend([1, 2, 3], n=4, context=ctx),
                                  rec.recommend([1, 2, 3], n=4, context=ctx))
    np.testing.assert_array_equal(loaded.predict(df.head(20)), rec.predict(df.head(20)))
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:
        meta = json.loads(str(npz["metadata"]))
    assert meta["format_version"] == (2 if kind == "mcmc" else 1)
    assert meta["model"]["class"] == type(rec.model_).__name__


# ---------------------------------------------------------------------------- the format
def test_persistence_imports_no_model():
    """persistence knows the file format and the registry; models import it, never back."""
    tree = ast.parse(Path(fmrec.persistence.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            assert node in tree.body, f"import inside a function at line {node.lineno}"
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""])
            imported.update(names)
    fmrec_modules = {name for name in imported if name.split(".")[0] == "fmrec"}
    assert fmrec_modules <= {"fmrec._version"}, fmrec_modules


def test_registry_holds_every_model(tmp_path):
    from fmrec import FMRanker
    from fmrec.persistence import register, registered

    classes = registered()  # full as soon as fmrec is imported
    for cls in (FMRegressor, FMClassifier, FMRanker, Recommender):
        assert classes[cls.__name__] is cls
    assert register(FMRegressor) is FMRegressor  # registering again is harmless
    with pytest.raises(TypeError, match="_to_record"):
        register(type("Plain", (), {}))
    twin = type("FMRegressor", (FMRegressor,), {})
    with pytest.raises(ValueError, match="two model classes"):
        register(twin)
    with pytest.raises(TypeError, match="not a registered model class"):
        fmrec.persistence.save_model(type("Other", (), {})(), tmp_path / "never.npz")
    assert not (tmp_path / "never.npz").exists()


@pytest.fixture()
def saved(tmp_path, regression):
    """A saved MCMC regressor and SGD classifier, their arrays, and a writer of variants."""
    X, y = regression
    files = {}
    for name, model in (("mcmc", estimator(FMRegressor, "mcmc").fit(X, y)),
                        ("sgd", estimator(FMClassifier, "sgd").fit(X, targets(FMClassifier,
                                                                              y)))):
        model.save(tmp_path / f"{name}.npz")
        with np.load(tmp_path / f"{name}.npz", allow_pickle=False) as npz:
            arrays = dict(npz)
        files[name] = arrays

    def variant(name, meta_change=None, drop=(), **arrays):
        out = {k: v for k, v in files[name].items() if k not in drop}
        out.update(arrays)
        if meta_change is not None:
            meta = json.loads(str(files[name]["metadata"]))
            meta_change(meta)
            out["metadata"] = np.array(json.dumps(meta))
        path = tmp_path / "variant.npz"
        np.savez(path, **out)
        return path

    return files, variant


def _set(key, value, where=None):
    def change(meta):
        (meta[where] if where else meta)[key] = value
    return change


def _drop(key, where=None):
    def change(meta):
        del (meta[where] if where else meta)[key]
    return change


@pytest.mark.parametrize("change,message", [
    (_set("format_version", "2"), "format_version must be an integer, got '2'"),
    (_set("format_version", None), "format_version must be an integer, got None"),
    (_set("format_version", True), "format_version must be an integer"),
    (_set("format_version", 0), "format_version must be at least 1"),
    (_set("fmrec_version", 1), "fmrec_version must be a string, got 1"),
    (_set("class", ["FMRegressor"]), "unknown model class"),
    (_set("class", "_BaseFM"), "unknown model class"),
    (_set("params", ["n_factors", 3]), "params must be a JSON object"),
    (_set("params", {"n_factors": 3, "exec": "rm"}), r"params has names .* \['exec'\]"),
    (_set("n_factors", "three", "params"), "n_factors"),
    (_drop("fitted"), "fitted must be a JSON object"),
    (_drop("n_epochs", "fitted"), "fitted lacks 'n_epochs'"),
    (_set("n_features_in", -25, "fitted"), "fitted.n_features_in must be a non-negative"),
    (_set("n_features_in", "25", "fitted"), "fitted.n_features_in must be a non-negative"),
    (_set("n_features_in", 25.0, "fitted"), "fitted.n_features_in must be a non-negative"),
    (_set("w0", "0.5", "fitted"), "fitted.w0 must be a number"),
    (_set("y_range", [1.0], "fitted"), "fitted.y_range must hold two numbers"),
    (_set("y_range", 3, "fitted"), "fitted.y_range must be a list"),
    (_set("best_epoch", -1, "fitted"), "fitted.best_epoch"),
])
def test_metadata_is_checked_against_its_schema(saved, change, message):
    _, variant = saved
    with pytest.raises(ValueError, match=message):
        load_model(variant("mcmc", change))


@pytest.mark.parametrize("name,arrays,message", [
    ("mcmc", {"V": np.zeros((24, 3), np.float32)}, "inconsistent shape of the array 'V'"),
    ("mcmc", {"V": np.zeros((25, 3), np.float64)}, "inconsistent parameter dtypes"),
    ("mcmc", {"w": np.zeros(25, np.int32)}, "the array 'w' has dtype int32"),
    ("mcmc", {"mcmc.samples_V": np.zeros((2, 25, 3), np.float32)},
     "inconsistent shape of the array 'mcmc.samples_V'"),
    ("mcmc", {"mcmc.samples_alpha": np.zeros(1)},
     "inconsistent shape of the array 'mcmc.samples_alpha'"),
    ("mcmc", {"mcmc.hyper.mu_V": np.zeros((1, 3))},
     "inconsistent shape of the array 'mcmc.hyper.mu_V'"),
    ("mcmc", {"mcmc.groups": np.full(25, 7, np.int32)}, r"MCMC groups must lie in \[0, 3\)"),
    ("mcmc", {"param.groups": np.arange(3)}, "inconsistent shape of the array 'param.groups'"),
    ("mcmc", {"history.train_loss": np.zeros((2, 2))},
     "inconsistent shape of the array 'history.train_loss'"),
    ("sgd", {"acc_V": np.zeros((25, 2), np.float32)}, "inconsistent shape of the array 'acc_V'"),
    ("sgd", {"acc_w": np.zeros(25)}, "AdaGrad sums must be of the parameters' dtype"),
    ("sgd", {"classes": np.array(["a", "b", "c"])},
     "inconsistent shape of the array 'classes'"),
    ("sgd", {"w": np.zeros(25, [("a", np.float32)])}, "'w' has dtype"),
])
def test_arrays_are_checked(saved, name, arrays, message):
    _, variant = saved
    with pytest.raises(ValueError, match=message):
        load_model(variant(name, **arrays))


@pytest.mark.parametrize("name,drop,message", [
    ("mcmc", ("mcmc.samples_w",), "the array 'mcmc.samples_w' is missing"),
    ("mcmc", ("mcmc.hyper.alpha",), "the array 'mcmc.hyper.alpha' is missing"),
    ("sgd", ("acc_w0",), "the array 'acc_w0' is missing"),
    ("sgd", ("classes",), "the array 'classes' is missing"),
    ("sgd", ("V",), "the array 'V' is missing"),
    ("sgd", ("history.train_loss",), "the array 'history.train_loss' is missing"),
])
def test_missing_arrays_are_named(saved, name, drop, message):
    _, variant = saved
    with pytest.raises(ValueError, match=message):
        load_model(variant(name, drop=drop))


def test_foreign_files_are_refused(tmp_path):
    np.save(tmp_path / "one.npy", np.arange(3))
    with pytest.raises(ValueError, match="not a readable fmrec model.*npy"):
        load_model(tmp_path / "one.npy")
    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="no metadata"):
        load_model(tmp_path / "plain.zip")
    np.savez(tmp_path / "numbers.npz", metadata=np.arange(3))
    with pytest.raises(ValueError, match="metadata record is not a string"):
        load_model(tmp_path / "numbers.npz")
    np.savez(tmp_path / "list.npz", metadata=np.array("[1, 2]"))
    with pytest.raises(ValueError, match="not an fmrec model file"):
        load_model(tmp_path / "list.npz")
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a readable fmrec model"):
        load_model(tmp_path / "pickle.npz")


def test_damaged_recommender_files(tmp_path, recsys):
    rec, df = recommenders(recsys)["ratings"]
    rec.fit(df)
    rec.save(tmp_path / "rec.npz")
    with np.load(tmp_path / "rec.npz", allow_pickle=False) as npz:
        arrays = dict(npz)
    meta = json.loads(str(arrays["metadata"]))

    def load(meta_change=None, **changes):
        out = dict(arrays, **changes)
        if meta_change is not None:
            changed = json.loads(json.dumps(meta))
            meta_change(changed)
            out["metadata"] = np.array(json.dumps(changed))
        np.savez(tmp_path / "bad.npz", **out)
        return load_model(tmp_path / "bad.npz")

    def load_without(key):
        np.savez(tmp_path / "bad.npz", **{k: v for k, v in arrays.items() if k != key})
        return load_model(tmp_path / "bad.npz")

    shape = arrays["seen.shape"]
    with pytest.raises(ValueError, match="inconsistent shape of the seen matrix"):
        load(**{"seen.shape": shape + np.array([0, 1])})
    with pytest.raises(ValueError, match="indices must be < 25"):
        load(**{"seen.indices": np.full_like(arrays["seen.indices"], shape[1] + 3)})
    with pytest.raises(ValueError, match="inconsistent user side features"):
        load(**{"users.side.shape": arrays["users.side.shape"] + np.array([1, 0]),
                "users.side.indptr": np.append(arrays["users.side.indptr"],
                                               arrays["users.side.indptr"][-1])})
    with pytest.raises(ValueError, match="inconsistent item side features: a matrix of shape "
                                         r"None where the encoders give \(25, \d+\)"):
        load_without("items.side.indptr")
    with pytest.raises(ValueError, match="an encoder's array 'vocab_0' is missing"):
        load_without("users.ids.vocab_0")
    with pytest.raises(ValueError, match="describe .* columns but the model has"):
        load(**{"model.w": arrays["model.w"][:-1], "model.V": arrays["model.V"][:-1]},
             meta_change=lambda m: m["model"]["fitted"].update(
                 n_features_in=m["model"]["fitted"]["n_features_in"] - 1))
    with pytest.raises(ValueError, match=r"unknown model class 'Recommender' \(expected"):
        load(meta_change=lambda m: m["model"].update({"class": "Recommender"}))
    with pytest.raises(ValueError, match="model.*format_version must be an integer|format_v"):
        load(meta_change=lambda m: m["model"].update(format_version="1"))
    with pytest.raises(ValueError, match=r"must not hold \['model'\]"):
        load(meta_change=lambda m: m["params"].update(model="FMRegressor"))
    with pytest.raises(ValueError, match="negatives"):
        load(meta_change=lambda m: m["params"].update(negatives=0))
    with pytest.raises(ValueError, match="format_version must be an integer"):
        load(meta_change=lambda m: m.update(format_version=None))


def _paths(meta, prefix=()):
    """Every (path of keys) to a value of the nested metadata."""
    for key, value in meta.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from _paths(value, (*prefix, key))


def test_any_damage_is_a_value_error_or_harmless(tmp_path, saved, recsys):
    """Dropping any one array, or replacing any one metadata value by a value of another
    JSON type, loads or raises ValueError: never KeyError, TypeError or the like."""
    files, _ = saved
    rec, df = recommenders(recsys)["ratings"]
    rec.fit(df).save(tmp_path / "rec.npz")
    with np.load(tmp_path / "rec.npz", allow_pickle=False) as npz:
        files = {**files, "rec": dict(npz)}
    path = tmp_path / "damaged.npz"
    n_refused = 0
    for arrays in files.values():
        meta = json.loads(str(arrays["metadata"]))
        variants = [{k: v for k, v in arrays.items() if k != drop}
                    for drop in arrays if drop != "metadata"]
        for keys in _paths(meta):
            for value in (None, "x", -1, 2.5, [], {}):
                changed = json.loads(json.dumps(meta))
                target = changed
                for key in keys[:-1]:
                    target = target[key]
                target[keys[-1]] = value
                variants.append(dict(arrays, metadata=np.array(json.dumps(changed))))
        for variant in variants:
            np.savez(path, **variant)
            try:
                load_model(path)
            except ValueError:
                n_refused += 1
    assert n_refused > 100


def test_ids_ending_in_nul_are_refused_at_save_not_merged(tmp_path):
    """Issue 15: "x" and "x\\0" were two users in memory and one after save/load (NumPy's
    strings drop trailing NULs). Saving names the value instead; a NUL inside an id is kept."""
    from fmrec import FMClassifier, Recommender, load_model

    df = pd.DataFrame({"user_id": ["x", "x\0", "x", "y"], "item_id": ["a", "b", "b", "a"]})
    rec = Recommender(random_state=0, model=FMClassifier(n_epochs=2)).fit(df)
    with pytest.raises(ValueError, match=r"column 'user_id'.*'x\\x00' ends in a NUL"):
        rec.save(tmp_path / "r.npz")
    assert not (tmp_path / "r.npz").exists()
    inner = df.assign(user_id=df["user_id"].replace({"x\0": "x\0z"}))
    rec = Recommender(random_state=0, model=FMClassifier(n_epochs=2)).fit(inner)
    rec.save(tmp_path / "r.npz")
    assert list(load_model(tmp_path / "r.npz").users_) == list(rec.users_)
