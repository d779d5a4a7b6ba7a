"""The fmrec command: round trips in a subprocess, error messages, the synthetic demo."""

import hashlib
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import dump_svmlight_file

import fmrec
from fmrec import datasets
from fmrec.cli import io as _cli_io
from fmrec.cli import main
from fmrec.datasets import make_fm_classification, make_fm_regression, make_recsys
from fmrec.split import train_test_split

N_USERS, N_ITEMS = 60, 40


def fmrec_cmd(*args, cwd) -> subprocess.CompletedProcess:
    """``python -m fmrec ARGS`` as a user would run it."""
    return subprocess.run([sys.executable, "-m", "fmrec", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small synthetic ratings as CSV (side tables with '|'-joined genres) and libSVM files."""
    folder = tmp_path_factory.mktemp("cli")
    data = make_recsys(n_users=N_USERS, n_items=N_ITEMS, n_interactions=800, random_state=1)
    train, test = train_test_split(data.interactions, test_size=0.2, random_state=0)
    paths = {name: folder / f"{name}.csv" for name in ("train", "test", "users", "items")}
    train.to_csv(paths["train"], index=False)
    test.to_csv(paths["test"], index=False)
    data.users.to_csv(paths["users"], index=False)
    data.items.assign(genres=data.items["genres"].map("|".join)).to_csv(paths["items"],
                                                                        index=False)
    X, y, _ = make_fm_regression(n_samples=300, n_features=40, random_state=0)
    dump_svmlight_file(X, y, str(folder / "reg.libfm"), zero_based=True)
    X, y, _ = make_fm_classification(n_samples=300, n_features=40, random_state=0)
    dump_svmlight_file(X, y, str(folder / "clf.svm"), zero_based=True)
    paths.update(dir=folder, reg=folder / "reg.libfm", clf=folder / "clf.svm",
                 empty=folder / "empty.csv", header=folder / "header.csv",
                 bad_model=folder / "bad.npz")
    paths["empty"].write_text("")
    paths["index_2e31"] = folder / "index_2e31.libsvm"
    paths["index_2e31"].write_text("1 0:1 3:1\n0 1:1 2147483648:1\n")
    ranker = fmrec.FMRanker(n_factors=2, n_epochs=1, random_state=0).fit(
        np.eye(4)[:2], np.eye(4)[2:], [0, 1], [0, 1])
    paths["ranker"] = folder / "ranker.npz"
    ranker.save(paths["ranker"])
    paths["header"].write_text("user_id,item_id,rating\n")
    paths["bad_model"].write_bytes(b"not a model")
    return paths


@pytest.fixture(scope="module")
def model(files):
    """A Recommender trained in-process through ``main`` (fast, for the error cases)."""
    path = files["dir"] / "quick.npz"
    assert main(["train", str(files["train"]), "--out", str(path), "--epochs", "3", "-q"]) == 0
    return path


def test_table_round_trip(files, tmp_path):
    model = tmp_path / "model.npz"
    result = fmrec_cmd("train", files["train"], "--out", model, "--user-features",
                       files["users"], "--item-features", files["items"], "--context", "device",
                       "--implicit", "--factors", "4", "--epochs", "8", cwd=tmp_path)
    assert_ok(result)
    assert "epoch 8/8" in result.stderr  # progress goes to stderr
    rec = fmrec.load_model(model)
    assert isinstance(rec, fmrec.Recommender) and rec.implicit and rec.context == ["device"]
    assert any(name.startswith("item:genres=") for name in rec.feature_names_)

    test = pd.read_csv(files["test"])
    result = fmrec_cmd("predict", model, files["test"], "--out", tmp_path / "pred.csv",
                       cwd=tmp_path)
    assert_ok(result)
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert list(pred.columns) == [*test.columns, "prediction"] and len(pred) == len(test)
    assert np.isfinite(pred["prediction"]).all()

    result = fmrec_cmd("recommend", model, "-n", "3", "--out", tmp_path / "recs.csv", "-q",
                       cwd=tmp_path)
    assert_ok(result)
    assert result.stderr == "" and result.stdout == ""  # -q: nothing but the file
    recs = pd.read_csv(tmp_path / "recs.csv")
    assert list(recs.columns) == ["user", "item", "score", "rank"]
    # Every user of the user table (trained or cold with features) gets a full list.
    assert recs["user"].nunique() == N_USERS and len(recs) == 3 * N_USERS
    assert sorted(recs["rank"].unique()) == [1, 2, 3]
    train = pd.read_csv(files["train"])
    seen = recs.merge(train, left_on=["user", "item"], right_on=["user_id", "item_id"])
    assert seen.empty

    (tmp_path / "who.txt").write_text("user_id\n3\n5\n")
    result = fmrec_cmd("recommend", model, "--users-file", tmp_path / "who.txt", "-n", "2",
                       cwd=tmp_path)
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert lines[0] == "user,item,score,rank" and len(lines) == 1 + 2 * 2

    result = fmrec_cmd("evaluate", model, files["test"], "--k", "5", cwd=tmp_path)
    assert_ok(result)
    metrics = dict(line.split() for line in result.stdout.splitlines())
    assert {"rmse", "mae", "ndcg@5", "precision@5", "recall@5"} <= set(metrics)
    assert 0 < float(metrics["rmse"]) < 2 and 0 <= float(metrics["ndcg@5"]) <= 1


def test_implicit_sides_and_weight(files, tmp_path):
    path = tmp_path / "both.npz"
    assert main(["train", str(files["train"]), "--out", str(path), "--implicit", "both",
                 "--implicit-weight", "2", "--epochs", "2", "-q"]) == 0
    rec = fmrec.load_model(path)
    assert rec.implicit == "both" and rec.implicit_weight == 2.0
    groups = rec.feature_groups_
    assert groups["user_implicit"].stop > groups["user_implicit"].start
    assert groups["item_implicit"].stop > groups["item_implicit"].start


def test_mcmc_solver_from_the_command_line(files, tmp_path):
    path = tmp_path / "bayes.npz"
    assert main(["train", str(files["train"]), "--out", str(path), "--solver", "mcmc",
                 "--user-features", str(files["users"]), "--epochs", "20", "-q"]) == 0
    rec = fmrec.load_model(path)
    assert rec.model_.solver == "mcmc" and len(rec.model_.samples_V_) == 10
    assert len(np.unique(rec.model_.groups)) >= 3  # one hyperprior group per field
    out = tmp_path / "pred.csv"
    assert main(["predict", str(path), str(files["test"]), "--out", str(out), "-q"]) == 0
    assert np.isfinite(pd.read_csv(out)["prediction"]).all()


def test_implicit_feedback_recommend_to_stdout(files, tmp_path):
    model = tmp_path / "implicit.npz"
    result = fmrec_cmd("train", files["train"], "--out", model, "--no-target", "--epochs", "3",
                       "--negatives", "2", "--loss", "logloss", "-q", cwd=tmp_path)
    assert_ok(result)
    assert isinstance(fmrec.load_model(model).model_, fmrec.FMClassifier)
    result = fmrec_cmd("train", files["train"], "--out", model, "--no-target", "--epochs", "3",
                       "-q", cwd=tmp_path)
    assert_ok(result)
    assert isinstance(fmrec.load_model(model).model_, fmrec.FMRanker)  # BPR by default
    result = fmrec_cmd("recommend", model, "--users", "1", "2", "-n", "4", cwd=tmp_path)
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert lines[0] == "user,item,score,rank"
    assert [line.split(",")[0] for line in lines[1:]] == ["1"] * 4 + ["2"] * 4


def test_libsvm_round_trip(files, tmp_path):
    result = fmrec_cmd("train", files["reg"], "--out", tmp_path / "reg.npz", "--epochs", "5",
                       "-q", cwd=tmp_path)
    assert_ok(result)
    assert isinstance(fmrec.load_model(tmp_path / "reg.npz"), fmrec.FMRegressor)
    result = fmrec_cmd("predict", tmp_path / "reg.npz", files["reg"], cwd=tmp_path)
    assert_ok(result)
    assert len(np.array(result.stdout.split(), dtype=float)) == 300

    # Two distinct labels: --task auto trains a classifier; evaluate reports AUC.
    result = fmrec_cmd("train", files["clf"], "--out", tmp_path / "clf.npz", "--epochs", "5",
                       "-q", cwd=tmp_path)
    assert_ok(result)
    result = fmrec_cmd("evaluate", tmp_path / "clf.npz", files["clf"], cwd=tmp_path)
    assert_ok(result)
    metrics = dict(line.split() for line in result.stdout.splitlines())
    assert set(metrics) == {"auc", "log_loss"} and float(metrics["auc"]) > 0.7


def test_libsvm_predictions_are_probabilities_for_a_classifier(files, tmp_path, capsys):
    model, out = tmp_path / "clf.npz", tmp_path / "p.txt"
    assert main(["train", str(files["clf"]), "--out", str(model), "--epochs", "3", "-q"]) == 0
    assert main(["predict", str(model), str(files["clf"]), "--out", str(out), "-q"]) == 0
    p = np.loadtxt(out)
    assert p.shape == (300,) and ((p > 0) & (p < 1)).all()


def _demo_table(stdout: str) -> pd.DataFrame:
    """The demo's table (model names are the first 48 characters of a line) as a frame."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    columns = lines[header][48:].replace("fit s", "fit_s").split()
    rows = {}
    for line in lines[header + 1:]:
        if not line.strip():
            break
        rows[line[:48].strip()] = [np.nan if v == "-" else float(v) for v in line[48:].split()]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


RATING_MODELS = ["baseline: mean + damped user/item biases", "FM, user and item ids",
                 "FM, ids + side features + implicit users/items"]
RANKERS = ["FM ranker: rated vs 4 sampled unrated, features",
           "FM ranker: BPR, hard negatives, features"]


def test_demo_on_synthetic_data(tmp_path):
    empty = tmp_path / "no_movielens"
    empty.mkdir()
    result = fmrec_cmd("demo", "--data-home", empty, "--out", tmp_path / "out", cwd=tmp_path)
    assert_ok(result)
    fallback = [line for line in result.stderr.splitlines() if "MovieLens" in line]
    assert len(fallback) == 1 and "MovieLens 100K not found" in fallback[0]
    for words in ("using synthetic data", "--download", "FMREC_DATA_HOME"):
        assert words in fallback[0]
    table = _demo_table(result.stdout)
    assert table.index.tolist() == ["popularity (most-rated unseen items)", *RATING_MODELS,
                                    *RANKERS]
    # The order MovieLens 100K shows (README, `fmrec demo`): the rating FMs' lists (their
    # rating model blended with a ranker learnt from the same rows) above both
    # implicit-feedback rankers, those above popularity, popularity above the bias baseline,
    # and the richer rating model the more accurate.
    ndcg, popular = table["NDCG@10"], "popularity (most-rated unseen items)"
    fms, baseline = RATING_MODELS[1:], RATING_MODELS[0]
    assert ndcg[fms].min() > ndcg[RANKERS].max()
    assert ndcg[RANKERS].min() > ndcg[popular] > ndcg[baseline]
    assert table["RMSE"][RATING_MODELS].is_monotonic_decreasing
    recs = pd.read_csv(tmp_path / "out" / "recommendations.csv")
    assert list(recs.columns) == ["user", "item", "score", "rank"]
    n_users = fmrec.cli.demo.DEMO_SYNTHETIC["n_users"]
    assert recs.groupby("user").size().eq(10).all() and recs["user"].nunique() == n_users
    assert isinstance(fmrec.load_model(tmp_path / "out" / "model.npz"), fmrec.Recommender)
    figures = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert figures == ["movie_map.png", "param_importances.png", "similar_movies.png",
                       "training_curves.png", "tuning_history.png"]


def _fake_ml100k_zip(folder) -> tuple[str, str]:
    """A zip laid out like GroupLens's ml-100k.zip but made of synthetic data (no MovieLens
    file is used or needed); its file:// URL and SHA-256."""
    data = make_recsys(n_users=40, n_items=30, n_interactions=600, random_state=2)
    ratings = data.interactions.assign(rating=data.interactions["rating"].round().clip(1, 5)
                                       .astype(int), timestamp=np.arange(600) + 880_000_000)
    ratings = ratings[["user_id", "item_id", "rating", "timestamp"]]
    train, test = train_test_split(ratings, test_size=0.2, random_state=0)
    genres = [f"genre_{j}" for j in range(data.truth["item_genres"].shape[1])]
    users = [f"{u}|{20 + u % 40}|{'MF'[u % 2]}|{('student', 'writer')[u % 3 == 0]}|{10000 + u}"
             for u in data.users["user_id"]]
    items = [f"{i}|Film {i} ({1980 + i % 20})|01-Jan-{1980 + i % 20}||http://x/{i}|"
             + "|".join(str(int(flag)) for flag in row)
             for i, row in zip(data.items["item_id"], data.truth["item_genres"], strict=True)]

    def tsv(frame):
        return frame.to_csv(sep="\t", header=False, index=False)

    files = {"u.data": tsv(ratings), "u1.base": tsv(train), "u1.test": tsv(test),
             "u.user": "\n".join(users) + "\n", "u.item": "\n".join(items) + "\n",
             "u.genre": "".join(f"{g}|{j}\n" for j, g in enumerate(genres))}
    path = folder / "fake-ml-100k.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ml-100k/", "")
        for name, text in files.items():
            archive.writestr(f"ml-100k/{name}", text)
    return path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_grouplens(tmp_path, monkeypatch):
    """MovieLens 100K's URL and digest pointed at a local synthetic archive."""
    url, digest = _fake_ml100k_zip(tmp_path)
    monkeypatch.setitem(datasets.MOVIELENS_URLS, "100k", url)
    monkeypatch.setitem(datasets.MOVIELENS_SHA256, "100k", digest)
    return url, digest


def test_demo_download_fetches_checks_and_runs(fake_grouplens, tmp_path, capsys, monkeypatch):
    home, out = tmp_path / "home", tmp_path / "out"
    assert main(["demo", "--download", "--data-home", str(home), "--out", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    assert f"downloading MovieLens 100K from {fake_grouplens[0]} into {home}" in stderr
    assert "synthetic" not in stderr + stdout
    assert f"MovieLens 100K from {home / 'ml-100k'}, official u1 split" in stdout
    assert _demo_table(stdout).shape == (6, 5)
    assert [p.name for p in home.iterdir()] == ["ml-100k"]  # unpacked, nothing else left
    assert pd.read_csv(out / "recommendations.csv")["user"].nunique() == 40
    # Present now: read as it is, without the network.
    monkeypatch.setattr(datasets.urllib.request, "urlopen", _no_network)
    assert len(datasets.load_movielens("100k", home, download=True).ratings) == 600


def _no_network(*args, **kwargs):
    raise AssertionError("the network must not be used")


def test_demo_download_with_a_wrong_checksum_keeps_nothing(fake_grouplens, tmp_path, capsys,
                                                           monkeypatch):
    monkeypatch.setitem(datasets.MOVIELENS_SHA256, "100k", "0" * 64)
    home = tmp_path / "home"
    assert main(["demo", "--download", "--data-home", str(home), "--out",
                 str(tmp_path / "out"), "-q"]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and len(stderr.splitlines()) == 1
    assert stderr.startswith("fmrec: error: SHA-256 mismatch for file://")
    assert f"got {fake_grouplens[1]}" in stderr and "Traceback" not in stderr
    assert not home.exists() and not (tmp_path / "out").exists()


def test_demo_download_failure_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    missing = (tmp_path / "nowhere" / "ml-100k.zip").as_uri()  # as good as no network
    monkeypatch.setitem(datasets.MOVIELENS_URLS, "100k", missing)
    home = tmp_path / "home"
    assert main(["demo", "--download", "--data-home", str(home), "-q"]) == 1
    stderr = capsys.readouterr().err
    assert len(stderr.splitlines()) == 1 and stderr.startswith("fmrec: error: could not "
                                                               f"download {missing}")
    assert "ml-100k/ folder under" in stderr and not home.exists()


def test_error_in_a_subprocess_is_one_line_without_traceback(tmp_path):
    result = fmrec_cmd("predict", "missing.npz", "pairs.csv", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "fmrec: error: model file 'missing.npz' not found\n"


ERRORS = [
    (["train", "{dir}/nope.csv", "--out", "{dir}/m.npz"], "input file", "not found"),
    (["train", "{train}", "--out", "{dir}/m.npz", "--user-col", "uid"], "unknown column 'uid'",
     "user_id, item_id"),
    (["train", "{train}", "--out", "{dir}/m.npz", "--context", "hour"], "unknown column 'hour'",
     ""),
    (["train", "{empty}", "--out", "{dir}/m.npz"], "has no data rows", ""),
    (["train", "{header}", "--out", "{dir}/m.npz"], "has no data rows", ""),
    (["train", "{train}", "--out", "{dir}/m.npz", "--item-features", "{users}"],
     "unknown column 'item_id' in item features file", ""),
    (["predict", "{bad_model}", "{test}"], "not a readable fmrec model file", ""),
    (["evaluate", "{bad_model}", "{test}"], "not a readable fmrec model file", ""),
    (["recommend", "{model}", "--users", "9999"], "unknown user(s) 9999", "--unknown popular"),
    (["predict", "{model}", "{reg}"], "is a Recommender", ""),
    (["recommend", "{model}", "--users-file", "{empty}"], "has no ids", ""),
    # Issue 15: these were tracebacks with exit 1.
    (["train", "{reg}", "--out", "{dir}"], "is a folder", ""),
    (["train", "{train}", "--out", "{dir}"], "is a folder", ""),
    (["predict", "{model}", "{test}", "--out", "{dir}"], "is a folder", ""),
    (["recommend", "{model}", "--out", "{dir}"], "is a folder", ""),
    (["train", "{index_2e31}", "--out", "{dir}/m.npz"], "a feature index is 2147483648 or more",
     ""),
    (["predict", "{ranker}", "{reg}"], "is a plain FMRanker", "fmrec predict"),
    (["evaluate", "{ranker}", "{reg}"], "is a plain FMRanker", "fmrec evaluate"),
    (["tune", "{train}", "--out", "{dir}/t.npz", "--trials", "1", "--storage",
      "sqlite:///{dir}/no/such/folder/t.db", "--study-name", "s"],
     "cannot open the study storage", "unable to open database file"),
    (["tune", "{train}", "--out", "{dir}/t.npz", "--trials", "1", "--storage", "nonsense",
      "--study-name", "s"], "cannot open the study storage 'nonsense'", ""),
]


@pytest.mark.parametrize(("argv", "message", "also"), ERRORS)
def test_errors_exit_2_with_one_line(files, model, capsys, argv, message, also):
    paths = {key: str(value) for key, value in files.items()}
    code = main([arg.format(**paths, model=model) for arg in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("fmrec: error: "), err
    assert message in err and also in err


def test_a_width_past_the_machine_memory_is_refused_before_allocating(files, tmp_path, capsys,
                                                                      monkeypatch):
    """Issue 15: a libSVM index of 2e9 made ``train`` allocate 15 GiB for an empty model."""
    monkeypatch.setattr(fmrec._validation, "physical_memory", lambda: 2**30)
    path = tmp_path / "sparse_ids.libsvm"
    path.write_text("1 0:1 3:1\n0 1:1 200000000:1\n")  # 2e8 columns need ~15 GiB
    assert main(["train", "-q", str(path), "--out", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "X has 200000001 columns" in err and "more than this machine's 1.0 GiB" in err
    assert not (tmp_path / "m.npz").exists()


def test_a_missing_database_driver_is_one_line(files, tmp_path, capsys, monkeypatch):
    """ImportError (a storage URL's driver is not installed) is a user error, not a crash."""
    import optuna

    def no_driver(url):
        raise ImportError("Failed to import DB access module")

    monkeypatch.setattr(optuna.storages, "get_storage", no_driver)
    code = main(["tune", str(files["train"]), "--out", str(tmp_path / "t.npz"), "--trials", "1",
                 "--storage", "postgresql://u@localhost/db", "--study-name", "s"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "needs a database driver that is not installed" in err


def test_evaluate_with_a_blank_rating_is_an_error_not_nan(files, model, tmp_path, capsys):
    """Issue 15: a test file with an empty rating printed ``rmse nan`` and exited 0."""
    test = pd.read_csv(files["test"])
    test.loc[test.index[1], "rating"] = np.nan
    test.to_csv(tmp_path / "blank.csv", index=False)
    assert main(["evaluate", str(model), str(tmp_path / "blank.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fmrec: error: ") and "NaN" in err and len(err.splitlines()) == 1


def test_parquet_without_pyarrow_is_a_clear_error(files, tmp_path, capsys):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        (tmp_path / "x.parquet").write_bytes(b"PAR1")
        assert main(["train", str(tmp_path / "x.parquet"), "--out", "m.npz"]) == 2
        assert "needs pyarrow" in capsys.readouterr().err
    else:
        pd.read_csv(files["train"]).to_parquet(tmp_path / "x.parquet")
        assert main(["train", str(tmp_path / "x.parquet"), "--out", str(tmp_path / "m.npz"),
                     "--epochs", "2", "-q"]) == 0


def test_usage_errors_and_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "x.csv", "--out", "m.npz", "--factors", "0"])
    assert exc.value.code == 2
    assert "--factors: must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"fmrec {fmrec.__version__}"
    assert main([]) == 2


def test_io_helpers(tmp_path):
    assert _cli_io.is_libsvm("a.LIBFM") and _cli_io.is_libsvm("a.svm.gz")
    assert not _cli_io.is_libsvm("a.csv") and _cli_io.is_libsvm("a.txt", "libsvm")
    frame = pd.DataFrame({"item_id": [1, 2], "genres": ["A|B", "C"], "n": [1, 2]})
    out = _cli_io.split_multi_valued(frame)
    assert out["genres"].tolist() == [["A", "B"], ["C"]] and out["n"].tolist() == [1, 2]
    (tmp_path / "ids.txt").write_text("7\n8\n\n")
    assert _cli_io.read_ids(tmp_path / "ids.txt", "user_id") == ["7", "8"]


def test_train_on_a_table_starts_from_the_recommenders_default_model(files, tmp_path):
    """``fmrec train ratings.csv`` trained ALS 8/50 (the estimator's class default) where
    ``Recommender(target="rating")`` trains the measured default, the Bayesian FM."""
    default = fmrec.default_model("rating")
    assert main(["train", "-q", str(files["train"]), "--out", str(tmp_path / "a.npz")]) == 0
    model = fmrec.load_model(tmp_path / "a.npz").model_
    assert (model.solver, model.n_factors, model.n_epochs) == (
        default.solver, default.n_factors, default.n_epochs)
    # Options go on top of that default.
    assert main(["train", "-q", str(files["train"]), "--out", str(tmp_path / "b.npz"),
                 "--epochs", "30"]) == 0
    model = fmrec.load_model(tmp_path / "b.npz").model_
    assert (model.solver, model.n_epochs) == ("mcmc", 30)
    # A libSVM file trains the plain estimator, with its own defaults.
    assert main(["train", "-q", str(files["reg"]), "--out", str(tmp_path / "c.npz")]) == 0
    plain = fmrec.load_model(tmp_path / "c.npz")
    assert (plain.solver, plain.n_epochs) == (FMRegressorDefaults.solver,
                                              FMRegressorDefaults.n_epochs)


FMRegressorDefaults = fmrec.FMRegressor()
