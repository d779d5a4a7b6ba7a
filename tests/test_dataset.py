"""InteractionDataset: the rows the Recommender trains on, ranking data, negatives, growth,
bad input, feature names, and the round trip through arrays."""


import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError

import fmrec.recommend.dataset
from fmrec import FMClassifier, FMRanker, FMRegressor, InteractionDataset, Recommender

N_USERS, N_ITEMS = 30, 20


def make_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    pairs = rng.choice(N_USERS * N_ITEMS, n, replace=False)
    u, i = pairs // N_ITEMS, pairs % N_ITEMS
    df = pd.DataFrame({"user_id": u, "item_id": [f"i{j}" for j in i],
                       "rating": rng.normal(3, 1, n), "device": rng.choice(["phone", "web"], n),
                       "liked": rng.choice(["yes", "no"], n)})
    users = pd.DataFrame({"user_id": np.arange(N_USERS + 2), "age": rng.normal(35, 10,
                                                                              N_USERS + 2)})
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(N_ITEMS)],
                          "genres": [["drama"] if j % 2 else ["comedy", "kids"]
                                     for j in range(N_ITEMS)]})
    return df, users, items


@pytest.fixture(scope="module")
def data():
    return make_data()


def small(cls=FMRegressor, **kw):
    return cls(**{"n_factors": 3, "n_epochs": 4, "random_state": 0, **kw})


def same_design(a, b):
    A, B = a.to_csr(), b.to_csr()
    assert A.shape == B.shape
    assert (A != B).nnz == 0


@pytest.mark.parametrize("kw", [
    {"target": "rating"},
    {"target": "rating", "context": "device", "implicit": "both", "implicit_weight": 2.0},
    {"target": "liked", "model": small(FMClassifier), "implicit": True},
    {"target": None, "model": small(FMClassifier), "context": ["device"],
     "negative_sampling": "popularity"},
])
def test_rows_are_what_the_recommender_trains_on(data, kw):
    df, users, items = data
    kw = dict(kw, user_features=users, item_features=items)
    model = kw.pop("model", small())
    rec = Recommender(model=model, random_state=3, **kw).fit(df)
    ds = InteractionDataset(classifier=isinstance(model, FMClassifier), random_state=3,
                            **kw).fit(df)
    X, y = ds.training_rows(df)
    X_rec, y_rec = rec.dataset_.training_rows(df)
    same_design(X, X_rec)
    np.testing.assert_array_equal(y, y_rec)
    # The same rows, the same seed: the same model, bit for bit.
    mine = (FMClassifier if isinstance(model, FMClassifier) else FMRegressor)(
        **{**model.get_params(), "random_state": 0}).fit(X, y)
    np.testing.assert_array_equal(mine.V_, rec.model_.V_)
    np.testing.assert_array_equal(ds.feature_names_, rec.feature_names_)
    assert ds.feature_groups_ == rec.feature_groups_
    assert (ds.seen_ != rec.seen_).nnz == 0
    # Any pairs: the design of the first interactions is their training rows.
    cols = ds.context_cols
    head = df.iloc[:7]
    same_design(ds.design(head["user_id"], head["item_id"], head[cols] if cols else None),
                ds.training_rows(head)[0] if ds.target is not None else
                ds.design(head["user_id"], head["item_id"], head[cols] if cols else None))
    if ds.target is not None:
        same_design(ds.design(df["user_id"], df["item_id"], df[cols] if cols else None), X)


