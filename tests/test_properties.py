"""Property-based tests at the public entry points (issue 15).

Hypothesis generates interaction frames (ids of every type, targets with NaN, inf and
huge values), side tables (strings, numbers, lists, dicts, missing values), arrays for the
estimators and the metrics, damaged model files and command lines. Each test asserts one of:

- a documented exception (``ValueError`` or ``TypeError``; ``SystemExit(2)`` or exit code 2
  with one ``fmrec: error:`` line for the CLI) whose message is a sentence, not an internal
  error; or
- a valid result: every prediction and score finite;

and, for a call that mutates a fitted object and fails, that the object is exactly as it
was. The number of examples is bounded by the Hypothesis profile: ``ci`` (the default,
derandomized so CI sees the same cases each run) or ``deep`` for a long local search
(``FMREC_HYPOTHESIS_PROFILE=deep``).
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from fmrec import FeatureEncoder, FMClassifier, FMRanker, FMRegressor, Recommender, load_model
from fmrec.cli import main
from fmrec.metrics import auc, log_loss, mae, rmse
from fmrec.persistence import to_record

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture])
settings.register_profile(
    "deep", max_examples=400, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture])
PROFILE = os.environ.get("FMREC_HYPOTHESIS_PROFILE", "ci")
EXPECTED = (ValueError, TypeError)


def documented(exc: BaseException) -> None:
    """A documented exception type whose message says something (not an internal repr)."""
    event(f"refused: {type(exc).__name__}")
    assert isinstance(exc, EXPECTED), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert len(text) >= 15 and "Traceback" not in text, repr(text)


def finite(values) -> None:
    event("a valid result")
    values = np.asarray(values, dtype=np.float64)
    assert np.isfinite(values).all(), values


def state(obj) -> tuple[dict, str]:
    """Everything a model file would hold: compared before and after a failed call."""
    arrays, meta = to_record(obj)
    return {k: np.array(v, copy=True) for k, v in arrays.items()}, json.dumps(meta,
                                                                                sort_keys=True)


def assert_same_state(before, after) -> None:
    arrays_a, meta_a = before
    arrays_b, meta_b = after
    assert meta_a == meta_b
    assert arrays_a.keys() == arrays_b.keys()
    for key in arrays_a:
        a, b = arrays_a[key], arrays_b[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        same = np.array_equal(a, b, equal_nan=True) if a.dtype.kind == "f" else \
            np.array_equal(a, b)
        assert same, key


# ---------------------------------------------------------------------------- strategies
def mostly(valid: st.SearchStrategy, odd: st.SearchStrategy, odds: int = 3
           ) -> st.SearchStrategy:
    """``valid`` about ``odds`` times to one ``odd``: enough valid input to test the results,
    enough bad input to test the errors."""
    return st.one_of(*[valid] * odds, odd)


def id_values() -> st.SearchStrategy:
    return st.one_of(
        st.integers(-5, 40),
        st.integers(-(2**63), 2**64 + 5),  # past int64, past uint64
        st.text(max_size=4),  # "", NUL, any unicode
        st.sampled_from(["a", "b", "c", "x\0", " a", "1"]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.none(),
    )


@st.composite
def id_columns(draw, n: int) -> list | np.ndarray:
    """A column of ids: one type (the common case, sometimes a NumPy dtype) or mixed."""
    kind = draw(st.sampled_from(["small ints"] * 3 + ["uint64", "strings", "mixed"]))
    if kind == "small ints":
        return draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
    if kind == "uint64":
        base = draw(st.sampled_from([0, 2**63, 2**64 - 20]))
        return np.array([base + v for v in draw(st.lists(st.integers(0, 12), min_size=n,
                                                         max_size=n))], dtype=np.uint64)
    if kind == "strings":
        return draw(st.lists(st.sampled_from(["u1", "u2", "u3", "x\0", "", "é"]),
                             min_size=n, max_size=n))
    return draw(st.lists(id_values(), min_size=n, max_size=n))


def targets(n: int) -> st.SearchStrategy:
    return mostly(
        st.lists(st.integers(1, 5).map(float), min_size=n, max_size=n),
        st.one_of(
            st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=n, max_size=n),
            st.lists(st.one_of(st.integers(1, 5), st.text(max_size=2), st.none()), min_size=n,
                     max_size=n)))


@st.composite
def interaction_frames(draw, with_target: bool):
    n = draw(st.integers(1, 25))
    frame = pd.DataFrame({"user_id": draw(id_columns(n)), "item_id": draw(id_columns(n))})
    if with_target:
        frame["rating"] = draw(targets(n))
    if draw(st.booleans()):
        frame = frame.iloc[::-1]  # an index that is not 0..n-1
    return frame


def side_cells(n: int) -> st.SearchStrategy:
    return st.one_of(
        st.lists(st.sampled_from(["red", "blue", None, "green"]), min_size=n, max_size=n),
        st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=n,
                 max_size=n),
        st.lists(st.lists(st.sampled_from(["a", "b", "c", ""]), max_size=3), min_size=n,
                 max_size=n),
        st.lists(st.one_of(st.integers(0, 3), st.text(max_size=2), st.none(),
                           st.dictionaries(st.text(max_size=1), st.integers(), max_size=1),
                           st.lists(st.integers(), max_size=2)), min_size=n, max_size=n),
    )


@st.composite
def side_tables(draw, ids):
    ids = pd.unique(pd.Series(ids, dtype=object).dropna())
    ids = list(ids[:8])
    if draw(st.booleans()) or not ids:
        return None
    n = len(ids)
    table = {"item_id": ids}
    for name in draw(st.lists(st.sampled_from(["colour", "price", "tags", "odd"]),
                              min_size=1, max_size=2, unique=True)):
        table[name] = draw(side_cells(n))
    return pd.DataFrame(table)


def quick_model(target):
    if target is None:
        return FMRanker(n_factors=4, n_epochs=2, random_state=0)
    return FMRegressor(n_factors=4, n_epochs=2, random_state=0)


# ---------------------------------------------------------------------------- Recommender
@settings(settings.get_profile(PROFILE))
@given(data=st.data(), implicit_feedback=st.booleans())
def test_recommender_fit_is_an_error_or_finite(data, implicit_feedback):
    frame = data.draw(interaction_frames(with_target=not implicit_feedback), label="frame")
    items = data.draw(side_tables(frame["item_id"].tolist()), label="items")
    target = None if implicit_feedback else "rating"
    rec = Recommender(target=target, model=quick_model(target), item_features=items,
                      random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rec.fit(frame)
        except Exception as exc:  # noqa: BLE001 - the property is about which exception
            documented(exc)
            assert not hasattr(rec, "model_")
            return
        finite(rec.predict(frame.iloc[:5]))
        recs = rec.recommend(rec.users_[:2], n=3)
    finite(recs["score"])
    assert set(recs["user"].tolist()) <= set(rec.users_.tolist())


@pytest.fixture(scope="module")
def fitted_recommender():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user_id": rng.integers(0, 10, 120), "item_id": rng.integers(0, 15, 120)})
    frame = frame.drop_duplicates().assign(rating=lambda d: rng.integers(1, 6, len(d)) * 1.0,
                                           hour=lambda d: rng.choice(["am", "pm"], len(d)))
    rec = Recommender(target="rating", context=["hour"], random_state=0,
                      model=FMRegressor(n_factors=4, n_epochs=3, solver="sgd",
                                        random_state=0))
    return rec.fit(frame)


@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_a_failed_partial_fit_changes_nothing(fitted_recommender, data):
    rec = copy.deepcopy(fitted_recommender)
    batch = data.draw(interaction_frames(with_target=True), label="batch")
    batch["hour"] = data.draw(st.lists(mostly(st.sampled_from(["am", "pm", "noon", None]),
                                              st.sampled_from([3, [1], np.inf]), 12),
                                       min_size=len(batch), max_size=len(batch)), label="hour")
    before = state(rec)
    probe = pd.DataFrame({"user_id": [0, 1], "item_id": [0, 1], "hour": ["am", "pm"]})
    scores = rec.predict(probe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rec.partial_fit(batch)
        except Exception as exc:  # noqa: BLE001
            documented(exc)
            assert_same_state(before, state(rec))
            np.testing.assert_array_equal(rec.predict(probe), scores)
            return
    finite(rec.predict(probe))
    finite(rec.predict(batch.iloc[:3]))


@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_queries_are_an_error_or_finite_and_change_nothing(fitted_recommender, data):
    """recommend and predict with generated users, n, candidates, context and history
    (unknown ids, NaN, unhashable cells, wrong columns) never alter the recommender."""
    rec = fitted_recommender
    before = state(rec)
    some_ids = mostly(st.integers(0, 12), id_values())
    users = data.draw(mostly(st.lists(some_ids, min_size=1, max_size=4), st.one_of(
        some_ids, st.just([]), st.just([[1]]), st.just(np.array([[0, 1]])))), label="users")
    kwargs = data.draw(st.fixed_dictionaries({}, optional={
        "n": mostly(st.integers(1, 20), st.sampled_from([0, -1, 2.5, "3", None, 10**12])),
        "exclude_seen": st.booleans(),
        "items": mostly(st.lists(st.integers(0, 14), min_size=1, max_size=5),
                        st.lists(id_values(), max_size=3)),
        "unknown": mostly(st.sampled_from(["error", "popular"]), st.sampled_from(["x", None])),
        "context": mostly(st.fixed_dictionaries({"hour": st.sampled_from(["am", "pm"])}),
                          st.one_of(st.just({"hour": [1]}), st.just({"nope": 1}),
                                    st.just(pd.DataFrame({"hour": ["am", "pm", "am"]})))),
        "history": st.one_of(
            st.dictionaries(st.integers(100, 103), st.lists(st.integers(0, 20), max_size=4),
                            max_size=2),
            st.just(pd.DataFrame({"user_id": [100, 100], "item_id": [1, 2],
                                  "rating": [5.0, np.nan], "hour": ["am", "pm"]})),
            st.just(pd.DataFrame({"user_id": [100, 101], "item_id": [1, 99],
                                  "rating": [5.0, 1.0], "hour": ["am", "pm"]}))),
    }), label="kwargs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            recs = rec.recommend(users, **kwargs)
        except Exception as exc:  # noqa: BLE001
            documented(exc)
        else:
            finite(recs["score"])
            assert (recs.groupby("user")["rank"].max() <= kwargs.get("n", 10)).all()
        pairs = pd.DataFrame({"user_id": data.draw(id_columns(3), label="pred_users"),
                              "item_id": [0, 1, 2], "hour": ["am", "pm", None]})
        try:
            predictions = rec.predict(pairs)
        except Exception as exc:  # noqa: BLE001
            documented(exc)
        else:
            finite(predictions)
    assert_same_state(before, state(rec))


# ---------------------------------------------------------------------------- estimators
def arrays_2d() -> st.SearchStrategy:
    elements = mostly(st.floats(-3, 3), st.sampled_from([0.0, 1.0, np.nan, np.inf, 1e38,
                                                         -1e300]), 24)
    return st.integers(1, 12).flatmap(lambda n: st.integers(1, 6).flatmap(
        lambda m: st.lists(st.lists(elements, min_size=m, max_size=m), min_size=n, max_size=n)))


def hyperparameters() -> st.SearchStrategy:
    odd = st.sampled_from([-1, 0, np.nan, np.inf, "x", None, 1e9, True, 2.5])
    return st.fixed_dictionaries({}, optional={
        "n_factors": mostly(st.integers(1, 6), odd, 12),
        "n_epochs": mostly(st.integers(1, 3), odd, 12),
        "solver": mostly(st.sampled_from(["als", "sgd", "mcmc"]), st.sampled_from(["x", None]),
                         12),
        "reg_factors": mostly(st.floats(0, 2), odd, 12),
        "learning_rate": mostly(st.floats(0.001, 0.2), odd, 12),
        "init_std": mostly(st.floats(0.01, 0.5), odd, 12),
        "dtype": mostly(st.sampled_from(["float32", "float64"]), st.sampled_from(["int8", None]),
                        12),
    })


@settings(settings.get_profile(PROFILE))
@given(X=arrays_2d(), data=st.data(), params=hyperparameters(),
       classifier=st.booleans())
def test_estimator_fit_is_an_error_or_finite_and_failures_keep_the_model(X, data, params,
                                                                        classifier):
    X = np.array(X, dtype=np.float64)
    n = data.draw(st.sampled_from([len(X)] * 6 + [len(X) + 1, max(len(X) - 1, 0)]),
                  label="n_y")
    labels = st.sampled_from([0, 1]) if classifier else mostly(
        st.floats(-5, 5), st.sampled_from([np.nan, np.inf, 1e39]))
    y = np.array(data.draw(st.lists(labels, min_size=n, max_size=n), label="y"))
    cls = FMClassifier if classifier else FMRegressor
    model = cls(n_factors=2, n_epochs=2, random_state=0).fit(np.eye(3), [0, 1, 1])
    before, original = state(model), model.get_params()
    model.set_params(warm_start=data.draw(st.booleans(), label="warm"), **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model.fit(X, y)
        except Exception as exc:  # noqa: BLE001
            documented(exc)
            model.set_params(**original)  # the hyperparameters are the caller's to set
            assert_same_state(before, state(model))
            return
    finite(model.predict(X))


@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_ranker_fit_is_an_error_or_finite_and_failures_keep_the_model(data):
    n_users, n_items = data.draw(st.integers(1, 5), label="n_users"), data.draw(
        st.integers(1, 6), label="n_items")
    width = n_users + n_items
    U = np.hstack([np.eye(n_users), np.zeros((n_users, n_items))])
    I = np.hstack([np.zeros((n_items, n_users)), np.eye(n_items)])  # noqa: E741
    if data.draw(st.integers(0, 5), label="odd rows") == 0:
        odd = data.draw(st.sampled_from([np.nan, np.inf, -1e39]), label="odd value")
        U[0, 0] = odd
    n = data.draw(st.integers(0, 12), label="n_positives")
    def positions(n_rows):
        return mostly(st.integers(0, n_rows - 1), st.sampled_from([-1, 99, 2.5, None]), 20)

    users = data.draw(st.lists(positions(n_users), min_size=n, max_size=n), label="users")
    items = data.draw(st.lists(positions(n_items), min_size=n, max_size=n + data.draw(
        st.sampled_from([0] * 6 + [1]), label="extra")), label="items")
    params = data.draw(st.fixed_dictionaries({}, optional={
        "n_factors": mostly(st.integers(1, 4), st.sampled_from([0, -1, "x", np.nan]), 12),
        "n_candidates": mostly(st.integers(1, 5), st.sampled_from([0, -2, 1.5]), 12),
        "learning_rate": mostly(st.floats(0.001, 0.5), st.sampled_from([0, -1, np.inf]), 12),
        "negative_sampling": mostly(st.sampled_from(["uniform", "popularity"]),
                                    st.just("x"), 12)}), label="params")
    model = FMRanker(n_factors=2, n_epochs=1, random_state=0).fit(
        np.eye(width)[:1], np.eye(width), [0], [1])  # width >= 2: a negative to sample
    before, original = state(model), model.get_params()
    model.set_params(n_epochs=2, warm_start=data.draw(st.booleans(), label="warm"), **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model.fit(U, I, users, items)
        except Exception as exc:  # noqa: BLE001
            documented(exc)
            model.set_params(**original)
            assert_same_state(before, state(model))
            return
    finite(model.score(U[:1].repeat(n_items, 0), I))
    finite(model.history_["train_loss"])


@settings(settings.get_profile(PROFILE), max_examples=min(
    settings.get_profile(PROFILE).max_examples, 30))
@given(data=st.data())
def test_tune_is_an_error_or_a_finite_best_score(data):
    pytest.importorskip("optuna")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 5)), rng.normal(size=40)
    kwargs = data.draw(st.fixed_dictionaries({}, optional={
        "n_trials": mostly(st.integers(1, 2), st.sampled_from([0, -1, 2.5, "2", None])),
        "metric": mostly(st.sampled_from(["rmse", "mae"]),
                         st.sampled_from(["auc", "ndcg@10", "x", 3])),
        "validation": mostly(st.sampled_from([0.2, 0.5]),
                             st.sampled_from([0.0, 1.0, -0.1, 2, "x", (X, y)])),
        "cv": st.sampled_from([None, 2, 1, 0, 41, "x"]),
        "timeout": st.sampled_from([None, 30, 0, -1, np.nan]),
        "early_stopping_rounds": st.sampled_from([None, 1, 0, -3]),
        "n_jobs": st.sampled_from([None, 1, 0, -1, 2.5]),
        "search_space": st.sampled_from([None, {}, {"n_factors": (2, 4)},
                                         {"bogus": (0, 1)}, {"n_factors": "x"}]),
    }), label="kwargs")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = fmrec_tune(FMRegressor(n_epochs=2, n_factors=2), (X, y), random_state=0,
                                **kwargs)
        except Exception as exc:  # noqa: BLE001
            documented(exc)
            return
    finite([result.best_score])
    finite(result.best_model.predict(X))


def fmrec_tune(*args, **kwargs):
    from fmrec import tune

    return tune(*args, **kwargs)


# ---------------------------------------------------------------------------- encoder
@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_encoder_is_an_error_or_a_finite_matrix(data):
    n = data.draw(st.integers(1, 12), label="n")
    frame = pd.DataFrame({"c": data.draw(side_cells(n), label="c"),
                          "x": data.draw(side_cells(n), label="x")})
    kind = data.draw(st.sampled_from(["categorical", "numeric", "multi_valued"]), label="kind")
    columns = {"categorical": ["x"], "numeric": [], "multi_valued": []}
    columns[kind] = [*columns[kind], "c"]
    enc = FeatureEncoder(**columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            Xt = enc.fit_transform(frame)
        except Exception as exc:  # noqa: BLE001
            documented(exc)
            return
    finite(Xt.data)
    assert Xt.shape == (n, len(enc.feature_names_))


# ---------------------------------------------------------------------------- metrics
@settings(settings.get_profile(PROFILE))
@given(data=st.data(), n=st.integers(0, 6))
def test_metrics_are_an_error_or_finite(data, n):
    lengths = st.sampled_from([n] * 6 + [n + 1])
    a = data.draw(st.lists(mostly(st.sampled_from([0.0, 1.0]), st.sampled_from(
        [np.nan, np.inf, 0.5, 2.0]), 12), min_size=n, max_size=n), label="y_true")
    b = data.draw(lengths.flatmap(lambda m: st.lists(mostly(st.floats(0, 1), st.sampled_from(
        [np.nan, -np.inf, 7.0]), 12), min_size=m, max_size=m)), label="y_pred")
    w = data.draw(st.none() | lengths.flatmap(lambda m: st.lists(mostly(
        st.floats(0, 3), st.sampled_from([-1.0, np.nan, 0.0]), 12), min_size=m, max_size=m)),
        label="sample_weight")
    for metric in (rmse, mae, log_loss, auc):
        try:
            value = metric(a, b, sample_weight=w)
        except Exception as exc:  # noqa: BLE001
            documented(exc)
            continue
        finite([value])


# ---------------------------------------------------------------------------- model files
@pytest.fixture(scope="module")
def model_files(tmp_path_factory, fitted_recommender):
    folder = tmp_path_factory.mktemp("files")
    fm = FMRegressor(n_factors=3, n_epochs=2, random_state=0).fit(np.eye(5), np.arange(5.0))
    fm.save(folder / "fm.npz")
    fitted_recommender.save(folder / "rec.npz")
    return folder


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**70), st.text(max_size=3),
                        st.floats(allow_nan=True, allow_infinity=True), st.just([]),
                        st.just({}), st.just([1, "x"]))


def mutate_meta(meta, path: list, value):
    node = meta
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def meta_paths(meta, prefix=()) -> list:
    out = []
    for key, value in meta.items():
        out.append([*prefix, key])
        if isinstance(value, dict):
            out.extend(meta_paths(value, (*prefix, key)))
    return out


def array_mutations(arr: np.ndarray) -> st.SearchStrategy:
    return st.sampled_from([
        lambda a: a[:-1] if a.ndim and len(a) else a,
        lambda a: np.full_like(a, np.nan) if a.dtype.kind == "f" else a,
        lambda a: a.astype(np.int64) if a.dtype.kind in "fb" else a,
        lambda a: np.asarray(a).astype(str),
        lambda a: a.T.copy() if a.ndim == 2 else a.reshape(1, -1),
        lambda a: a + 1000 if a.dtype.kind in "iu" else a,
        lambda a: -np.abs(a) - 1 if a.dtype.kind in "iuf" else a,
        lambda a: np.zeros((0,) + a.shape[1:], a.dtype),
    ])


@settings(settings.get_profile(PROFILE))
@given(data=st.data(), which=st.sampled_from(["fm.npz", "rec.npz"]))
def test_a_damaged_model_file_is_an_error_or_a_working_model(model_files, tmp_path_factory,
                                                            data, which):
    arrays = dict(np.load(model_files / which, allow_pickle=False))
    meta = json.loads(str(arrays["metadata"]))
    for _ in range(data.draw(st.integers(1, 3), label="n_changes")):
        if data.draw(st.booleans(), label="meta?"):
            path = data.draw(st.sampled_from(meta_paths(meta)), label="field")
            mutate_meta(meta, path, data.draw(JSON_VALUES, label="value"))
        else:
            key = data.draw(st.sampled_from(sorted(k for k in arrays if k != "metadata")),
                            label="array")
            if data.draw(st.integers(0, 5), label="drop?") == 0:
                del arrays[key]
            else:
                change = data.draw(array_mutations(arrays[key]), label="change")
                arrays[key] = change(arrays[key])
    arrays["metadata"] = np.array(json.dumps(meta))
    path = tmp_path_factory.mktemp("damaged") / which
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    try:
        model = load_model(path)
    except ValueError as exc:
        documented(exc)
        return
    # It loaded: it must work on valid input, or refuse it with a documented error.
    try:
        if which == "fm.npz":
            finite(model.predict(np.eye(5)))
        else:
            finite(model.predict(pd.DataFrame({"user_id": [0, 1], "item_id": [0, 1],
                                               "hour": ["am", "pm"]})))
            finite(model.recommend(model.users_[:2], n=3)["score"])
    except Exception as exc:  # noqa: BLE001
        documented(exc)


# ---------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, model_files):
    folder = tmp_path_factory.mktemp("cli_props")
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"user_id": rng.integers(0, 8, 60), "item_id": rng.integers(0, 10, 60),
                          "rating": rng.integers(1, 6, 60)}).drop_duplicates(["user_id",
                                                                               "item_id"])
    frame.to_csv(folder / "ratings.csv", index=False)
    frame.iloc[:5].assign(rating=[1, None, 3, "x", 5]).to_csv(folder / "bad.csv", index=False)
    (folder / "ratings.libsvm").write_text("1 0:1 3:1\n0 1:1 2:1\n3 2:1 4:0.5\n")
    (folder / "empty.csv").write_text("")
    (folder / "folder").mkdir()
    return {"csv": folder / "ratings.csv", "bad": folder / "bad.csv",
            "libsvm": folder / "ratings.libsvm", "empty": folder / "empty.csv",
            "dir": folder / "folder", "fm": model_files / "fm.npz",
            "rec": model_files / "rec.npz", "missing": folder / "no.csv",
            "out": folder / "out.npz"}


VALID_OPTIONS = {"--epochs": ["1", "2"], "--factors": ["2", "4"], "--reg-factors": ["0.1"],
                 "--learning-rate": ["0.05"], "--target": ["rating"], "--user-col": ["user_id"],
                 "--negatives": ["2"], "--solver": ["als", "sgd", "mcmc"],
                 "--context": ["rating"], "--implicit-weight": ["0.5"], "--n-jobs": ["1", "2"],
                 "--seed": ["0", "7"], "--format": ["csv", "libsvm"], "--users": ["1", "2"],
                 "--n": ["3"], "--unknown": ["popular", "error"], "--k": ["5"],
                 "--threshold": ["3.5"]}


def option_values(option: str) -> st.SearchStrategy:
    odd = st.one_of(st.sampled_from(["0", "-1", "nan", "inf", "1e9", "abc", "", "\0"]),
                    st.text(max_size=3))
    return mostly(st.sampled_from(VALID_OPTIONS.get(option, ["1"])), odd)


@st.composite
def command_lines(draw, files):
    def path(*usual):
        """Mostly one of the files this position takes, sometimes any file at all."""
        names = draw(mostly(st.sampled_from(usual), st.sampled_from(sorted(files))))
        return str(files[names])

    command = draw(st.sampled_from(["train", "predict", "recommend", "evaluate"]))
    if command == "train":
        argv = ["train", path("csv", "libsvm"), "--out", path("out")]
        options = ["--epochs", "--factors", "--reg-factors", "--learning-rate", "--target",
                   "--user-col", "--negatives", "--solver", "--context", "--implicit-weight",
                   "--n-jobs", "--seed", "--format"]
    elif command == "predict":
        argv = ["predict", path("rec", "fm"), path("csv", "libsvm")]
        options = ["--out", "--format"]
    elif command == "recommend":
        argv = ["recommend", path("rec")]
        options = ["--users", "--n", "--out", "--unknown", "--users-file"]
    else:
        argv = ["evaluate", path("rec", "fm"), path("csv", "libsvm")]
        options = ["--k", "--threshold", "--format"]
    for option in draw(st.lists(st.sampled_from(options), max_size=3, unique=True)):
        value = (path("out", "csv") if option in ("--out", "--users-file")
                 else draw(option_values(option)))
        if option == "--epochs" and value.isdigit():
            value = str(min(int(value), 3))  # keep each case short
        if option == "--factors" and value.isdigit():
            value = str(min(int(value), 16))
        argv += [option, value]
    return ["-q", *argv]


@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_the_cli_exits_0_or_2_with_one_line(cli_files, data):
    argv = data.draw(command_lines(cli_files), label="argv")
    assume("\0" not in "".join(argv))  # the OS refuses NUL in arguments before we run
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(), redirect_stdout(out), redirect_stderr(err):
        warnings.simplefilter("ignore")
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: a usage error (2)
            code = exc.code
            event(f"{argv[1]}: argparse exit {code}")
            assert code == 2, (argv, err.getvalue())
            return
    assert code in (0, 2), (argv, err.getvalue())
    event(f"{argv[1]}: exit {code}")
    if code == 2:
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fmrec: error: "), (argv, lines)
    if cli_files["out"].exists():
        cli_files["out"].unlink()

