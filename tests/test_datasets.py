import functools
import hashlib
import http.server
import threading
import zipfile

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from reference import popular_lists, predict

from fmrec import FMRanker, FMRegressor, Recommender, datasets
from fmrec.metrics import ndcg_at_k, rmse
from fmrec.split import train_test_split


def test_make_fm_regression_is_the_stated_fm():
    X, y, truth = datasets.make_fm_regression(n_samples=500, n_features=40, noise=0.0,
                                              random_state=1)
    assert X.shape == (500, 40) and X.dtype == np.float32
    assert np.all(np.diff(X.indptr) == 5)
    expected = predict(X, truth["w0"], truth["w"], truth["V"])
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    for row in range(20):  # distinct, sorted columns in every row
        cols = X.indices[X.indptr[row]:X.indptr[row + 1]]
        assert np.all(np.diff(cols) > 0)


def test_make_fm_classification_labels():
    X, y, _ = datasets.make_fm_classification(n_samples=400, n_features=30, random_state=0)
    assert set(np.unique(y)) == {0, 1} and X.shape == (400, 30)


def test_data_home_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("FMREC_DATA_HOME", str(tmp_path))
    assert datasets.data_home() == tmp_path
    assert datasets.data_home("/elsewhere").as_posix() == "/elsewhere"


def test_missing_split_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="FMREC_DATA_HOME"):
        datasets.load_ml100k_split("u1", tmp_path)
    with pytest.raises(ValueError, match="fold"):
        datasets.load_ml100k_split("u9", tmp_path)


def test_ml100k_split_and_one_hot(ml100k_dir):
    train, test = datasets.load_ml100k_split("u1", ml100k_dir)
    assert len(train) == 80_000 and len(test) == 20_000
    X = datasets.one_hot_user_item(train)
    assert X.shape == (80_000, 943 + 1682)
    np.testing.assert_array_equal(X.indices[:2], [train.user_id[0] - 1,
                                                  943 + train.item_id[0] - 1])
    assert X.sum() == 160_000


# ---------------------------------------------------------------------------- load_movielens
def test_load_movielens_100k(ml100k_dir):
    ml = datasets.load_movielens("100k", data_home=ml100k_dir, download=False)
    assert ml.variant == "100k" and ml.path == ml100k_dir / "ml-100k"
    assert len(ml.ratings) == 100_000 and len(ml.users) == 943 and len(ml.items) == 1682
    assert ml.ratings.dtypes.to_dict() == {"user_id": np.int64, "item_id": np.int64,
                                           "rating": np.float32, "timestamp": np.int64}
    assert set(ml.ratings.rating.unique()) == {1, 2, 3, 4, 5}
    users = ml.users.set_index("user_id")
    assert users.age.dtype == np.int64 and users.gender.dtype == "category"
    assert users.occupation.dtype == "category" and users.zip_code.dtype == "string"
    assert users.loc[1].tolist() == [24, "M", "technician", "85711"]
    items = ml.items.set_index("item_id")
    assert items.title.dtype == "string" and items.year.dtype == "Int64"
    assert items.loc[1, "title"] == "Toy Story (1995)" and items.loc[1, "year"] == 1995
    assert items.loc[1, "genres"] == ["Animation", "Children's", "Comedy"]
    assert items.loc[543, "title"] == "Misérables, Les (1995)"  # latin-1 in u.item
    assert items.loc[23, "year"] == 1976  # the film's year, not the 1996 re-release date
    assert items.loc[267, "title"] == "unknown" and pd.isna(items.loc[267, "year"])
    assert sorted(ml.splits) == ["u1", "u2", "u3", "u4", "u5", "ua", "ub"]
    train, test = ml.splits["u1"]
    assert len(train) == 80_000 and len(test) == 20_000
    assert train.dtypes.equals(ml.ratings.dtypes)
    legacy_train, _ = datasets.load_ml100k_split("u1", ml100k_dir)
    np.testing.assert_array_equal(train.to_numpy(), legacy_train.to_numpy())
    assert "ratings=100000" in repr(ml)


def test_load_movielens_bad_variant(tmp_path):
    with pytest.raises(ValueError, match="variant"):
        datasets.load_movielens("20m", data_home=tmp_path)


