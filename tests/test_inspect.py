"""fmrec.inspect: cosine neighbours of factor vectors, checked against V_ directly, and the
claim users rely on: features that interact end up with aligned factor vectors."""


import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from fmrec import FMClassifier, FMRegressor, Recommender
from fmrec.datasets import load_movielens
from fmrec.inspect import most_similar, similarity_matrix

N_FEATURES = 12
NAMES = [f"color={c}" for c in "abcd"] + [f"size={s}" for s in "smlx"] + \
    [f"shape={s}" for s in "pqrt"]


def direct_cosine(V, i, j):
    a, b = V[i].astype(np.float64), V[j].astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))


@pytest.fixture(scope="module")
def model():
    X = sp.random(400, N_FEATURES, density=0.3, format="csr", random_state=0)
    y = np.asarray(X.sum(axis=1)).ravel() + X[:, 0].toarray().ravel() * X[:, 5].toarray().ravel()
    model = FMRegressor(n_factors=4, n_epochs=10, random_state=0).fit(X, y)
    model.V_[7] = 0  # an unused feature
    return model


def test_most_similar_is_cosine_of_V_rows(model):
    out = most_similar(model, "color=a", n=20, feature_names=NAMES)
    assert list(out.columns) == ["feature", "similarity", "rank"]
    assert len(out) == N_FEATURES - 1 and "color=a" not in set(out["feature"])
    assert out["rank"].tolist() == list(range(1, N_FEATURES))
    assert out["similarity"].is_monotonic_decreasing
    for name, sim in zip(out["feature"], out["similarity"], strict=True):
        assert sim == pytest.approx(direct_cosine(model.V_, 0, NAMES.index(name)), abs=1e-6)
    # The unused feature has no direction: similarity 0, not NaN.
    assert out.set_index("feature").loc["size=x", "similarity"] == 0
    assert not out["similarity"].isna().any()


def test_query_by_index_without_names_and_n(model):
    out = most_similar(model, 3, n=4)
    assert len(out) == 4 and 3 not in set(out["feature"])
    sims = [direct_cosine(model.V_, 3, j) for j in range(N_FEATURES) if j != 3]
    assert out["similarity"].to_numpy() == pytest.approx(sorted(sims, reverse=True)[:4],
                                                         abs=1e-6)
    zero = most_similar(model, 7, n=3)
    assert (zero["similarity"] == 0).all()


def test_field_restricts_candidates(model):
    out = most_similar(model, "color=a", n=10, field="size", feature_names=NAMES)
    assert sorted(out["feature"]) == ["size=l", "size=m", "size=s", "size=x"]
    same = most_similar(model, "color=a", n=10, field="color", feature_names=NAMES)
    assert sorted(same["feature"]) == ["color=b", "color=c", "color=d"]
    explicit = most_similar(model, 0, field=[1, 2, 9])
    assert set(explicit["feature"]) == {1, 2, 9}
    assert set(most_similar(model, 0, field=slice(8, 12))["feature"]) == {8, 9, 10, 11}


def test_errors_name_the_feature_and_suggest(model):
    with pytest.raises(ValueError, match=r"unknown feature 'colour=a'.*did you mean 'color=a'"):
        most_similar(model, "colour=a", feature_names=NAMES)
    with pytest.raises(ValueError, match="no feature names"):
        most_similar(model, "color=a")
    with pytest.raises(ValueError, match="out of range"):
        most_similar(model, 99)
    with pytest.raises(ValueError, match="unknown field 'weight'"):
        most_similar(model, 0, field="weight", feature_names=NAMES)
    with pytest.raises(ValueError, match="n must be"):
        most_similar(model, 0, n=0)
    with pytest.raises(ValueError, match="has 3 names"):
        most_similar(model, 0, feature_names=NAMES[:3])
    with pytest.raises(ValueError, match="unknown feature 'nope'"):
        similarity_matrix(model, ["color=a", "nope"], feature_names=NAMES)


def test_unfitted_model_is_refused():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        most_similar(FMRegressor(), 0)
    with pytest.raises(NotFittedError):
        most_similar(Recommender(), 0)


