"""fmrec.plot: the numbers behind each figure, PNGs that are not blank, no display needed."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

pytest.importorskip("matplotlib")

import matplotlib.image  # noqa: E402

from fmrec import FMClassifier, FMRegressor, Recommender  # noqa: E402
from fmrec.plot import (  # noqa: E402
    embedding_map,
    param_importances,
    similarity_heatmap,
    training_curves,
    tuning_history,
)

N_FEATURES = 30
NAMES = [f"{field}={k}" for field in ("genre", "year", "country") for k in range(10)]


@pytest.fixture(scope="module")
def model():
    X = sp.random(600, N_FEATURES, density=0.15, format="csr", random_state=1)
    y = np.asarray(X.sum(axis=1)).ravel() + 2 * X[:, 0].toarray().ravel() * X[:, 11].toarray(
    ).ravel()
    X_val = sp.random(100, N_FEATURES, density=0.15, format="csr", random_state=2)
    y_val = np.asarray(X_val.sum(axis=1)).ravel()
    model = FMRegressor(n_factors=5, n_epochs=8, random_state=0).fit(
        X, y, eval_set=(X_val, y_val))
    model.V_[29] = 0  # an unused feature
    return model


def unit_rows(V):
    V = V.astype(np.float64)
    norm = np.linalg.norm(V, axis=1, keepdims=True)
    return np.divide(V, norm, out=np.zeros_like(V), where=norm > 0)


def assert_png_not_blank(fig, path):
    fig.savefig(path, dpi=60)
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 10


def test_lazy_import_and_no_pyplot(model, tmp_path):
    assert type(training_curves(model).canvas).__name__ == "FigureCanvasAgg"
    # fmrec imports without matplotlib, and drawing never goes through pyplot, so the
    # application's backend (a notebook's, say) is left alone.
    code = ("import sys, fmrec, fmrec.plot, fmrec.inspect; "
            "assert 'matplotlib' not in sys.modules; "
            "fmrec.plot.training_curves({'loss': [1, 2]}).savefig('/dev/null', format='png'); "
            "assert 'matplotlib' in sys.modules and 'matplotlib.pyplot' not in sys.modules")
    # From outside the repository, so the installed package is imported, not the sources.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_heatmap_matrix_is_clustered_cosine(model, tmp_path):
    features = [f"genre={k}" for k in range(10)] + ["year=1", "country=9", "year=3"]
    fig = similarity_heatmap(model, features, feature_names=NAMES)
    M = fig.fmrec_matrix
    assert M.shape == (13, 13) and sorted(M.index) == sorted(features)
    assert M.index.tolist() == M.columns.tolist()
    assert np.allclose(M.to_numpy(), M.to_numpy().T)
    cols = [NAMES.index(name) for name in M.index]
    U = unit_rows(model.V_[cols])
    assert np.allclose(M.to_numpy(), U @ U.T, atol=1e-6)
    diagonal = np.diag(M.to_numpy())
    nonzero = M.index != "country=9"
    assert np.allclose(diagonal[nonzero], 1.0, atol=1e-6) and diagonal[~nonzero] == 0
    assert [features[i] for i in fig.fmrec_order] == M.index.tolist()
    # The order is the leaf order of average linkage on 1 - cosine.
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    idx = [NAMES.index(f) for f in features]
    U = unit_rows(model.V_[idx])
    D = np.clip(1 - U @ U.T, 0, 2)
    np.fill_diagonal(D, 0)
    expected = leaves_list(linkage(squareform((D + D.T) / 2, checks=False), "average"))
    assert fig.fmrec_order.tolist() == expected.tolist()
    assert_png_not_blank(fig, tmp_path / "heatmap.png")


def test_heatmap_labels_and_errors(model):
    fig = similarity_heatmap(model, [0, 1, 2], labels={0: "zero", 1: "one", 2: "two"})
    assert sorted(fig.fmrec_matrix.index) == ["one", "two", "zero"]
    with pytest.raises(ValueError, match="at least 2"):
        similarity_heatmap(model, [0])


def test_embedding_map_is_the_pca_projection(model, tmp_path):
    from sklearn.decomposition import PCA

    fig = embedding_map(model, feature_names=NAMES, label_top=5)
    coords = fig.fmrec_coords
    assert coords["feature"].tolist() == NAMES
    expected = PCA(n_components=2).fit_transform(model.V_.astype(np.float64))
    for axis, column in enumerate(("x", "y")):
        got = coords[column].to_numpy()
        sign = np.sign(got @ expected[:, axis])
        assert np.allclose(got, sign * expected[:, axis], atol=1e-6)
    # Colour by field; with no weights the labels go to the largest vectors.
    assert set(coords["color"]) == {"genre", "year", "country"}
    norms = np.linalg.norm(model.V_, axis=1)
    assert set(np.flatnonzero(coords["labelled"])) == set(np.argsort(-norms)[:5])
    assert_png_not_blank(fig, tmp_path / "map.png")


def test_embedding_map_colours_weights_and_selection(model):
    features = [f"genre={k}" for k in range(10)]
    first_letter = pd.Series({str(k): "even" if k % 2 == 0 else "odd" for k in range(10)})
    weights = {f"genre={k}": float(k) for k in range(10)}
    fig = embedding_map(model, features, color_by=first_letter, weights=weights, label_top=3,
                        feature_names=NAMES)
    coords = fig.fmrec_coords
    assert coords["color"].tolist() == ["even", "odd"] * 5
    assert coords.loc[coords["labelled"], "feature"].tolist() == ["genre=7", "genre=8",
                                                                 "genre=9"]
    by_field = embedding_map(model, field="year", feature_names=NAMES, label_top=0)
    assert by_field.fmrec_coords["feature"].str.startswith("year=").all()
    aligned = embedding_map(model, [0, 1, 2, 3], color_by=["a", "b", None, "a"], label_top=0)
    assert aligned.fmrec_coords["color"].tolist() == ["a", "b", "other", "a"]


def test_embedding_map_tsne_and_errors(model):
    fig = embedding_map(model, method="tsne", label_top=0,
                        method_options={"max_iter": 250, "n_jobs": 1})
    assert fig.fmrec_coords[["x", "y"]].notna().all().all()
    with pytest.raises(ValueError, match="method must be one of"):
        embedding_map(model, method="mds")
    with pytest.raises(ValueError, match="label_top must be >= 0, got -1"):
        embedding_map(model, label_top=-1)
    with pytest.raises(TypeError, match="label_top must be an integer, got 1.5"):
        embedding_map(model, label_top=1.5)
    with pytest.raises(ValueError, match="at least 3"):
        embedding_map(model, [0, 1])
    with pytest.raises(ValueError, match="color_by has 2 values"):
        embedding_map(model, [0, 1, 2], color_by=["a", "b"])
    try:
        import umap  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install umap-learn"):
            embedding_map(model, method="umap")


def test_recommender_map_by_item_id():
    ratings = pd.DataFrame({"user_id": np.repeat(np.arange(20), 5),
                            "item_id": np.tile(np.arange(10), 10),
                            "rating": np.arange(100) % 5 + 1.0})
    rec = Recommender(target="rating", model=FMRegressor(n_factors=3, n_epochs=3),
                      random_state=0).fit(ratings)
    popularity = pd.Series(rec.popularity_, index=rec.items_[:len(rec.popularity_)])
    titles = {i: f"movie {i}" for i in range(10)}
    fig = embedding_map(rec, field="item_id", weights=popularity, labels=titles, label_top=2)
    coords = fig.fmrec_coords
    assert len(coords) == 10 and coords["feature"].str.startswith("item:item_id=").all()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 2 and all(t.startswith("movie ") for t in texts)
    everything = embedding_map(rec, label_top=0)
    assert set(everything.fmrec_coords["color"]) == {"user_id", "item_id"}
    assert training_curves(rec).fmrec_series == ["train_loss", "objective"]


def test_training_curves_one_line_per_series(model, tmp_path):
    fig = training_curves(model)
    assert fig.fmrec_series == list(model.history_)
    assert set(model.history_) == {"train_loss", "objective", "val_rmse"}
    lines = [line for ax in fig.axes for line in ax.get_lines()]
    assert len(lines) == len(model.history_)
    for line, name in zip(lines, fig.fmrec_series, strict=True):
        assert np.allclose(line.get_ydata(), model.history_[name])
        assert line.get_xdata().tolist() == list(range(1, len(model.history_[name]) + 1))
    assert_png_not_blank(fig, tmp_path / "curves.png")
    sgd = FMClassifier(n_factors=2, n_epochs=3, solver="sgd", random_state=0).fit(
        sp.eye(4, format="csr"), [0, 1, 0, 1])
    assert training_curves(sgd).fmrec_series == ["train_loss"]
    with pytest.raises(ValueError, match="history"):
        training_curves(FMRegressor())


@pytest.fixture(scope="module")
def study():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("x", -3, 3) - 1) ** 2
                   + 0.01 * t.suggest_float("y", -3, 3) ** 2, n_trials=3)
    return study


def test_tuning_history(study, tmp_path):
    fig = tuning_history(study)
    history = fig.fmrec_history
    values = [t.value for t in study.trials]
    assert history["value"].tolist() == values
    assert history["best"].tolist() == np.minimum.accumulate(values).tolist()
    assert_png_not_blank(fig, tmp_path / "tuning.png")


def test_tuning_history_shows_pruned_trials(tmp_path):
    import optuna

    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=5.0))
    study.set_user_attr("fmrec_metric", "rmse")

    def objective(trial):
        x = trial.suggest_float("x", 0, 10)
        for step in range(3):
            trial.report(x + step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=12)
    fig = tuning_history(study)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) >= 1
    assert fig.fmrec_pruned["trial"].tolist() == [t.number for t in pruned]
    assert fig.fmrec_pruned["last_value"].tolist() == [
        t.intermediate_values[max(t.intermediate_values)] for t in pruned]
    assert len(fig.fmrec_history) == 12 - len(pruned)
    assert fig.axes[0].get_ylabel() == "rmse"
    assert_png_not_blank(fig, tmp_path / "pruned.png")


def test_param_importances(study, tmp_path):
    from optuna.importance import get_param_importances

    fig = param_importances(study)
    importances = fig.fmrec_importances
    assert set(importances.index) == {"x", "y"}
    assert importances.to_dict() == pytest.approx(get_param_importances(study))
    assert importances.is_monotonic_decreasing
    bars = fig.axes[0].patches
    assert sorted(b.get_width() for b in bars) == pytest.approx(sorted(importances))
    assert_png_not_blank(fig, tmp_path / "importances.png")


def test_empty_study_is_refused():
    optuna = pytest.importorskip("optuna")
    with pytest.raises(ValueError, match="no completed trials"):
        tuning_history(optuna.create_study())


def test_missing_matplotlib_says_how_to_install(monkeypatch, model):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install fmrec\[plot\]"):
        training_curves(model)


def test_demo_writes_non_blank_figures(tmp_path):
    from fmrec.cli.demo import _demo_figures, _DemoData
    from fmrec.datasets import make_recsys

    class Console:
        def note(self, message):
            raise AssertionError(message)

    data = make_recsys(n_users=60, n_items=40, n_interactions=1500, random_state=0)
    rec = Recommender(target="rating", model=FMRegressor(n_factors=4, n_epochs=3),
                      random_state=0).fit(data.interactions)
    demo = _DemoData("synthetic", data.interactions, data.interactions, data.users,
                     data.items)
    written = _demo_figures(rec, demo, tmp_path, Console())
    assert written.count(".png") == 3
    for name in ("similar_movies.png", "movie_map.png", "training_curves.png"):
        image = matplotlib.image.imread(tmp_path / name)
        assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 10


def test_demo_writes_tuning_figures(tmp_path):
    from fmrec.cli.demo import DEMO_TUNE, _demo_tuning
    from fmrec.datasets import make_recsys

    class Console:
        def note(self, message):
            assert "skipped" not in message

    data = make_recsys(n_users=60, n_items=40, n_interactions=1500, random_state=0)
    line = _demo_tuning(data.interactions, tmp_path, Console())
    assert f"{DEMO_TUNE['n_trials']} trials" in line and "best validation RMSE" in line
    for name in ("tuning_history.png", "param_importances.png"):
        image = matplotlib.image.imread(tmp_path / name)
        assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 10
