"""Recommender: factorized scores equal predict, top-N, cold start, fold-in, growth, save/load."""

import time

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize
from sklearn.exceptions import NotFittedError

from fmrec import FMClassifier, FMRegressor, Recommender, load_model
from fmrec.datasets import load_ml100k_split
from fmrec.design import DesignMatrix, RelationBlock, part_terms
from fmrec.metrics import ranking_metrics
from fmrec.recommend import scoring as _scoring

N_USERS, N_ITEMS = 60, 40


def make_data(n=900, seed=0):
    """Two user groups that like two item clusters; context, side features, cold entities."""
    rng = np.random.default_rng(seed)
    user_group = rng.integers(0, 2, N_USERS + 4)
    item_group = rng.integers(0, 2, N_ITEMS + 3)
    pairs = rng.choice(N_USERS * N_ITEMS, n, replace=False)
    u, i = pairs // N_ITEMS, pairs % N_ITEMS
    rating = (3 + np.where(user_group[u] == item_group[i], 1.0, -1.0)
              + rng.normal(0, 0.3, n))
    df = pd.DataFrame({"user_id": u, "item_id": [f"i{j}" for j in i], "rating": rating,
                       "hour": rng.integers(0, 24, n).astype(float),
                       "device": rng.choice(["phone", "web"], n)})
    users = pd.DataFrame({"user_id": np.arange(N_USERS + 4),
                          "group": [f"g{g}" for g in user_group],
                          "age": rng.normal(35, 10, N_USERS + 4)})
    genres = {0: [["drama"], ["drama", "war"]], 1: [["comedy"], ["comedy", "kids"]]}
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(N_ITEMS + 3)],
                          "genres": [genres[g][j % 2] for j, g in enumerate(item_group)]})
    return df, users, items, user_group, item_group


@pytest.fixture(scope="module")
def data():
    return make_data()


def small(cls=FMRegressor, **kw):
    return cls(**{"n_factors": 4, "n_epochs": 8, "random_state": 0, **kw})


CONFIGS = {
    "plain": {},
    "context": {"context": ["hour", "device"]},
    "side": {"side": True},
    "implicit": {"implicit": True},
    "everything": {"side": True, "implicit": True, "context": ["hour", "device"]},
    "both_implicit": {"side": True, "implicit": "both", "implicit_weight": 2.0,
                      "context": ["device"]},
    "implicit_feedback": {"target": None, "model": small(FMClassifier),
                          "context": ["device"], "side": True},
    "labels": {"target": "liked", "model": small(FMClassifier), "implicit": True},
}


def build(data, name, **extra):
    df, users, items, *_ = data
    kw = dict(CONFIGS[name], **extra)
    if kw.pop("side", False):
        kw.update(user_features=users, item_features=items)
    kw.setdefault("target", "rating")
    kw.setdefault("model", small())
    # Most tests check the target model's own top-N; tests/test_topn_from_ratings.py checks
    # the default blend with a ranker.
    kw.setdefault("target_weight", 1.0)
    df = df.assign(liked=np.where(df["rating"] > 3, "yes", "no"))
    return Recommender(random_state=0, **kw).fit(df), df


def context_of(name):
    cols = CONFIGS[name].get("context", [])
    return {c: v for c, v in {"hour": 20.0, "device": "web"}.items() if c in cols} or None


def pairs_of(recs, context=None):
    pairs = recs.rename(columns={"user": "user_id", "item": "item_id"})
    return pairs.assign(**context) if context else pairs


# ----------------------------------------------------------------- factorized == predict
@pytest.mark.parametrize("name", list(CONFIGS))
def test_factorized_scores_equal_predict(data, name):
    rec, _ = build(data, name)
    ctx = context_of(name)
    users = np.arange(N_USERS + 4 if rec.user_features is not None else N_USERS)
    out = rec.recommend(users, n=N_ITEMS + 3, exclude_seen=False, context=ctx)
    assert len(out) == len(users) * len(rec.items_)
    np.testing.assert_allclose(out["score"], rec.predict(pairs_of(out, ctx)), rtol=0, atol=1e-5)
    # And against the estimator on materialized rows, which shares no code with _scoring.
    cols = rec.dataset_.context_cols
    X = rec.dataset_.design(out["user"].to_numpy(), out["item"].to_numpy(),
                    pairs_of(out, ctx)[cols] if cols else None)
    model = rec.model_
    direct = (model.predict_proba(X.to_csr())[:, 1] if isinstance(model, FMClassifier)
              else model.predict(X.to_csr()))
    np.testing.assert_allclose(out["score"], direct, rtol=0, atol=1e-5)


def test_per_user_context_frame(data):
    rec, _ = build(data, "context")
    ctx = pd.DataFrame({"user_id": [3, 1, 2], "hour": [1.0, 9.0, 23.0],
                        "device": ["web", "phone", "web"]})
    out = rec.recommend([1, 2, 3], n=5, context=ctx)
    pairs = out.rename(columns={"user": "user_id", "item": "item_id"}).merge(
        ctx, on="user_id", how="left")
    np.testing.assert_allclose(out["score"], rec.predict(pairs), atol=1e-5)
    with pytest.raises(ValueError, match="no row for user"):
        rec.recommend([1, 4], context=ctx)
    with pytest.raises(ValueError, match="needs a 'user_id' column"):
        rec.recommend([1, 2], context=ctx.drop(columns="user_id"))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['device'\]"):
        rec.recommend([1], context={"hour": 3.0})


# ------------------------------------------------------------------------- top-N lists
def brute_force(rec, df, users, n, exclude_seen=True):
    items = rec.items_
    grid = pd.DataFrame({"user_id": np.repeat(users, len(items)),
                         "item_id": np.tile(items, len(users))})
    grid["score"] = rec.predict(grid)
    if exclude_seen:
        seen = set(zip(df["user_id"], df["item_id"], strict=True))
        grid = grid[[p not in seen for p in zip(grid["user_id"], grid["item_id"],
                                                strict=True)]]
    return grid.sort_values(["user_id", "score"], ascending=[True, False],
                            kind="stable").groupby("user_id").head(n)