def test_similarity_matrix_is_pairwise_cosine(model):
    feats = ["size=x", "color=a", "shape=p", "size=s"]
    S = similarity_matrix(model, feats, feature_names=NAMES)
    assert S.index.tolist() == feats and S.columns.tolist() == feats
    for a in feats:
        for b in feats:
            expected = direct_cosine(model.V_, NAMES.index(a), NAMES.index(b))
            assert S.loc[a, b] == pytest.approx(expected, abs=1e-6)
    assert np.allclose(S.to_numpy(), S.to_numpy().T)
    assert S.loc["size=x", "size=x"] == 0  # zero vector: no direction
    by_index = similarity_matrix(model, [7, 0, 8, 4])
    assert np.allclose(by_index.to_numpy(), S.to_numpy())


def test_recommender_names_and_groups():
    ratings = pd.DataFrame({"user_id": [1, 1, 2, 2, 3, 3, 4], "item_id": [10, 20, 10, 30, 20,
                                                                          30, 40],
                            "rating": [5.0, 3.0, 4.0, 2.0, 4.0, 1.0, 3.0]})
    items = pd.DataFrame({"item_id": [10, 20, 30, 40],
                          "genres": [["Comedy"], ["Drama"], ["Comedy", "Drama"], ["Horror"]]})
    rec = Recommender(target="rating", item_features=items,
                      model=FMRegressor(n_factors=3, n_epochs=5), random_state=0).fit(ratings)
    out = most_similar(rec, "item:item_id=10", n=10, field="item_id")
    assert set(out["feature"]) == {"item:item_id=20", "item:item_id=30", "item:item_id=40"}
    V, names = rec.model_.V_, list(rec.feature_names_)
    for name, sim in zip(out["feature"], out["similarity"], strict=True):
        expected = direct_cosine(V, names.index("item:item_id=10"), names.index(name))
        assert sim == pytest.approx(expected, abs=1e-6)
    genres = most_similar(rec, "item:item_id=10", field="item:genres")
    assert genres["feature"].str.startswith("item:genres=").all() and len(genres) >= 3
    users = most_similar(rec, "user:user_id=1", field="user_id")
    assert set(users["feature"]) == {"user:user_id=2", "user:user_id=3", "user:user_id=4"}
    with pytest.raises(ValueError, match="did you mean 'item:item_id=10'"):
        most_similar(rec, "item:item_id=1O")


# ----------------------------------------------------------------------- planted interactions
def planted_pairs_data(n_rows=6000, n_features=200, n_pairs=10, noise=0.05, seed=0):
    """Rows of 2-4 active features; y = 1 exactly when a planted pair (a, b) co-occurs,
    then 5% of labels flipped. 30% of rows hold one half of a pair without the other, so
    the linear weights alone cannot separate the classes: only the interaction can."""
    rng = np.random.default_rng(seed)
    pairs = rng.permutation(n_features)[:2 * n_pairs].reshape(n_pairs, 2)
    partner = {int(a): int(b) for a, b in pairs} | {int(b): int(a) for a, b in pairs}
    rows, y = [], []
    for _ in range(n_rows):
        size = int(rng.integers(2, 5))
        kind = rng.random()
        if kind < 0.4:
            cols = {int(c) for c in pairs[rng.integers(n_pairs)]}
        elif kind < 0.7:
            cols = {int(pairs[rng.integers(n_pairs), rng.integers(2)])}
        else:
            cols = set()
        while len(cols) < size:
            c = int(rng.integers(n_features))
            if partner.get(c) not in cols:  # fillers never complete a second pair
                cols.add(c)
        rows.append(sorted(cols))
        y.append(int(any(partner.get(c) in cols for c in cols)))
    y = np.array(y)
    flip = rng.random(n_rows) < noise
    y[flip] = 1 - y[flip]
    indptr = np.cumsum([0] + [len(r) for r in rows])
    X = sp.csr_matrix((np.ones(indptr[-1]), np.concatenate(rows), indptr),
                      shape=(n_rows, n_features))
    return X, y, pairs