def test_load_movielens_missing_without_download(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.urllib.request, "urlopen", _no_network)
    monkeypatch.setenv("FMREC_DATA_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"ml-1m.*download=True.*FMREC_DATA_HOME"):
        datasets.load_movielens("1m", download=False)
    assert list(tmp_path.iterdir()) == []


def test_load_movielens_incomplete_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.urllib.request, "urlopen", _no_network)
    (tmp_path / "ml-latest-small").mkdir()
    (tmp_path / "ml-latest-small" / "movies.csv").write_text("movieId,title,genres\n")
    with pytest.raises(FileNotFoundError, match="ratings.csv"):
        datasets.load_movielens("latest-small", data_home=tmp_path)


LATEST_SMALL = {
    "ratings.csv": (b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n"
                    b"5,1,0.5,847434962\n"),
    "movies.csv": ("movieId,title,genres\n"
                   "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
                   '3,"American President, The (1995)",Comedy|Drama|Romance\n'
                   "7,\"Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)\",Comedy|Romance\n"
                   "9,Babylon 5,(no genres listed)\n").encode(),  # UTF-8, as GroupLens writes it
}


def _no_network(*args, **kwargs):
    raise AssertionError("the network must not be used")


def _write(folder, files):
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def test_load_movielens_1m_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.urllib.request, "urlopen", _no_network)
    _write(tmp_path / "ml-1m", {
        "ratings.dat": b"1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n",
        "users.dat": b"1::F::1::10::48067\n2::M::56::16::70072-1234\n",
        "movies.dat": ("1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
                       "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
                       "2::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
                       '3::"Misérables, Les (1995)"::Drama\n').encode("latin-1")})
    ml = datasets.load_movielens("1m", data_home=tmp_path, download=True)
    assert ml.ratings.dtypes.to_dict() == {"user_id": np.int64, "item_id": np.int64,
                                           "rating": np.float32, "timestamp": np.int64}
    assert ml.ratings.to_numpy()[1].tolist() == [1, 661, 3, 978302109]
    assert ml.users.columns.tolist() == ["user_id", "gender", "age", "occupation", "zip_code"]
    assert ml.users.occupation.tolist() == ["K-12 student", "self-employed"]
    assert ml.users.zip_code.tolist() == ["48067", "70072-1234"]
    assert ml.users.age.tolist() == [1, 56] and ml.users.gender.dtype == "category"
    items = ml.items.set_index("item_id")
    assert items.loc[2, "title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert items.loc[2, "year"] == 1977 and items.loc[2, "genres"] == ["Action", "Sci-Fi"]
    assert items.loc[3, "title"] == '"Misérables, Les (1995)"'  # quotes are kept as written
    assert items.loc[661, "genres"] == ["Animation", "Children's", "Musical"]
    assert ml.splits == {}


def test_load_movielens_latest_small_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.urllib.request, "urlopen", _no_network)
    _write(tmp_path / "ml-latest-small", LATEST_SMALL)
    ml = datasets.load_movielens("latest-small", data_home=tmp_path)
    _check_latest_small(ml)


def _check_latest_small(ml):
    assert ml.ratings.rating.tolist() == [4.0, 4.5, 0.5]
    assert ml.ratings.rating.dtype == np.float32
    assert ml.users.columns.tolist() == ["user_id"] and ml.users.user_id.tolist() == [1, 5]
    items = ml.items.set_index("item_id")
    assert items.loc[3, "title"] == "American President, The (1995)"
    assert items.loc[7, "title"].startswith("Amélie") and items.loc[7, "year"] == 2001
    assert items.loc[9, "genres"] == [] and pd.isna(items.loc[9, "year"])
    assert items.year.dtype == "Int64" and items.title.dtype == "string"