@pytest.mark.parametrize("name", ["plain", "everything"])
def test_top_n_matches_brute_force(data, name):
    rec, df = build(data, name, context=None)
    users = np.arange(0, N_USERS, 3)
    out = rec.recommend(users[::-1], n=7)
    expected = brute_force(rec, df, users, 7)
    assert out["user"].tolist() == expected["user_id"].tolist()  # sorted by user
    assert out["item"].tolist() == expected["item_id"].tolist()
    np.testing.assert_allclose(out["score"], expected["score"], atol=1e-5)
    ranks = out.groupby("user")["rank"].apply(list)
    assert all(r == list(range(1, len(r) + 1)) for r in ranks)
    assert ranks.map(len).max() == 7
    assert list(out.columns) == ["user", "item", "score", "rank"]


def test_exclude_seen_and_items(data):
    rec, df = build(data, "plain")
    seen = set(zip(df["user_id"], df["item_id"], strict=True))
    out = rec.recommend(np.arange(N_USERS), n=N_ITEMS)
    assert not any(p in seen for p in zip(out["user"], out["item"], strict=True))
    # Every unseen training item is listed: the lists are complete, not just disjoint.
    n_seen = df.groupby("user_id").size().reindex(range(N_USERS), fill_value=0)
    listed = out.groupby("user").size().reindex(range(N_USERS), fill_value=0)
    assert (listed == N_ITEMS - n_seen).all()
    full = rec.recommend(np.arange(N_USERS), n=N_ITEMS, exclude_seen=False)
    assert len(full) == N_USERS * N_ITEMS
    few = rec.recommend([0, 1], n=3, items=["i1", "i2", "i3", "i4"], exclude_seen=False)
    assert set(few["item"]) <= {"i1", "i2", "i3", "i4"} and len(few) == 6
    with pytest.raises(ValueError, match=r"items 'nope' are unknown"):
        rec.recommend([0], items=["i1", "nope"])


def test_n_larger_than_catalogue_and_scalar_user(data):
    rec, _ = build(data, "plain")
    out = rec.recommend(4, n=1000, exclude_seen=False)
    assert len(out) == N_ITEMS and out["rank"].tolist() == list(range(1, N_ITEMS + 1))
    assert np.all(np.diff(out["score"]) <= 0)


# -------------------------------------------------------------------------- cold start
def test_cold_start_user_from_side_features(data):
    df, users, items, user_group, item_group = data
    rec, _ = build(data, "side", model=small(n_epochs=20))
    cold = np.arange(N_USERS, N_USERS + 4)  # in user_features, never in interactions
    out = rec.recommend(cold, n=5)
    assert len(out) == 20
    np.testing.assert_allclose(out["score"], rec.predict(pairs_of(out)), atol=1e-5)
    # The group feature carries the taste: cold users get their group's items.
    liked = item_group[out["item"].str[1:].astype(int)] == user_group[out["user"]]
    assert liked.mean() >= 0.9


def test_cold_item_from_side_features_is_recommendable(data):
    rec, _ = build(data, "side")
    cold_items = {f"i{j}" for j in range(N_ITEMS, N_ITEMS + 3)}
    out = rec.recommend(np.arange(N_USERS), n=N_ITEMS + 3, exclude_seen=False)
    assert cold_items <= set(out["item"])
    np.testing.assert_allclose(out["score"], rec.predict(pairs_of(out)), atol=1e-5)


def test_unknown_users_error_or_popular(data):
    rec, df = build(data, "plain")
    with pytest.raises(ValueError, match=r"unknown user\(s\) 998, 999"):
        rec.recommend([1, 999, 998])
    out = rec.recommend([1, 999], n=4, unknown="popular")
    popular = df["item_id"].value_counts(sort=False)
    top = popular.sort_values(ascending=False, kind="stable").head(4)
    got = out[out["user"] == 999]
    assert set(got["item"]) == set(top.index) or \
        popular[got["item"]].min() >= top.min()  # ties at the cut-off may differ
    assert np.all(np.diff(popular[got["item"]].to_numpy()) <= 0)
    np.testing.assert_allclose(got["score"], rec.predict(pairs_of(got)), atol=1e-5)
    assert len(out[out["user"] == 1]) == 4
    with pytest.raises(ValueError, match="unknown must be one of"):
        rec.recommend([1], unknown="skip")


def test_predict_unknown_pairs_use_no_id_features(data):
    rec, _ = build(data, "plain")
    pred = rec.predict(pd.DataFrame({"user_id": [12345], "item_id": ["zzz"]}))
    model = rec.model_
    assert pred[0] == pytest.approx(np.clip(model.w0_, *model.y_range_))
    assert rec.predict(pd.DataFrame({"user_id": [], "item_id": []})).shape == (0,)


# -------------------------------------------------------------------------------- errors
def test_errors(data):
    df = data[0]
    with pytest.raises(NotFittedError):
        Recommender().recommend([1])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['rating', 'device'\]|"
                                         r"missing column\(s\) \['device', 'rating'\]"):
        Recommender(target="rating", context=["device"]).fit(df[["user_id", "item_id"]])
    with pytest.raises(ValueError, match="NaN target"):
        Recommender(target="rating").fit(df.assign(rating=np.where(df.index == 7, np.nan, 1.0)))
    with pytest.raises(ValueError, match="exactly 2 distinct labels"):
        Recommender(target="rating", model=FMClassifier()).fit(df)
    with pytest.raises(ValueError, match="must be numeric"):
        Recommender(target="device").fit(df)
    with pytest.raises(ValueError, match="empty"):
        Recommender().fit(df.iloc[:0])
    with pytest.raises(ValueError, match="'user_id' has 1 missing"):
        Recommender().fit(df.assign(user_id=np.where(df.index == 3, np.nan, df["user_id"])))
    with pytest.raises(ValueError, match="negatives must be"):
        Recommender(negatives=0).fit(df)
    with pytest.raises(ValueError, match="negative_sampling must be"):
        Recommender(negative_sampling="zipf").fit(df)
    with pytest.raises(TypeError, match="model must be"):
        Recommender(model="als").fit(df)
    users = pd.DataFrame({"user_id": [1, 1], "age": [3.0, 4.0]})
    with pytest.raises(ValueError, match="user_features has several rows for user_id=1"):
        Recommender(user_features=users, model=small(FMClassifier)).fit(df)
    with pytest.raises(ValueError, match=r"user_features is missing column\(s\) \['user_id'\]"):
        Recommender(user_features=users.rename(columns={"user_id": "uid"})).fit(df)
    with pytest.warns(UserWarning, match="do the id types match"):
        Recommender(user_features=users.assign(user_id=["1", "2"]).drop_duplicates("user_id"),
                    model=small(FMClassifier)).fit(df)
    rec = Recommender(target="rating", model=small()).fit(df)
    with pytest.raises(ValueError, match=r"df is missing column\(s\) \['item_id'\]"):
        rec.predict(df[["user_id"]])
    with pytest.raises(ValueError, match="n must be"):
        rec.recommend([1], n=0)
    with pytest.raises(ValueError, match="no context columns"):
        rec.recommend([1], context={"hour": 3})