def test_planted_pairs_have_aligned_factor_vectors():
    X, y, pairs = planted_pairs_data()
    clf = FMClassifier(n_factors=8, n_epochs=30, random_state=0).fit(X, y)
    n = X.shape[1]
    S = similarity_matrix(clf, range(n)).to_numpy()
    V = clf.V_.astype(np.float64)
    planted = set(map(tuple, np.sort(pairs, axis=1).tolist()))
    rng = np.random.default_rng(1)
    i, j = rng.integers(n, size=(2, 3000))
    keep = np.array([a != b and (min(a, b), max(a, b)) not in planted
                     for a, b in zip(i, j, strict=True)])
    i, j = i[keep], j[keep]
    cos_planted, cos_random = S[pairs[:, 0], pairs[:, 1]], S[i, j]
    dot_planted = np.einsum("ij,ij->i", V[pairs[:, 0]], V[pairs[:, 1]])
    dot_random = np.einsum("ij,ij->i", V[i], V[j])
    print(f"\nplanted pairs: cosine mean {cos_planted.mean():.3f} (min {cos_planted.min():.3f}), "
          f"inner product mean {dot_planted.mean():.3f}; random pairs: cosine mean "
          f"{cos_random.mean():.3f} ± {cos_random.std():.3f}, inner product mean "
          f"{dot_random.mean():.3f} ± {dot_random.std():.3f}")
    assert cos_planted.mean() > cos_random.mean() + 0.5
    assert cos_planted.min() > np.quantile(cos_random, 0.95)
    assert dot_planted.min() > np.quantile(dot_random, 0.99)
    # And most_similar finds each planted partner first.
    for a, b in pairs:
        assert most_similar(clf, int(a), n=1)["feature"].iloc[0] == b


# --------------------------------------------------------------------------- MovieLens 100K
def test_movielens_neighbours_share_genres_more_than_random(ml100k_dir):
    ml = load_movielens("100k", ml100k_dir, download=False)
    rec = Recommender(target="rating", random_state=0,
                      model=FMRegressor(n_factors=16, n_epochs=20, reg_linear=0.57,
                                        reg_factors=1.3, n_jobs=2)).fit(ml.ratings)
    genres = ml.items.set_index("item_id")["genres"].map(set)
    decade = ml.items.set_index("item_id")["year"].astype(float) // 10  # NaN: never equal
    popularity = ml.ratings["item_id"].value_counts()
    queries = popularity.index[:20]
    # Rarely rated movies have noisy directions; neighbours come from the 500 most rated.
    pool = popularity.index[:500]
    candidates = [f"item:item_id={i}" for i in pool]

    def shares(a, b):
        return bool(genres[a] & genres[b]), bool(decade[a] == decade[b])

    found = []
    for q in queries:
        nearest = most_similar(rec, f"item:item_id={q}", n=10, field=candidates)
        found += [shares(q, int(name.split("=")[1])) for name in nearest["feature"]]
    rng = np.random.default_rng(0)
    baseline = [shares(q, j) for q in queries for j in rng.choice(pool, 200) if j != q]
    genre_rate, decade_rate = np.mean(found, axis=0)
    genre_base, decade_base = np.mean(baseline, axis=0)
    print(f"\nMovieLens 100K, 20 most-rated movies x 10 nearest: share a genre "
          f"{genre_rate:.3f} vs random {genre_base:.3f}; same decade {decade_rate:.3f} vs "
          f"random {decade_base:.3f}")
    assert genre_rate > genre_base + 0.15
    assert decade_rate > decade_base


def test_feature_encoder_supplies_names():
    from fmrec import FeatureEncoder

    df = pd.DataFrame({"genre": list("abcab") * 20, "size": list("xyyxz") * 20})
    enc = FeatureEncoder(categorical=["genre", "size"])
    X = enc.fit_transform(df)
    y = np.arange(len(df)) % 3 + (df["genre"] == "a").to_numpy()
    model = FMRegressor(n_factors=2, n_epochs=3, random_state=0).fit(X, y)
    out = most_similar(model, "genre=a", field="size", feature_names=enc)
    assert sorted(out["feature"]) == ["size=x", "size=y", "size=z"]


def test_mcmc_embeddings_concatenate_the_samples():
    from fmrec.inspect import embeddings

    X = sp.random(300, 12, density=0.3, format="csr", random_state=0)
    y = np.asarray(X.sum(axis=1)).ravel()
    model = FMRegressor(n_factors=3, solver="mcmc", n_epochs=10, n_burn_in=6,
                        random_state=0).fit(X, y)
    V = embeddings(model).V
    assert V.shape == (12, 3 * 4)
    np.testing.assert_allclose(V[:, 3:6], model.samples_V_[1])