def test_ranking_data_is_what_the_ranker_learns_from(data):
    df = data[0][["user_id", "item_id"]]
    ds = InteractionDataset(implicit=True).fit(df)
    U, I, users, items, seen = ds.ranking_data(df)  # noqa: E741
    n = ds.n_features
    assert U.shape == (N_USERS, n) and I.shape == (N_ITEMS, n)
    user_cols = slice(ds.feature_groups_["user_id"].start, ds.feature_groups_["user_implicit"]
                      .stop)
    assert U[:, ds.feature_groups_["item_id"]].nnz == 0
    assert I[:, user_cols].nnz == 0
    np.testing.assert_array_equal(ds.users_[users], df["user_id"])
    np.testing.assert_array_equal(ds.items_[items], df["item_id"])
    assert seen.sum() == len(df) and seen[users, items].min() >= 1
    rec = Recommender(model=FMRanker(n_factors=3, n_epochs=3, random_state=0),
                      implicit=True).fit(df)
    model = FMRanker(n_factors=3, n_epochs=3, random_state=0).fit(U, I, users, items, seen)
    np.testing.assert_array_equal(model.V_, rec.model_.V_)
    with pytest.raises(ValueError, match="no context"):
        InteractionDataset(context="device").fit(data[0]).ranking_data(data[0])


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_negatives_are_never_seen_items_and_are_seeded(data, sampling):
    df = data[0][["user_id", "item_id"]]
    ds = InteractionDataset(negatives=5, negative_sampling=sampling, random_state=1).fit(df)
    X, y = ds.training_rows(df)
    assert (y == 1).sum() == len(df) and (y == 0).sum() == 5 * len(df)
    users = ds.user_vocab_.index(df["user_id"])
    source, negative = ds.sample_negatives(users)
    assert ds.seen_[users[source], negative].max() == 0
    again, other = ds.sample_negatives(users), InteractionDataset(
        negatives=5, negative_sampling=sampling, random_state=2).fit(df).sample_negatives(users)
    np.testing.assert_array_equal(again[1], negative)
    assert (other[1] != negative).any()
    # The negatives' rows pair the positive's user with the sampled item.
    csr = X.to_csr()
    names = ds.feature_names_
    neg_rows = np.flatnonzero(y == 0)[:20]
    for r, s, item in zip(neg_rows, source[:20], negative[:20], strict=True):
        row = set(names[csr.indices[csr.indptr[r]:csr.indptr[r + 1]]])
        assert row == {f"user:user_id={df['user_id'].iloc[s]}",
                       f"item:item_id={ds.item_vocab_.ids.field_values('item_id')[item]}"}


def test_growth_inserts_new_columns_where_the_model_grows(data):
    df, users, items = data
    ds = InteractionDataset(target="rating", context="device", implicit="both",
                            user_features=users).fit(df)
    before = ds.feature_names_.copy()
    batch = pd.DataFrame({"user_id": [3, 999, 999], "item_id": ["i1", "new", "i2"],
                          "rating": [4.0, 5.0, 1.0], "device": ["tv", "web", "web"]})
    at = ds.grow(batch)
    after = ds.feature_names_
    assert len(after) == len(before) + len(at)
    # Inserting the new columns before old positions ``at`` (np.insert, as a model's grow
    # does) turns the old layout into the new one.
    spread = np.insert(before.astype(object), at, None)
    old = np.array([v is not None for v in spread])
    np.testing.assert_array_equal(after[old], before)
    new = set(after[~old])
    assert new == set(after) - set(before)
    assert {"context:device=tv", "user:user_id=999", "item:item_id=new",
            "user:implicit_item_id=new", "item:implicit_user_id=999"} == new
    assert ds.seen_.shape == (N_USERS + 1, N_ITEMS + 1)
    assert ds.seen_.sum() == len(df) + len(batch) and ds.popularity_.sum() == ds.seen_.sum()
    model = small(solver="sgd").fit(*InteractionDataset(
        target="rating", context="device", implicit="both", user_features=users).fit(df)
        .training_rows(df))
    model.grow(model.n_features_in_ + len(at), at=at)
    X, _ = ds.training_rows(batch)
    assert X.shape[1] == model.n_features_in_
    model.partial_fit(X, batch["rating"].to_numpy())