def test_feature_names_map_design_columns(data):
    rec, _ = build(data, "everything")
    names, groups = rec.feature_names_, rec.feature_groups_
    assert len(names) == rec.model_.n_features_in_
    assert names[groups["context"]].tolist() == [
        "context:device=phone", "context:device=web", "context:hour"]
    assert names[groups["user_id"]][0] == "user:user_id=0"
    assert names[groups["user_features"]].tolist() == ["user:group=g0", "user:group=g1",
                                                       "user:age"]
    assert names[groups["user_implicit"]][0] == "user:implicit_item_id=i0"
    assert names[groups["item_id"]][0] == "item:item_id=i0"
    assert names[groups["item_features"]].tolist() == [
        "item:genres=comedy", "item:genres=drama", "item:genres=kids", "item:genres=war"]
    assert groups["item_features"].stop == len(names)
    # Training entities first (id order), then the ones known only from side features.
    assert rec.users_.tolist() == list(range(N_USERS + 4))
    assert rec.items_.tolist()[-3:] == [f"i{j}" for j in range(N_ITEMS, N_ITEMS + 3)]
    assert rec.seen_.shape == (N_USERS, N_ITEMS)


def test_implicit_rows_weigh_items_by_inverse_sqrt(data):
    rec, df = build(data, "implicit")
    X = rec.dataset_.user_rows([7])[:, rec.dataset_.user_vocab_.widths[0]:].toarray()[0]
    n = df.loc[df["user_id"] == 7, "item_id"].nunique()
    np.testing.assert_allclose(X[X > 0], 1 / np.sqrt(n))
    assert (X > 0).sum() == n


def test_item_implicit_rows_hold_their_users_with_the_weight(data):
    rec, df = build(data, "both_implicit")
    groups = rec.feature_groups_
    assert rec.feature_names_[groups["item_implicit"]][0] == "item:implicit_user_id=0"
    row = rec.dataset_.item_rows(["i3"]).toarray()[0]
    start = groups["item_implicit"].start - groups["item_id"].start
    implicit = row[start:]
    n = df.loc[df["item_id"] == "i3", "user_id"].nunique()
    np.testing.assert_allclose(implicit[implicit > 0], 2.0 / np.sqrt(n))
    assert (implicit > 0).sum() == n
    widths = rec.dataset_.user_vocab_.widths
    user_part = rec.dataset_.user_rows([7]).toarray()[0][widths[0] + widths[1]:]
    assert user_part.max() == pytest.approx(2.0 / np.sqrt((user_part > 0).sum()))


@pytest.mark.parametrize("bad", ["user", 2, "all"])
def test_bad_implicit_values(data, bad):
    with pytest.raises(ValueError, match="implicit must be"):
        Recommender(target="rating", implicit=bad).fit(data[0])
    with pytest.raises(ValueError, match="implicit_weight"):
        Recommender(target="rating", implicit=True, implicit_weight=0).fit(data[0])


def test_partial_fit_new_users_extend_item_implicit_sets(data):
    df = data[0]
    old, new = df[df["user_id"] < 40], df[df["user_id"] >= 40]
    rec = Recommender(target="rating", implicit="both", target_weight=1.0,
                      model=small(solver="sgd", learning_rate=1e-12, n_epochs=2)).fit(old)
    before = dict(zip(rec.feature_names_, rec.model_.w_, strict=True))
    rec.partial_fit(new)
    names = set(rec.feature_names_)
    assert {"user:user_id=45", "item:implicit_user_id=45"} <= names - set(before)
    assert len(rec.feature_names_) == rec.model_.n_features_in_
    out = rec.recommend([45], n=rec.items_.size, exclude_seen=False)
    np.testing.assert_allclose(out["score"], rec.predict(pairs_of(out)), atol=1e-5)


def test_design_blocks_store_each_user_once(data):
    rec, df = build(data, "implicit")
    X, _ = rec.dataset_.training_rows(df)
    users = X.blocks[0]
    assert users.matrix.shape[0] == df["user_id"].nunique()
    assert X.nnz < X.to_csr().nnz / 5


# --------------------------------------------------------------------- implicit feedback
def test_implicit_feedback_negatives_never_seen_and_reproducible(data):
    df = data[0][["user_id", "item_id"]]
    for sampling in ("uniform", "popularity"):
        rec = Recommender(negatives=3, negative_sampling=sampling, random_state=5,
                          model=small(FMClassifier)).fit(df)
        X, y = rec.dataset_.training_rows(df)
        assert (y == 1).sum() == len(df) and (y == 0).sum() == 3 * len(df)
        csr = X.to_csr()
        names = rec.feature_names_
        pairs = [tuple(names[csr.indices[csr.indptr[r]:csr.indptr[r + 1]]]) for r in
                 np.flatnonzero(y == 0)]
        seen = {(f"user:user_id={u}", f"item:item_id={i}")
                for u, i in zip(df["user_id"], df["item_id"], strict=True)}
        assert not any(p in seen for p in pairs)
        again = Recommender(negatives=3, negative_sampling=sampling, random_state=5,
                            model=small(FMClassifier)).fit(df)
        np.testing.assert_array_equal(again.model_.V_, rec.model_.V_)
        np.testing.assert_array_equal(again.dataset_.training_rows(df)[0].to_csr().indices,
                                      csr.indices)
    other = Recommender(negatives=3, random_state=6, model=small(FMClassifier)).fit(df)
    assert (other.dataset_.training_rows(df)[0].to_csr() != X.to_csr()).nnz > 0


