"""fmrec.dask.DaskRecommender: a Recommender fitted from a Dask DataFrame on a LocalCluster."""

import numpy as np
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import pandas as pd  # noqa: E402

from fmrec import FMClassifier, FMRegressor, Recommender, load_model  # noqa: E402
from fmrec.dask import DaskRecommender  # noqa: E402
from fmrec.datasets import load_movielens, make_recsys  # noqa: E402
from fmrec.metrics import rmse  # noqa: E402


@pytest.fixture(scope="module")
def client(dask_client):
    return dask_client


@pytest.fixture(scope="module")
def recsys():
    return make_recsys(n_users=120, n_items=80, n_interactions=3000, random_state=0)


def settings(data, **model):
    return {"target": "rating", "user_features": data.users, "item_features": data.items,
            "context": ["device"], "implicit": "users", "random_state": 0,
            "model": FMRegressor(n_factors=4, solver="sgd", n_epochs=15, **model)}


@pytest.fixture(scope="module")
def fitted(client, recsys):
    frame = dd.from_pandas(recsys.interactions, npartitions=4)
    return DaskRecommender(**settings(recsys), client=client).fit(frame)


def test_learns_what_the_in_memory_recommender_learns(fitted, recsys):
    local = Recommender(**settings(recsys)).fit(recsys.interactions)
    np.testing.assert_array_equal(fitted.feature_names_, local.feature_names_)
    assert fitted.feature_groups_ == local.feature_groups_
    np.testing.assert_array_equal(fitted.users_, local.users_)
    np.testing.assert_array_equal(fitted.items_, local.items_)
    assert (fitted.seen_ != local.seen_).nnz == 0
    np.testing.assert_array_equal(fitted.popularity_, local.popularity_)
    truth = recsys.truth["noise_free"]
    assert rmse(truth, fitted.predict(recsys.interactions)) < rmse(truth, np.full_like(
        truth, truth.mean()))


def test_is_an_ordinary_recommender_that_saves_and_loads(fitted, recsys, tmp_path):
    local = fitted.to_local()
    assert type(local) is Recommender and type(local.model_) is FMRegressor
    assert "client" not in local.get_params()
    fitted.save(tmp_path / "rec.npz")
    loaded = load_model(tmp_path / "rec.npz")
    assert type(loaded) is Recommender
    sample = recsys.interactions.head(50)
    np.testing.assert_allclose(loaded.predict(sample), fitted.predict(sample), rtol=1e-6)
    pd.testing.assert_frame_equal(loaded.recommend([1, 2], n=5), fitted.recommend([1, 2], n=5))


def test_predict_and_recommend_run_per_partition(fitted, recsys):
    rows = recsys.interactions.head(200)
    lazy = fitted.predict(dd.from_pandas(rows, npartitions=3))
    assert isinstance(lazy, dd.Series) and lazy.npartitions == 3
    np.testing.assert_allclose(lazy.compute().to_numpy(), fitted.predict(rows), rtol=1e-6)
    users = pd.Series([1, 2, 3, 5, 8, 13], name="user_id")
    lists = fitted.recommend(dd.from_pandas(users, npartitions=2), n=4,
                             context={"device": recsys.interactions["device"].iloc[0]})
    assert isinstance(lists, dd.DataFrame)
    expected = fitted.recommend(users.to_numpy(), n=4,
                                context={"device": recsys.interactions["device"].iloc[0]})
    pd.testing.assert_frame_equal(lists.compute().reset_index(drop=True), expected)


def test_classifier_target(client, recsys):
    frame = recsys.interactions.assign(liked=np.where(recsys.interactions["rating"] >= 3.5,
                                                      "yes", "no"))
    rec = DaskRecommender(target="liked", random_state=0, client=client,
                          model=FMClassifier(n_factors=4, solver="sgd", n_epochs=10)).fit(
        dd.from_pandas(frame, npartitions=3))
    assert type(rec.model_) is FMClassifier
    assert rec.model_.classes_.tolist() == ["no", "yes"]
    p = rec.predict(frame.head(300))
    assert ((p > 0.5) == (frame["liked"].head(300) == "yes")).mean() > 0.6


def test_bad_input_is_refused_and_keeps_the_fitted_state(fitted, client, recsys):
    frame = recsys.interactions
    before = fitted.model_.V_.copy()
    with pytest.raises(ValueError, match="needs a target"):
        DaskRecommender(client=client).fit(dd.from_pandas(frame, npartitions=2))
    with pytest.raises(ValueError, match="solver must be 'sgd'"):
        DaskRecommender(target="rating", client=client, model=FMRegressor()).fit(
            dd.from_pandas(frame, npartitions=2))
    with pytest.raises(TypeError, match="dask DataFrame"):
        DaskRecommender(target="rating", client=client).fit(frame)
    with pytest.raises(ValueError, match=r"no column\(s\) \['device'\]"):
        fitted.fit(dd.from_pandas(frame.drop(columns="device"), npartitions=2))
    broken = frame.astype({"user_id": float})
    broken.loc[2500, "user_id"] = np.nan
    with pytest.raises(ValueError, match="partition 3: column 'user_id' has 1 missing"):
        fitted.fit(dd.from_pandas(broken, npartitions=4))
    np.testing.assert_array_equal(fitted.model_.V_, before)
    assert fitted.predict(frame.head(3)).shape == (3,)


def test_movielens_side_features_match_the_in_memory_recommender(client, ml100k_dir):
    data = load_movielens("100k", ml100k_dir, download=False)
    train, test = data.splits["u1"]
    train = train.sample(frac=1.0, random_state=0).reset_index(drop=True)
    kw = {"target": "rating", "random_state": 0,
          "user_features": data.users[["user_id", "age", "gender", "occupation"]],
          "item_features": data.items[["item_id", "genres"]],
          "model": FMRegressor(n_factors=8, solver="sgd", n_epochs=40, learning_rate=0.02,
                               reg_linear=0.1, reg_factors=1.0, init_std=0.01)}
    local = Recommender(**kw).fit(train)
    rec = DaskRecommender(**kw, client=client).fit(dd.from_pandas(train, npartitions=8))
    local_rmse = rmse(test["rating"], local.predict(test))
    dask_rmse = rmse(test["rating"], rec.predict(test))
    print(f"u1.test RMSE with side features, 40 epochs/rounds: in memory {local_rmse:.4f}, "
          f"Dask (2 workers, average) {dask_rmse:.4f}")
    assert dask_rmse <= 1.01 * local_rmse