def test_feature_names_and_groups(data):
    df, users, items = data
    ds = InteractionDataset(target="rating", context=["device"], implicit="users",
                            user_features=users, item_features=items).fit(df)
    names, groups = ds.feature_names_, ds.feature_groups_
    assert list(groups) == list(fmrec.recommend.dataset.GROUPS)
    assert groups["item_implicit"].stop == ds.n_features == len(names)
    prefixes = {"context": "context:device=", "user_id": "user:user_id=",
                "user_features": "user:age", "user_implicit": "user:implicit_item_id=",
                "item_id": "item:item_id=", "item_features": "item:genres="}
    for group, prefix in prefixes.items():
        span = names[groups[group]]
        assert len(span) and all(n.startswith(prefix) for n in span), group
    assert groups["item_implicit"].start == groups["item_implicit"].stop
    fields = ds.feature_fields()
    assert fields.shape == (ds.n_features,)
    assert len(np.unique(fields[groups["user_id"]])) == 1
    assert fields[groups["user_id"]][0] != fields[groups["item_id"]][0]
    # Users only in the side table come after the training users.
    assert list(ds.users_[-2:]) == [N_USERS, N_USERS + 1]
    row = ds.user_rows([N_USERS + 1]).toarray()[0]
    assert row[:groups["user_id"].stop - groups["user_id"].start].sum() == 0  # no id feature


def test_bad_input_names_the_problem(data):
    df = data[0]
    with pytest.raises(ValueError, match=r"interactions is missing column\(s\) \['rating'\]"):
        InteractionDataset(target="rating").fit(df.drop(columns="rating"))
    with pytest.raises(ValueError, match="'item_id' has 1 missing value.*first at row 4"):
        InteractionDataset().fit(df.assign(item_id=df["item_id"].where(df.index != 4)))
    with pytest.raises(ValueError, match="'rating' has 1 NaN target.*first at row 2"):
        InteractionDataset(target="rating").fit(
            df.assign(rating=df["rating"].where(df.index != 2)))
    with pytest.raises(ValueError, match="exactly 2 distinct labels"):
        InteractionDataset(target="device", classifier=True).fit(
            df.assign(device=np.arange(len(df)) % 3))
    with pytest.raises(ValueError, match="must be numeric"):
        InteractionDataset(target="liked").fit(df)
    with pytest.raises(ValueError, match="empty"):
        InteractionDataset().fit(df.iloc[:0])
    with pytest.raises(TypeError, match="DataFrame"):
        InteractionDataset().fit(df.to_numpy())
    for kw, match in [({"negatives": 0}, "negatives must be >= 1"),
                      ({"implicit": "all"}, "implicit must be"),
                      ({"implicit_weight": 0}, "implicit_weight must be > 0"),
                      ({"negative_sampling": "zipf"}, "negative_sampling must be one of"),
                      ({"item_col": "user_id"}, "must differ"),
                      ({"context": ["user_id"]}, "context must not include")]:
        with pytest.raises(ValueError, match=match):
            InteractionDataset(**kw).fit(df)
    with pytest.raises(NotFittedError):
        InteractionDataset().training_rows(df)
    ds = InteractionDataset(target="liked", classifier=True, context="device").fit(df)
    assert ds.classes_.tolist() == ["no", "yes"]
    with pytest.raises(ValueError, match=r"labels 'maybe' not among the model's classes"):
        ds.training_rows(df.assign(liked="maybe"))
    with pytest.raises(ValueError, match=r"context columns \['device'\]"):
        ds.design([1], ["i1"])
    with pytest.raises(ValueError, match="as many users as items"):
        ds.design([1, 2], ["i1"], df[["device"]].iloc[:2])
    with pytest.raises(ValueError, match="shape"):
        ds.add_seen(sp.csr_matrix((2, 2)))


def test_round_trip_through_arrays_and_from_fitted(data):
    df, users, items = data
    params = dict(target="rating", context="device", implicit=True, user_features=users,
                  item_features=items)
    ds = InteractionDataset(**params).fit(df)
    back = InteractionDataset.from_arrays(ds.to_arrays(), **params)
    same_design(back.training_rows(df)[0], ds.training_rows(df)[0])
    np.testing.assert_array_equal(back.feature_names_, ds.feature_names_)
    model = small().fit(*ds.training_rows(df))
    rec = Recommender.from_fitted(back, model)
    assert rec.context == "device" and rec.implicit is True
    np.testing.assert_allclose(rec.predict(df), model.predict(ds.training_rows(df)[0]))
    assert len(rec.recommend([1, 2], n=3)) == 6
    with pytest.raises(ValueError, match="describe"):
        Recommender.from_fitted(InteractionDataset(target="rating").fit(df), model)