def test_sample_negatives_uniform_and_popularity():
    rng = np.random.default_rng(0)
    seen = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0],
                                   [1, 1, 1, 1, 1, 1]], dtype=float))
    src, items = _scoring.sample_negatives(seen, np.array([0, 1, 2, 0]), 50, 6, None, rng)
    users = np.array([0, 1, 2, 0])[src]
    assert not seen[users, items].any()
    assert (users == 2).sum() == 0  # saw everything: no negative rather than a wrong one
    assert set(items[users == 1]) == {5}
    probs = np.array([1.0, 1, 1, 1, 100, 1])
    _, items = _scoring.sample_negatives(seen[:1], np.zeros(200, int), 5, 6, probs, rng)
    assert (items == 4).mean() > 0.8


def test_implicit_feedback_learns_tastes(data):
    df, _, _, user_group, item_group = data
    liked = df[df["rating"] > 3][["user_id", "item_id"]]
    rec = Recommender(random_state=0, model=small(FMClassifier, n_epochs=15)).fit(liked)
    out = rec.recommend(np.arange(N_USERS), n=3)
    hit = item_group[out["item"].str[1:].astype(int)] == user_group[out["user"]]
    assert hit.mean() > 0.8


# ------------------------------------------------------------------------------ fold-in
def test_fold_in_solver_minimizes_the_objective():
    rng = np.random.default_rng(1)
    n, m = 40, 4
    Z, offset = rng.normal(size=(n, m)), rng.normal(size=n)
    group = rng.integers(0, 3, n)
    reg = np.array([0.5, 1.0, 1.0, np.inf])
    for logistic in (False, True):
        y = (rng.random(n) < 0.4).astype(float) if logistic else rng.normal(size=n)
        theta = _scoring.fold_in(Z, offset, y, group, 4, reg, 0.5, logistic)
        assert np.all(theta[3] == 0) and np.all(theta[:, 3] == 0)
        for g in range(3):
            rows, lam = group == g, (group == g).sum() ** 0.5 * reg[:3]

            def objective(t, rows=rows, lam=lam, logistic=logistic, y=y):
                out = offset[rows] + Z[rows, :3] @ t
                loss = (np.logaddexp(0, out) - y[rows] * out if logistic
                        else 0.5 * (out - y[rows]) ** 2)
                return loss.sum() + 0.5 * lam @ t ** 2

            best = minimize(objective, np.zeros(3), method="BFGS", options={"gtol": 1e-10}).x
            np.testing.assert_allclose(theta[g, :3], best, atol=1e-5)


@pytest.mark.parametrize("name", ["plain", "context"])
def test_fold_in_recovers_a_converged_user(data, name):
    """ALS at convergence leaves each user at the minimizer of the objective in its own
    parameters: folding the same interactions in as a new user must land there too."""
    rec, df = build(data, name, model=small(n_epochs=300, reg_linear=1.0))
    ctx = context_of(name)
    hist = df[df["user_id"] == 5].assign(user_id=777)  # with its context columns, if any
    folded = rec.recommend([777], n=N_ITEMS, exclude_seen=False, history=hist, context=ctx)
    trained = rec.recommend([5], n=N_ITEMS, exclude_seen=False, context=ctx)
    merged = folded.merge(trained, on="item")
    np.testing.assert_allclose(merged["score_x"], merged["score_y"], atol=2e-3)
    if name == "context":
        with pytest.raises(ValueError, match=r"missing column\(s\) \['device'\]"):
            rec.recommend([777], history=hist.drop(columns="device"))


def test_fold_in_recovers_a_converged_user_with_side_features(data):
    df, users, items, *_ = data
    users = pd.concat([users, users.iloc[[5]].assign(user_id=999)], ignore_index=True)
    rec = Recommender(target="rating", user_features=users, item_features=items,
                      target_weight=1.0, model=small(n_epochs=300, reg_linear=1.0)).fit(df)
    hist = df[df["user_id"] == 5].assign(user_id=999)
    folded = rec.recommend([999], n=N_ITEMS, exclude_seen=False, history=hist)
    trained = rec.recommend([5], n=N_ITEMS, exclude_seen=False)
    merged = folded.merge(trained, on="item")
    np.testing.assert_allclose(merged["score_x"], merged["score_y"], atol=2e-3)


def test_fold_in_classifier_on_labels_recovers_a_converged_user(data):
    df = data[0].assign(liked=lambda d: np.where(d["rating"] > 3, "yes", "no"))
    rec = Recommender(target="liked", target_weight=1.0,
                      model=small(FMClassifier, n_epochs=300)).fit(df)
    hist = df[df["user_id"] == 8].assign(user_id=-1)
    folded = rec.recommend([-1], n=N_ITEMS, exclude_seen=False, history=hist)
    trained = rec.recommend([8], n=N_ITEMS, exclude_seen=False)
    merged = folded.merge(trained, on="item")
    np.testing.assert_allclose(merged["score_x"], merged["score_y"], atol=2e-3)


def test_fold_in_with_implicit_features_is_exact_algebra(data):
    rec, df = build(data, "everything")
    hist = pd.DataFrame({"user_id": [500, 500, 500, N_USERS + 2],
                         "item_id": ["i1", "i4", "i9", "i2"], "rating": [5.0, 4.0, 1.0, 3.0]})
    ctx = {"hour": 20.0, "device": "web"}
    out = rec.recommend([500, N_USERS + 2], n=N_ITEMS + 3, history=hist, context=ctx)
    assert not set(out.loc[out["user"] == 500, "item"]) & {"i1", "i4", "i9"}
    for user, items in ((500, ["i1", "i4", "i9"]), (N_USERS + 2, ["i2"])):
        got = out[out["user"] == user]
        ds = rec.dataset_
        X = DesignMatrix(ds.context_encoder_.transform(pd.DataFrame([ctx] * len(got))), [
            RelationBlock(ds.user_vocab_.rows([user], [items]), np.zeros(len(got), int)),
            RelationBlock(ds.item_vocab_.rows(got["item"].to_numpy()), np.arange(len(got)))])
        np.testing.assert_allclose(got["score"], rec.model_.predict(X), atol=1e-5)


