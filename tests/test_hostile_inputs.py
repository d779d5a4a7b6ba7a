"""Issue 15's remaining cases: ids past int64, unhashable cells, tampered encoder state,
storage URLs that cannot be opened, and models too wide for the machine. Each test failed
(a wrong answer or an internal error) before the fix."""

import json

import numpy as np
import pandas as pd
import pytest

import fmrec
from fmrec import FeatureEncoder, FMClassifier, FMRegressor, Recommender, load_model

TWO_63 = 2**63


def _interactions(seed: int = 0, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"user_id": rng.integers(0, 20, n), "item_id": rng.integers(0, 30, n)})
    df = df.drop_duplicates().reset_index(drop=True)
    return df.assign(rating=rng.integers(1, 6, len(df)).astype(float))


def _rating_recommender() -> Recommender:
    return Recommender(target="rating", model=FMRegressor(n_epochs=3, random_state=0),
                       random_state=0)


# ------------------------------------------------------------------------ ids past int64
def test_uint64_ids_past_2_63_are_their_own_users(tmp_path):
    """uint64 ids >= 2**63 (64-bit hashes) were cast to int64, wrapping 2**63 onto -2**63,
    and the fit failed with an internal message about growing the dataset."""
    small = _interactions()
    big = small.assign(user_id=small["user_id"].astype(np.uint64) + np.uint64(TWO_63))
    plain = _rating_recommender().fit(small)
    hashed = _rating_recommender().fit(big)
    assert hashed.users_.dtype == np.uint64
    assert set(hashed.users_.tolist()) == {u + TWO_63 for u in small["user_id"].unique().tolist()}
    got = hashed.recommend([TWO_63 + 3, TWO_63 + 5], n=5)
    want = plain.recommend([3, 5], n=5)
    assert got["user"].tolist() == [u + TWO_63 for u in want["user"].tolist()]
    assert got["item"].tolist() == want["item"].tolist()
    np.testing.assert_allclose(got["score"], want["score"])

    path = tmp_path / "hashed.npz"
    hashed.save(path)
    loaded = load_model(path)
    pd.testing.assert_frame_equal(loaded.recommend([TWO_63 + 3], n=5),
                                  hashed.recommend([TWO_63 + 3], n=5))
    # The largest uint64 id joins by partial_fit; a small int id stays a different user.
    new = big.iloc[:5].assign(user_id=np.uint64(2**64 - 1))
    loaded.partial_fit(new)
    assert 2**64 - 1 in loaded.users_.tolist()
    loaded.partial_fit(big.iloc[:5].assign(user_id=1))
    assert {1, 2**64 - 1} <= set(loaded.users_.tolist())


def test_python_int_ids_past_2_63_and_a_negative_one_are_two_users():
    df = _interactions()
    df["user_id"] = df["user_id"].astype(object)
    df.loc[df["user_id"] == 0, "user_id"] = TWO_63  # still fits uint64
    rec = _rating_recommender().fit(df)
    assert TWO_63 in rec.users_.tolist()
    df.loc[df["user_id"] == 1, "user_id"] = -TWO_63  # now no 64-bit type holds them all
    with pytest.raises(ValueError, match="user_id.*fit in int64 or all in uint64"):
        _rating_recommender().fit(df)


def test_python_int_ids_past_64_bits_are_a_value_error_naming_the_column():
    df = _interactions()
    df["item_id"] = [int(i) + 2**70 for i in df["item_id"]]
    with pytest.raises(ValueError, match="column 'item_id'.*beyond 64 bits.*as strings"):
        _rating_recommender().fit(df)


def test_integers_never_wrap():
    from fmrec.features._vocabulary import integers

    assert integers(np.array([1, TWO_63], dtype=object)).dtype == np.uint64
    assert integers(np.array([1, -5], dtype=object)).dtype == np.int64
    assert integers(np.array([TWO_63], dtype=np.uint64)).tolist() == [TWO_63]
    with pytest.raises(ValueError, match="needs unsigned 64 bits while -1 is negative"):
        integers(np.array([-1, TWO_63], dtype=object))