# A local file server stands in for files.grouplens.org.
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(tmp_path, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def _serve_zip(root, folder, files):
    path = root / f"{folder}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{folder}/", "")
        for name, data in files.items():
            archive.writestr(f"{folder}/{name}", data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_and_unpacks(file_server, tmp_path, monkeypatch):
    root, base = file_server
    digest = _serve_zip(root, "ml-latest-small", LATEST_SMALL)
    monkeypatch.setitem(datasets.MOVIELENS_URLS, "latest-small", f"{base}/ml-latest-small.zip")
    monkeypatch.setitem(datasets.MOVIELENS_SHA256, "latest-small", digest)
    home = tmp_path / "home"
    ml = datasets.load_movielens("latest-small", data_home=home)
    _check_latest_small(ml)
    assert [p.name for p in home.iterdir()] == ["ml-latest-small"]  # no temporary left over
    assert ml.path == home / "ml-latest-small"
    # Now present: read again without the network.
    monkeypatch.setattr(datasets.urllib.request, "urlopen", _no_network)
    _check_latest_small(datasets.load_movielens("latest-small", data_home=home))


def test_download_checksum_mismatch_keeps_nothing(file_server, tmp_path, monkeypatch):
    root, base = file_server
    digest = _serve_zip(root, "ml-latest-small", LATEST_SMALL)
    monkeypatch.setitem(datasets.MOVIELENS_URLS, "latest-small", f"{base}/ml-latest-small.zip")
    monkeypatch.setitem(datasets.MOVIELENS_SHA256, "latest-small", "0" * 64)
    home = tmp_path / "home"
    with pytest.raises(ValueError, match=f"expected {'0' * 64}, got {digest}"):
        datasets.load_movielens("latest-small", data_home=home)
    assert not home.exists()  # not even the data home it had to create


def test_download_network_error_says_where_to_put_files(file_server, tmp_path, monkeypatch):
    _, base = file_server
    monkeypatch.setitem(datasets.MOVIELENS_URLS, "1m", f"{base}/missing.zip")  # HTTP 404
    home = tmp_path / "home"
    home.mkdir()
    with pytest.raises(ConnectionError, match=r"could not download.*ml-1m/ folder under"):
        datasets.load_movielens("1m", data_home=home)
    assert list(home.iterdir()) == []  # an existing data home stays, empty


# ------------------------------------------------------------------------------ make_recsys
def test_make_recsys_tables():
    data = datasets.make_recsys(n_users=60, n_items=40, n_interactions=1_500, random_state=3)
    frame = data.interactions
    assert frame.columns.tolist() == ["user_id", "item_id", "device", "rating"]
    assert len(frame) == 1_500 and not frame.duplicated(["user_id", "item_id"]).any()
    assert frame.user_id.between(1, 60).all() and frame.item_id.between(1, 40).all()
    assert list(frame.device.cat.categories) == ["mobile", "desktop", "tv"]
    assert data.users.group.dtype == "category" and len(data.users) == 60
    assert all(1 <= len(g) <= 3 for g in data.items.genres) and len(data.items) == 40
    assert data.truth["V"].shape == (data.truth["n_features"], 4)
    # Dense request: every pair drawn once.
    full = datasets.make_recsys(n_users=10, n_items=8, n_interactions=80).interactions
    assert len(full.groupby(["user_id", "item_id"])) == 80
    with pytest.raises(ValueError, match="n_interactions"):
        datasets.make_recsys(n_users=10, n_items=8, n_interactions=81)
    with pytest.raises(ValueError, match="noise"):
        datasets.make_recsys(noise=-1.0)
    for bad in (-0.5, np.nan, np.inf):
        with pytest.raises(ValueError, match="exposure must be a finite number >= 0"):
            datasets.make_recsys(exposure=bad)
    with pytest.raises(TypeError, match="exposure must be a number, got 'high'"):
        datasets.make_recsys(exposure="high")


def test_make_recsys_is_the_documented_fm():
    noisy = datasets.make_recsys(n_users=80, n_items=50, n_interactions=2_000, random_state=1)
    clean = datasets.make_recsys(n_users=80, n_items=50, n_interactions=2_000, noise=0.0,
                                 random_state=1)
    truth, frame = clean.truth, clean.interactions
    np.testing.assert_array_equal(frame.rating, truth["noise_free"])
    np.testing.assert_array_equal(noisy.truth["noise_free"], truth["noise_free"])
    assert 0.25 < np.std(noisy.interactions.rating - truth["noise_free"]) < 0.35
    o, w, V = truth["offsets"], truth["w"], truth["V"]
    genres = clean.items.set_index("item_id").genres
    for row in range(10):  # the formula in make_recsys's docstring, term by term
        user, item, device = frame.user_id[row], frame.item_id[row], frame.device[row]
        group = int(clean.users.group[user - 1].removeprefix("group_"))
        active = [o["user"] + user - 1, o["group"] + group, o["item"] + item - 1,
                  o["device"] + truth["devices"].index(device)]
        active += [o["genre"] + int(g.removeprefix("genre_")) for g in genres[item]]
        pairs = sum(V[a] @ V[b] for i, a in enumerate(active) for b in active[i + 1:])
        expected = truth["w0"] + w[active].sum() + pairs
        assert frame.rating[row] == pytest.approx(expected, rel=1e-12)


def test_fm_learns_make_recsys():
    data = datasets.make_recsys(random_state=0)
    frame, n_users, n_items = data.interactions, len(data.users), len(data.items)
    cols = np.column_stack([frame.user_id - 1, n_users + frame.item_id - 1,
                            n_users + n_items + frame.device.cat.codes.astype(np.int64)])
    n = len(frame)
    X = sp.csr_matrix((np.ones(3 * n, np.float32), cols.ravel(), np.arange(0, 3 * n + 1, 3)),
                      shape=(n, n_users + n_items + 3))
    y = frame.rating.to_numpy()
    model = FMRegressor(n_factors=4, n_epochs=20, random_state=0).fit(X[:16_000], y[:16_000])
    test_rmse = rmse(y[16_000:], model.predict(X[16_000:]))
    # The noise (0.3) is the floor; the ratings themselves spread about 1.
    assert test_rmse < 0.5 * y.std(), (test_rmse, y.std())


def _truth_rating(data, users, items, device=None) -> np.ndarray:
    """The noise-free rating of 0-based (user, item) pairs, read off the docstring's formula
    (without a device column when ``device`` is None)."""
    truth = data.truth
    o, w, V = truth["offsets"], truth["w"], truth["V"]
    rows = []
    for user, item in zip(users, items, strict=True):
        active = [o["user"] + user, o["group"] + truth["user_group"][user], o["item"] + item]
        active += [o["genre"] + g for g in np.flatnonzero(truth["item_genres"][item])]
        if device is not None:
            active.append(o["device"] + truth["devices"].index(device))
        q, sq = V[active].sum(axis=0), (V[active] ** 2).sum()
        rows.append(truth["w0"] + w[active].sum() + 0.5 * (q @ q - sq))
    return np.array(rows)


def test_make_recsys_affinity_is_the_item_part_of_the_rating():
    data = datasets.make_recsys(n_users=30, n_items=20, n_interactions=200, random_state=4)
    users = np.repeat(np.arange(30), 20)
    items = np.tile(np.arange(20), 30)
    rating = _truth_rating(data, users, items).reshape(30, 20)
    affinity = data.truth["affinity"](users, items).reshape(30, 20)
    # Per user, the rating (device aside) and the affinity differ by a constant.
    spread = (rating - affinity).std(axis=1)
    np.testing.assert_allclose(spread, 0, atol=1e-12)
    assert affinity.std() > 0.3


def test_make_recsys_exposure_follows_preference():
    data = datasets.make_recsys()  # the defaults
    frame, truth = data.interactions, data.truth
    assert truth["exposure"] == datasets.RECSYS_EXPOSURE > 0
    users, items = frame.user_id.to_numpy() - 1, frame.item_id.to_numpy() - 1
    observed = np.zeros((len(data.users), len(data.items)), dtype=bool)
    observed[users, items] = True
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, observed.shape[0], 5000), rng.integers(0, observed.shape[1], 5000)
    unobserved = ~observed[u, i]
    rows = rng.choice(len(frame), 5000, replace=False)
    seen = _truth_rating(data, users[rows], items[rows], "mobile")
    unseen = _truth_rating(data, u[unobserved], i[unobserved], "mobile")
    # People rate what they like: on MovieLens too, rated films are the better-liked ones.
    assert seen.mean() > unseen.mean() + 0.5, (seen.mean(), unseen.mean())
    # Popular items are popular partly because they are liked (MovieLens 100K: 0.52).
    per_item = frame.groupby("item_id")["rating"].agg(["size", "mean"])
    assert np.corrcoef(np.log(per_item["size"]), per_item["mean"])[0, 1] > 0.3
    # Exposure 0: which pairs exist says nothing about the ratings.
    blind = datasets.make_recsys(exposure=0)
    b_users = blind.interactions.user_id.to_numpy()[rows] - 1
    b_items = blind.interactions.item_id.to_numpy()[rows] - 1
    blind_seen = _truth_rating(blind, b_users, b_items, "mobile")
    blind_unseen = _truth_rating(blind, u[unobserved], i[unobserved], "mobile")
    assert abs(blind_seen.mean() - blind_unseen.mean()) < 0.1


def test_personalised_ranker_beats_popularity_on_make_recsys():
    pairs = datasets.make_recsys().interactions[["user_id", "item_id"]]  # the defaults
    train, test = train_test_split(pairs, method="per_user", test_size=0.2, random_state=0)
    held_out = test.rename(columns={"user_id": "user", "item_id": "item"})
    users = pd.unique(held_out["user"])
    rec = Recommender(model=FMRanker(n_epochs=10, n_jobs=1), random_state=0).fit(train)
    ranker = ndcg_at_k(rec.recommend(users, n=10), held_out, k=10)
    popularity = ndcg_at_k(popular_lists(train, users), held_out, k=10)
    assert ranker > 1.2 * popularity, (ranker, popularity)