def test_fold_in_learns_tastes_and_history_forms(data):
    df, _, _, user_group, item_group = data
    liked = df[df["rating"] > 3][["user_id", "item_id"]]
    rec = Recommender(random_state=0, model=small(FMClassifier, n_epochs=15)).fit(liked)
    drama = [f"i{j}" for j in np.flatnonzero(item_group[:N_ITEMS] == 0)[:4]]
    comedy = [f"i{j}" for j in np.flatnonzero(item_group[:N_ITEMS] == 1)[:4]]
    history = {"new_a": drama, "new_b": comedy}
    out = rec.recommend(["new_a", "new_b"], n=5, history=history)
    groups = item_group[out["item"].str[1:].astype(int)]
    assert (groups[out["user"] == "new_a"] == 0).mean() >= 0.8
    assert (groups[out["user"] == "new_b"] == 1).mean() >= 0.8
    assert not set(out["item"]) & set(drama + comedy)
    frame = pd.DataFrame([(u, i) for u, its in history.items() for i in its],
                         columns=["user_id", "item_id"])
    same = rec.recommend(["new_a", "new_b"], n=5, history=frame)
    pd.testing.assert_frame_equal(out, same)
    with pytest.raises(ValueError, match="has not been trained on; 3 are"):
        rec.recommend([3], history={3: ["i1"]})


def test_fold_in_needs_the_target_of_a_rating_model(data):
    rec, _ = build(data, "plain")
    with pytest.raises(ValueError, match="needs the target column 'rating'"):
        rec.recommend(["x"], history={"x": ["i1"]})


# --------------------------------------------------------------------------- similarity
def test_similar_items_and_users(data):
    rec, _ = build(data, "side")
    out = rec.similar_items("i3", n=4)
    assert list(out.columns) == ["item", "similar_item", "score", "rank"]
    assert "i3" not in set(out["similar_item"]) and len(out) == 4
    keys = rec.items_
    [(_, parts)] = rec._parts()
    q = part_terms(rec.dataset_.item_vocab_.rows(keys), *parts["item"])[1]
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    cos = q @ q[list(keys).index("i3")]
    np.testing.assert_allclose(out["score"], np.sort(cos)[::-1][1:5], atol=1e-9)
    users = rec.similar_users([1, 2], n=3)
    assert list(users.columns) == ["user", "similar_user", "score", "rank"]
    assert users["user"].tolist() == [1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="unknown item"):
        rec.similar_items("nope")


# ------------------------------------------------------------------------- partial_fit
def test_partial_fit_grows_model_in_place(data):
    df = data[0]
    old, new = df[df["user_id"] < 40], df[df["user_id"] >= 40]
    rec = Recommender(target="rating", implicit=True, context=["device"],
                      model=small(solver="sgd", learning_rate=1e-12, n_epochs=2)).fit(old)
    before = dict(zip(rec.feature_names_, rec.model_.w_, strict=True))
    V_before = dict(zip(rec.feature_names_, rec.model_.V_, strict=True))
    new = new.assign(item_id=new["item_id"].where(new.index % 5 > 0, "brand_new"),
                     device=new["device"].where(new.index % 7 > 0, "tv"))
    rec.partial_fit(new)
    after = dict(zip(rec.feature_names_, rec.model_.w_, strict=True))
    assert len(rec.feature_names_) == rec.model_.n_features_in_ == len(after)
    assert {"user:user_id=45", "item:item_id=brand_new", "context:device=tv",
            "user:implicit_item_id=brand_new"} <= set(after) - set(before)
    # A vanishing learning rate: every old parameter is where it was, under its own name.
    for name, w in before.items():
        assert after[name] == pytest.approx(w, abs=1e-6)
        np.testing.assert_allclose(
            rec.model_.V_[list(rec.feature_names_).index(name)], V_before[name], atol=1e-6)
    assert rec.seen_.shape == (N_USERS, rec.dataset_.item_vocab_.widths[0])
    assert rec.popularity_.sum() == len(df)


@pytest.mark.parametrize("solver", ["sgd", "als"])
def test_partial_fit_unrelated_batch_leaves_old_predictions(data, solver):
    df = data[0]
    item = df["item_id"].str[1:].astype(int)
    old = df[(df["user_id"] < 45) & (item < 30)]
    new = df[(df["user_id"] >= 45) & (item >= 30)]  # new users on new items only
    rec = Recommender(target="rating", model=small(solver=solver, n_epochs=20),
                      random_state=0).fit(old)
    before = rec.predict(old)
    rec.partial_fit(new, n_epochs=5)
    change = np.abs(rec.predict(old) - before)
    print(f"{solver}: old predictions moved by {change.max():.4f} at most")
    assert change.max() < 0.05


def test_partial_fit_learns_new_users(data):
    df, _, _, user_group, item_group = data
    old, new = df[df["user_id"] < 45], df[df["user_id"] >= 45]
    model = small(solver="sgd", n_epochs=30, learning_rate=0.1)
    rec = Recommender(target="rating", model=model, random_state=0).fit(old)
    with pytest.raises(ValueError, match="unknown user"):
        rec.recommend([50])
    before = rec.predict(old)
    rec.partial_fit(new, n_epochs=10)
    assert np.abs(rec.predict(old) - before).mean() < 0.15
    out = rec.recommend(np.arange(45, N_USERS), n=3)  # new users: recommendable, learned
    hit = item_group[out["item"].str[1:].astype(int)] == user_group[out["user"]]
    assert hit.mean() >= 0.8