# ------------------------------------------------------------------------ unhashable cells
@pytest.mark.parametrize("cell", [{"a": 1}, [1, 2], {3}])
def test_an_unhashable_cell_in_a_categorical_column_names_column_and_row(cell):
    frame = pd.DataFrame({"colour": ["red", "blue", cell, "red"]})
    with pytest.raises(ValueError, match=rf"column 'colour' holds a {type(cell).__name__} cell"
                                         r".*multi-valued.*at row 2"):
        FeatureEncoder(categorical=["colour"]).fit(frame)
    fitted = FeatureEncoder(categorical=["colour"]).fit(frame.drop(index=2))
    with pytest.raises(ValueError, match="column 'colour' holds"):
        fitted.transform(frame)


def test_a_dict_cell_in_a_side_table_names_the_column():
    items = pd.DataFrame({"item_id": range(30), "maker": [{"id": i} for i in range(30)]})
    with pytest.raises(ValueError, match="column 'maker' holds a dict cell"):
        Recommender(target="rating", item_features=items).fit(_interactions())


# ------------------------------------------------------------------------ tampered files
def _tampered(path, out, change) -> str:
    arrays = dict(np.load(path, allow_pickle=False))
    change(arrays)
    with open(out, "wb") as fh:
        np.savez(fh, **arrays)
    return out