def test_partial_fit_new_item_becomes_recommendable(data):
    df = data[0]
    rec = Recommender(target="rating", model=small(solver="sgd", n_epochs=20),
                      random_state=0).fit(df)
    batch = pd.DataFrame({"user_id": [1, 2, 3, 4], "item_id": ["fresh"] * 4,
                          "rating": [5.0] * 4})
    rec.partial_fit(batch, n_epochs=20)
    assert "fresh" in set(rec.recommend([7, 8], n=N_ITEMS + 1)["item"])
    assert "fresh" not in set(rec.recommend([1], n=N_ITEMS + 1)["item"])  # now seen
    with pytest.raises(ValueError, match="n_epochs must be"):
        rec.partial_fit(batch, n_epochs=0)


def test_partial_fit_on_unfitted_is_fit(data):
    df = data[0]
    a = Recommender(target="rating", model=small()).partial_fit(df)
    b = Recommender(target="rating", model=small()).fit(df)
    np.testing.assert_array_equal(a.model_.V_, b.model_.V_)


# ---------------------------------------------------------------------------- save/load
@pytest.mark.parametrize("name", ["plain", "everything", "both_implicit", "implicit_feedback",
                                  "labels"])
def test_save_load_round_trip(data, name, tmp_path):
    rec, df = build(data, name)
    path = tmp_path / "rec.npz"
    rec.save(path)
    loaded = load_model(path)
    assert type(loaded) is Recommender
    ctx = context_of(name)
    users = np.arange(N_USERS)
    pd.testing.assert_frame_equal(loaded.recommend(users, n=5, context=ctx),
                                  rec.recommend(users, n=5, context=ctx))
    np.testing.assert_array_equal(loaded.feature_names_, rec.feature_names_)
    np.testing.assert_array_equal(loaded.predict(df), rec.predict(df))
    hist = pd.DataFrame({"user_id": [-5, -5], "item_id": ["i1", "i2"], "rating": [5.0, 1.0],
                         "liked": ["yes", "no"]})
    pd.testing.assert_frame_equal(loaded.recommend([-5], history=hist, context=ctx),
                                  rec.recommend([-5], history=hist, context=ctx))
    with np.load(path, allow_pickle=False) as npz:  # no object arrays anywhere
        assert all(npz[k].dtype.kind in "biufU" for k in npz.files)
    # Training continues from the loaded state.
    loaded.partial_fit(df.iloc[:50])
    assert loaded.model_.n_features_in_ == len(loaded.feature_names_)


def test_damaged_recommender_file(data, tmp_path):
    rec, _ = build(data, "side")
    rec.save(tmp_path / "rec.npz")
    with np.load(tmp_path / "rec.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "users.ids.vocab_0"}
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(ValueError, match="is damaged"):
        load_model(tmp_path / "broken.npz")


def test_save_before_fit_fails(tmp_path):
    with pytest.raises(NotFittedError):
        Recommender().save(tmp_path / "x.npz")


# ----------------------------------------------------------------------------- MovieLens
@pytest.fixture(scope="module")
def movielens(ml100k_dir):
    train, test = load_ml100k_split("u1", ml100k_dir)
    return pd.concat([train, test], ignore_index=True)


def item_bias_order(rec: Recommender) -> np.ndarray:
    """Items by the item part t_i of recommend's score alone (no user vector): what the
    fitted model ranks before it knows anything of the user."""
    g = rec.feature_groups_
    span = slice(g["item_id"].start, g["item_implicit"].stop)
    rows = rec.dataset_.item_rows(rec.items_)

    def t(model):
        return part_terms(rows, model.w_[span].astype(float), model.V_[span].astype(float))[0]

    if rec.ranker_ is None:
        bias = t(rec.model_)
    else:
        (_, std_m), (_, std_r) = rec.score_scale_
        alpha = rec.target_weight
        bias = alpha * t(rec.model_) / std_m + (1 - alpha) * t(rec.ranker_) / std_r
    return rec.items_[np.argsort(-bias, kind="stable")]


def top_except(order, users, known: set, n: int = 10) -> pd.DataFrame:
    """The first ``n`` items of ``order`` for each user, leaving out their ``known`` pairs."""
    rows = []
    for u in users:
        top = [i for i in order[:n + 10] if (u, i) not in known][:n]
        rows += [(u, i, r + 1) for r, i in enumerate(top)]
    return pd.DataFrame(rows, columns=["user", "item", "rank"])


@pytest.mark.parametrize("target", [None, "rating"])
def test_movielens_fold_in_beats_popularity(movielens, target):
    """100 users held out of training entirely; each is folded in from their first 5
    interactions (and, for the rating Recommender, their ratings) and scored on the rest of
    their interactions rated >= 4. The default models.

    Measured (seed 0), NDCG@10: implicit-feedback Recommender() 0.3840 (the FMRanker's user
    folded in by BPR), rating Recommender 0.4104 (the MCMC regressor folded in per sample,
    blended with the ranker's); popularity 0.3322; the bias-only order 0.3724 and 0.3694
    (``python benchmarks/bench_topn.py foldin``). Issue 14 asks for popularity + 0.05 and
    more than the bias-only order; at the previous FMRanker defaults (32 factors, penalties
    0.01) the implicit-feedback fold-in reached only 0.3563.
    """
    rng = np.random.default_rng(0)
    held = rng.choice(movielens["user_id"].unique(), 100, replace=False)
    train = movielens[~movielens["user_id"].isin(held)]
    held_out = movielens[movielens["user_id"].isin(held)].sort_values(
        ["user_id", "timestamp"], kind="stable")
    first = held_out.groupby("user_id").head(5)
    relevant = held_out.drop(first.index).query("rating >= 4").rename(
        columns={"user_id": "user", "item_id": "item"})
    cols = ["user_id", "item_id"] + ([target] if target else [])
    rec = Recommender(target=target, random_state=0).fit(train[cols])
    out = rec.recommend(held, n=10, history=first[cols])
    ndcg = ranking_metrics(out, relevant, k=10)["ndcg@10"]
    known = set(zip(first["user_id"], first["item_id"], strict=True))
    popular = rec.items_[np.argsort(-rec.popularity_, kind="stable")]
    ndcg_pop = ranking_metrics(top_except(popular, held, known), relevant, k=10)["ndcg@10"]
    ndcg_bias = ranking_metrics(top_except(item_bias_order(rec), held, known), relevant,
                                k=10)["ndcg@10"]
    print(f"target={target}: fold-in NDCG@10 {ndcg:.4f}, popularity {ndcg_pop:.4f}, "
          f"bias-only {ndcg_bias:.4f}")
    assert ndcg >= ndcg_pop + 0.05 and ndcg > ndcg_bias + 0.01


def test_movielens_recommend_all_users(movielens):
    """Top-10 for every MovieLens user at once (the time is printed; speed goals live in
    benchmarks/, not in tests): ten unseen items each."""
    rec = Recommender(target="rating", implicit=True, random_state=0,
                      model=FMRegressor(n_factors=16, n_epochs=3, random_state=0))
    rec.fit(movielens)
    users = movielens["user_id"].unique()
    start = time.perf_counter()
    out = rec.recommend(users, n=10)
    print(f"top-10 for {len(users)} users over {movielens['item_id'].nunique()} items: "
          f"{time.perf_counter() - start:.3f} s")
    assert out.groupby("user").size().eq(10).all() and out["user"].nunique() == len(users)
    seen = set(zip(movielens["user_id"], movielens["item_id"], strict=True))
    assert not any(pair in seen for pair in zip(out["user"], out["item"], strict=True))


# -------------------------------------------------------------------------------- MCMC
def mcmc(cls=FMRegressor, **kw):
    return cls(**{"n_factors": 4, "solver": "mcmc", "n_epochs": 12, "n_burn_in": 4,
                  "random_state": 0, **kw})


@pytest.mark.parametrize("name", ["plain", "everything", "both_implicit"])
def test_mcmc_recommend_averages_the_samples_like_predict(data, name):
    rec, _ = build(data, name, model=mcmc())
    assert len(rec.model_.samples_V_) == 8
    ctx = context_of(name)
    users = np.arange(N_USERS)
    out = rec.recommend(users, n=N_ITEMS, exclude_seen=False, context=ctx)
    np.testing.assert_allclose(out["score"], rec.predict(pairs_of(out, ctx)), rtol=0, atol=1e-5)
    # Not the last sample's scores: those differ.
    last = rec.model_.V_
    assert not np.allclose(rec.model_.samples_V_.mean(axis=0), last)


def test_mcmc_groups_are_the_encoder_fields(data):
    rec, _ = build(data, "everything", model=mcmc())
    groups = rec.model_.groups
    assert len(groups) == len(rec.feature_names_)
    # context hour, device; user id, group, age; user implicit; item id, genres.
    assert len(np.unique(groups)) == 8
    names = rec.feature_names_
    for prefix in ("context:device=", "user:group=", "item:genres=", "user:implicit_item_id="):
        at = [i for i, n in enumerate(names) if n.startswith(prefix)]
        assert len(at) > 1 and len(set(groups[at])) == 1, prefix
    assert groups[list(names).index("user:user_id=0")] != groups[
        list(names).index("item:item_id=i0")]
    # A user-given grouping is kept.
    own = np.zeros(len(names), dtype=int)
    rec2, _ = build(data, "everything", model=mcmc(groups=own))
    assert (rec2.model_.groups == own).all()


@pytest.mark.parametrize("cls", [FMRegressor, FMClassifier])
def test_mcmc_fold_in_learns_the_new_users_taste(data, cls):
    """A model fitted by MCMC folds a new user in per sample, under the prior that sample's
    trained users' id parameters imply: a user who loves one item cluster and hates the
    other gets the loved cluster's other items first (the data's two clusters)."""
    df, *_, item_group = data
    model = mcmc(cls, n_epochs=60, n_burn_in=20)  # more sweeps to learn the two clusters
    rec, _ = build(data, "plain", model=model, target="liked" if cls is FMClassifier
                   else "rating")
    ids = np.array([f"i{j}" for j in range(N_ITEMS)])
    for loved in (0, 1):
        liked = ids[item_group[:N_ITEMS] == loved][:5]
        hated = ids[item_group[:N_ITEMS] != loved][:5]
        hist = pd.DataFrame({"user_id": -5, "item_id": np.r_[liked, hated],
                             "rating": np.r_[np.full(5, 5.0), np.full(5, 1.0)]})
        hist["liked"] = np.where(hist["rating"] > 3, "yes", "no")
        out = rec.recommend([-5], history=hist, n=10)
        assert not set(out["item"]) & set(hist["item_id"])
        top = item_group[[int(i[1:]) for i in out["item"]]]
        assert (top == loved).mean() >= 0.8, (loved, top)
    assert np.isfinite(out["score"]).all()


def test_mcmc_fold_in_through_implicit_user_features(data):
    hist = pd.DataFrame({"user_id": [-5, -5], "item_id": ["i1", "i2"], "rating": [5.0, 1.0]})
    rec, _ = build(data, "implicit", model=mcmc())
    out = rec.recommend([-5], history=hist, n=3)
    assert len(out) == 3 and not set(out["item"]) & {"i1", "i2"}


def test_mcmc_classifier_scores_are_probit_of_the_mean(data):
    rec, df = build(data, "labels", model=mcmc(FMClassifier))
    out = rec.recommend(np.arange(N_USERS), n=N_ITEMS, exclude_seen=False)
    X = rec.dataset_.design(out["user"].to_numpy(), out["item"].to_numpy(), None)
    from scipy.special import ndtr

    mean_raw = np.mean([rec.model_.samples_w0_[s] + _raw_of_sample(rec.model_, X, s)
                        for s in range(len(rec.model_.samples_w0_))], axis=0)
    np.testing.assert_allclose(out["score"], ndtr(mean_raw), atol=1e-5)
    # predict averages Φ over the samples instead: close, and ranked almost alike.
    p = rec.predict(pairs_of(out))
    assert np.corrcoef(p, out["score"])[0, 1] > 0.99


def _raw_of_sample(model, X, s):
    """ŷ − w0 of sample s, from the materialized rows (shares no code with _scoring)."""
    Xc = X.to_csr().astype(np.float64)
    w, V = model.samples_w_[s].astype(np.float64), model.samples_V_[s].astype(np.float64)
    q = Xc @ V
    return Xc @ w + 0.5 * (q * q - Xc.multiply(Xc) @ (V * V)).sum(axis=1)


def test_mcmc_recommender_save_load_and_similar(data, tmp_path):
    rec, df = build(data, "everything", model=mcmc())
    rec.save(tmp_path / "rec.npz")
    loaded = load_model(tmp_path / "rec.npz")
    np.testing.assert_array_equal(loaded.predict(df), rec.predict(df))
    ctx = context_of("everything")
    pd.testing.assert_frame_equal(loaded.recommend(np.arange(5), n=4, context=ctx),
                                  rec.recommend(np.arange(5), n=4, context=ctx))
    similar = rec.similar_items("i0", n=5)
    assert len(similar) == 5 and "i0" not in set(similar["similar_item"])
    pd.testing.assert_frame_equal(loaded.similar_items("i0", n=5), similar)


# ---------------------------------------------------------------------------- FMRanker
def ranker(**kw):
    from fmrec.models.ranker import FMRanker

    return FMRanker(**{"n_factors": 8, "n_epochs": 15, "random_state": 0, **kw})


@pytest.mark.parametrize("side,implicit", [(False, False), (True, False), (True, "both")])
def test_ranker_recommend_equals_predict_and_learns_tastes(data, side, implicit):
    df, users, items, user_group, item_group = data
    liked = df[df["rating"] > 3][["user_id", "item_id"]]
    kw = {"user_features": users, "item_features": items} if side else {}
    rec = Recommender(random_state=0, model=ranker(), implicit=implicit, **kw).fit(liked)
    out = rec.recommend(np.arange(N_USERS), n=3)
    hit = item_group[out["item"].str[1:].astype(int)] == user_group[out["user"]]
    assert hit.mean() > 0.8
    pairs = set(zip(out["user"], out["item"], strict=True))
    assert not pairs & set(zip(liked["user_id"], liked["item_id"], strict=True))
    full = rec.recommend(np.arange(N_USERS), n=N_ITEMS, exclude_seen=False)
    np.testing.assert_allclose(full["score"], rec.predict(pairs_of(full)), atol=1e-5)
    # The ranker sees every user's and item's row once, in the design's columns.
    assert rec.model_.n_features_in_ == len(rec.feature_names_)


def test_ranker_errors_and_fold_in(data):
    df, *_ = data
    liked = df[df["rating"] > 3]
    with pytest.raises(ValueError, match="target must be None"):
        Recommender(target="rating", model=ranker()).fit(liked)
    with pytest.raises(ValueError, match="context"):
        Recommender(context="device", model=ranker()).fit(liked)
    rec = Recommender(model=ranker(), random_state=0).fit(liked[["user_id", "item_id"]])
    with pytest.raises(ValueError, match="partial_fit"):
        rec.partial_fit(liked[["user_id", "item_id"]].head())
    # Folded in by BPR, or through implicit user features.
    assert len(rec.recommend([-5], history={-5: ["i1", "i2"]}, n=3)) == 3
    rec = Recommender(model=ranker(), implicit="users", random_state=0).fit(
        liked[["user_id", "item_id"]])
    assert len(rec.recommend([-5], history={-5: ["i1", "i2"]}, n=3)) == 3


def test_ranker_recommender_save_load(data, tmp_path):
    df, users, items, *_ = data
    liked = df[df["rating"] > 3][["user_id", "item_id"]]
    rec = Recommender(model=ranker(), user_features=users, random_state=0).fit(liked)
    rec.save(tmp_path / "r.npz")
    loaded = load_model(tmp_path / "r.npz")
    assert type(loaded.model_).__name__ == "FMRanker"
    pd.testing.assert_frame_equal(loaded.recommend(np.arange(10), n=5),
                                  rec.recommend(np.arange(10), n=5))
    assert len(loaded.model_.history_["train_loss"]) == 15
    assert loaded.model_.history_["train_loss"] == pytest.approx(rec.model_.history_["train_loss"])


# ------------------------------------------------------------ failures change nothing
def _snapshot(rec):
    """What a caller can observe of a fitted recommender."""
    return (list(rec.feature_names_), rec.seen_.toarray(), rec.model_.V_.copy(),
            rec.recommend(rec.users_[:5], n=5))


def _assert_unchanged(rec, before):
    names, seen, V, lists = before
    assert list(rec.feature_names_) == names
    np.testing.assert_array_equal(rec.seen_.toarray(), seen)
    np.testing.assert_array_equal(rec.model_.V_, V)
    pd.testing.assert_frame_equal(rec.recommend(rec.users_[:5], n=5), lists)


@pytest.mark.parametrize("target_weight", [1.0, 0.3])
def test_a_failed_partial_fit_changes_nothing(data, target_weight):
    """A batch that fails after its new user and item were taken in (an infinite value in a
    context column) leaves the vocabulary, the seen matrix, the model and the ranker as
    they were (issue 15: they used to stay in the vocabulary)."""
    rec, df = build(data, "context", model=small(solver="sgd"), target_weight=target_weight)
    before = _snapshot(rec)
    batch = df.iloc[:3].assign(user_id=[999, 999, 0], item_id=["i999", "i1", "i998"])
    batch.loc[batch.index[2], "hour"] = np.inf
    with pytest.raises(ValueError, match="hour"):
        rec.partial_fit(batch)
    _assert_unchanged(rec, before)
    # The same batch without the bad row goes in, and grows the model.
    rec.partial_fit(batch.iloc[:2])
    assert len(rec.feature_names_) > len(before[0])


def test_a_failed_fit_keeps_the_fitted_recommender(data):
    rec, df = build(data, "side")
    before = _snapshot(rec)
    with pytest.raises(ValueError, match="rating"):
        rec.fit(df.assign(rating=np.where(np.arange(len(df)) == 7, np.nan, df["rating"])))
    _assert_unchanged(rec, before)