@pytest.fixture(scope="module")
def saved_recommender(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "rec.npz"
    _rating_recommender().fit(_interactions()).save(path)
    return path


TAMPERED_ENCODERS = {
    "an unknown vocabulary kind": (
        lambda a: a.update({"users.ids.vocab_kind_0": np.array("q")}),
        "unknown vocabulary kind 'q'"),
    "a repeated id": (
        lambda a: a.update({"users.ids.vocab_0": np.full_like(a["users.ids.vocab_0"], "1")}),
        "vocabulary of field 'user_id' repeats a value"),
    "fewer ids than features": (
        lambda a: a.update({"users.ids.vocab_0": a["users.ids.vocab_0"][:-2]}),
        "has 18 values but 20 feature indices"),
    "a feature index below 0": (
        lambda a: a.update({"users.ids.local_0": a["users.ids.local_0"] - 5}),
        "maps values outside its 20 features"),
    "means of another width": (
        lambda a: a.update({"users.ids.means": np.zeros(7)}),
        "encoder's means do not match its 1 fields"),
    "a boolean vocabulary of other words": (
        lambda a: a.update({"users.ids.vocab_kind_0": np.array("b")}),
        "boolean vocabulary values must be 'True' or 'False'"),
}


@pytest.mark.parametrize("case", list(TAMPERED_ENCODERS))
def test_a_tampered_encoder_is_refused_at_load(saved_recommender, tmp_path, case):
    """An unknown kind loaded the ids as strings (every user then 'unknown'); a repeated id
    loaded and crashed at recommend with pandas' InvalidIndexError; means of another width
    loaded silently."""
    change, message = TAMPERED_ENCODERS[case]
    path = _tampered(saved_recommender, tmp_path / "t.npz", change)
    with pytest.raises(ValueError, match=message):
        load_model(path)


def test_the_untampered_file_loads(saved_recommender):
    assert len(load_model(saved_recommender).recommend([1], n=3)) == 3


def test_metadata_fields_are_checked_before_arrays(tmp_path):
    model = FMRegressor(n_epochs=1).fit(np.eye(4), np.arange(4.0))
    model.save(tmp_path / "m.npz")
    for field, value, message in [("n_features_in", "4", "must be a non-negative integer"),
                                  ("n_features_in", 5, "inconsistent shape"),
                                  ("w0", None, "must be a number")]:
        def change(arrays, field=field, value=value):
            meta = json.loads(str(arrays["metadata"]))
            meta["fitted"][field] = value
            arrays["metadata"] = np.array(json.dumps(meta))
        with pytest.raises(ValueError, match=message):
            load_model(_tampered(tmp_path / "m.npz", tmp_path / "t.npz", change))


# ------------------------------------------------------------------------ tuning storage
@pytest.mark.parametrize(("storage", "error", "message"), [
    ("sqlite:////no/such/folder/tune.db", ValueError, "cannot open the study storage"),
    ("bogus://x", ValueError, "cannot open the study storage 'bogus://x'"),
    ("not a url", ValueError, "cannot open the study storage"),
    (5, TypeError, "storage must be None, a database URL or an Optuna storage, got int"),
])
def test_a_storage_that_cannot_be_opened_is_named(storage, error, message):
    pytest.importorskip("optuna")
    X, y = np.eye(6), np.arange(6.0)
    with pytest.raises(error, match=message):
        fmrec.tune(FMRegressor(n_epochs=2), (X, y), n_trials=1, storage=storage,
                   study_name="s")


# ------------------------------------------------------------------------ machine limits
def test_a_model_wider_than_memory_is_refused_before_allocating(monkeypatch):
    """A matrix of 2e8 (empty) columns made fit allocate ~15 GiB before failing."""
    import scipy.sparse as sp

    monkeypatch.setattr(fmrec._validation, "physical_memory", lambda: 2**30)
    X = sp.csr_matrix((np.ones(2), ([0, 1], [0, 200_000_000])), shape=(2, 200_000_001))
    model = FMRegressor(n_epochs=1)
    with pytest.raises(ValueError, match="X has 200000001 columns.*sparse ids"):
        model.fit(X, [1.0, 2.0])
    assert not hasattr(model, "V_")
    ranker = fmrec.FMRanker(n_epochs=1)
    with pytest.raises(ValueError, match="X has 200000001 columns"):
        ranker.fit(X, X, [0], [1])


def test_a_classifier_file_relabelled_as_a_regressor_is_refused(tmp_path):
    """It loaded, then predict failed with AttributeError: no attribute 'y_range_'."""
    FMClassifier(n_epochs=1).fit(np.eye(4), [0, 1, 1, 0]).save(tmp_path / "c.npz")

    def relabel(arrays):
        meta = json.loads(str(arrays["metadata"]))
        meta["class"] = "FMRegressor"
        arrays["metadata"] = np.array(json.dumps(meta))

    with pytest.raises(ValueError, match="regressor's record holds class labels"):
        load_model(_tampered(tmp_path / "c.npz", tmp_path / "t.npz", relabel))

    def drop_range(arrays):
        meta = json.loads(str(arrays["metadata"]))
        del meta["fitted"]["y_range"]
        arrays["metadata"] = np.array(json.dumps(meta))

    FMRegressor(n_epochs=1).fit(np.eye(4), np.arange(4.0)).save(tmp_path / "r.npz")
    with pytest.raises(ValueError, match="fitted lacks 'y_range'"):
        load_model(_tampered(tmp_path / "r.npz", tmp_path / "t.npz", drop_range))


def test_a_grow_that_runs_out_of_memory_changes_nothing(monkeypatch):
    """grow assigned w_ before widening V_: a failure between left w_ and V_ of two widths."""
    model = FMRegressor(solver="sgd", n_epochs=1, random_state=0).fit(np.eye(4), np.arange(4.0))
    w, V, n = model.w_.copy(), model.V_.copy(), model.n_features_in_
    real_insert, calls = np.insert, []

    def insert_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("no room for V")
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(np, "insert", insert_then_fail)
    with pytest.raises(MemoryError):
        model.grow(6)
    monkeypatch.undo()
    assert model.n_features_in_ == n
    np.testing.assert_array_equal(model.w_, w)
    np.testing.assert_array_equal(model.V_, V)
    assert model._accumulators[1].shape == w.shape


def test_booleans_never_merge_with_numeric_ids():
    """Found by the property tests: a batch with the item id False, given to a Recommender
    whose item ids are ints, crashed partial_fit with pandas' InvalidIndexError (False and
    0 are one key to pandas); at fit, [0, False] silently became one user."""
    rec = _rating_recommender().fit(_interactions())
    before = rec.recommend([1, 2], n=5)
    batch = pd.DataFrame({"user_id": [0], "item_id": [False], "rating": [1.0]})
    with pytest.raises(ValueError, match="column 'item_id'.*False.*same key"):
        rec.partial_fit(batch)
    pd.testing.assert_frame_equal(rec.recommend([1, 2], n=5), before)
    mixed = _interactions().astype({"user_id": object})
    mixed.loc[mixed["user_id"] == 1, "user_id"] = True
    with pytest.raises(ValueError, match="column 'user_id' mixes booleans with numbers"):
        _rating_recommender().fit(mixed)
