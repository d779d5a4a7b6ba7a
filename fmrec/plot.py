"""Figures of a fitted FM: factor similarities, a 2-D map of the embeddings, training and
tuning curves.

Every function returns a ``matplotlib.figure.Figure``; save it with ``fig.savefig(path)``.
matplotlib is imported only when a function runs (``pip install fmrec[plot]``), and the
figures are drawn on the Agg canvas without going through ``pyplot``: nothing opens a
window or changes the application's backend, so they work on servers and in tests.
The numbers behind each figure are attached to it (``fig.fmrec_matrix``,
``fig.fmrec_coords``, ...) so they can be checked or reused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fmrec._validation import check_choice, check_interval
from fmrec.inspect import Embeddings, cosine, embeddings

__all__ = ["similarity_heatmap", "embedding_map", "training_curves", "tuning_history",
           "param_importances"]

_METHODS = ("pca", "tsne", "umap")


def _figure(width: float, height: float):
    """A Figure on an Agg canvas, without pyplot's global state."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("fmrec.plot needs matplotlib: pip install fmrec[plot]") from exc
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _per_feature(values, emb: Embeddings, index: np.ndarray, what: str) -> np.ndarray:
    """``values`` for the columns ``index``, as an object array (None where unknown).

    A mapping or Series is looked up by feature name, then by the value after the last "="
    (so ``{50: ...}`` or a Series indexed by item id finds ``"item:item_id=50"``); an
    array is aligned with ``index`` or covers every column of the model.
    """
    if isinstance(values, Mapping | pd.Series):
        lookup = values if isinstance(values, Mapping) else values.to_dict()
        out = np.empty(len(index), dtype=object)
        for k, name in enumerate(emb.label(index)):
            out[k] = _lookup(lookup, name)
        return out
    values = np.asarray(values, dtype=object)
    if values.ndim != 1:
        raise ValueError(f"{what} must be a mapping, a Series or a 1-D array, got shape "
                         f"{values.shape}")
    if len(values) == len(index):
        return values
    if len(values) == len(emb.V):
        return values[index]
    raise ValueError(f"{what} has {len(values)} values: give one per selected feature "
                     f"({len(index)}), one per model column ({len(emb.V)}), or a mapping")


def _lookup(mapping: Mapping, name):
    if name in mapping:
        return mapping[name]
    if isinstance(name, str) and "=" in name:
        key = name.rsplit("=", 1)[1]
        if key in mapping:
            return mapping[key]
        try:
            return mapping.get(int(key))
        except ValueError:
            return None
    return None


def _labels(emb: Embeddings, index: np.ndarray, labels) -> list[str]:
    if labels is None:
        return [str(x) for x in emb.label(index)]
    given = _per_feature(labels, emb, index, "labels")
    return [str(g) if g is not None else str(n) for g, n in zip(given, emb.label(index),
                                                                strict=True)]


# --------------------------------------------------------------------------------- similarity
def similarity_heatmap(model, features, labels=None, feature_names: Sequence[str] | None = None,
                       cmap: str = "RdBu_r"):
    """Cosine similarities of ``features``' factor vectors, clustered.

    Rows and columns are ordered by average-linkage hierarchical clustering on the
    distance 1 - cosine, so features that act alike sit in blocks.

    Parameters
    ----------
    model : FMRegressor, FMClassifier or Recommender
        A fitted model (see `fmrec.inspect.most_similar`).
    features : sequence of str or int
        Feature names or column indices (at least 2).
    labels : mapping, Series or sequence, optional
        Text for each feature (e.g. movie titles by item id); default the feature names.
    feature_names : sequence of str, optional
        Names of the model's columns (overrides a Recommender's).
    cmap : str, default="RdBu_r"
        Colour map, spanning cosine -1..1.

    Returns
    -------
    matplotlib.figure.Figure
        With ``fig.fmrec_matrix``: the plotted matrix (a DataFrame in clustered order,
        indexed by the labels) and ``fig.fmrec_order``: the positions in ``features``.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from fmrec import FMRegressor
    >>> from fmrec.plot import similarity_heatmap
    >>> X = sp.random(200, 6, density=0.4, format="csr", random_state=0)
    >>> model = FMRegressor(n_factors=3, n_epochs=5, random_state=0).fit(X, X.sum(axis=1).A1)
    >>> similarity_heatmap(model, [0, 1, 2, 3]).fmrec_matrix.shape
    (4, 4)
    """
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    emb = embeddings(model, feature_names)
    index = emb.index(features)
    if len(index) < 2:
        raise ValueError(f"features must name at least 2 features, got {len(index)}")
    S = cosine(emb.V[index], emb.V[index])
    D = np.clip(1.0 - S, 0.0, 2.0)
    np.fill_diagonal(D, 0.0)
    D = (D + D.T) / 2  # rounding can leave it a hair asymmetric; squareform wants symmetry
    order = leaves_list(linkage(squareform(D, checks=False), method="average"))
    names = _labels(emb, index, labels)
    ordered = [names[i] for i in order]
    matrix = pd.DataFrame(S[np.ix_(order, order)], index=ordered, columns=ordered)

    size = min(4 + 0.35 * len(index), 20)
    fig = _figure(size + 1.5, size)
    ax = fig.add_subplot()
    image = ax.imshow(matrix.to_numpy(), cmap=cmap, vmin=-1, vmax=1)
    ax.set_xticks(range(len(ordered)), ordered, rotation=90, fontsize=8)
    ax.set_yticks(range(len(ordered)), ordered, fontsize=8)
    ax.set_title("Cosine similarity of factor vectors")
    fig.colorbar(image, ax=ax, shrink=0.8, label="cosine")
    fig.fmrec_matrix = matrix
    fig.fmrec_order = order
    return fig


# ----------------------------------------------------------------------------------- 2-D map
def _project(V: np.ndarray, method: str, random_state, options: dict) -> np.ndarray:
    if method == "pca":
        centred = V - V.mean(axis=0)
        _, _, Vt = np.linalg.svd(centred, full_matrices=False)
        # sklearn's sign convention (svd_flip): each axis's largest loading is positive.
        signs = np.sign(Vt[np.arange(len(Vt)), np.argmax(np.abs(Vt), axis=1)])
        Vt = Vt * np.where(signs == 0, 1.0, signs)[:, None]
        coords = centred @ Vt[:2].T
        return np.column_stack([coords, np.zeros((len(V), 2 - coords.shape[1]))])
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(1.0, (len(V) - 1) / 3)))
        options = {"init": "pca", "perplexity": perplexity, **options}
        return TSNE(n_components=2, random_state=random_state, **options).fit_transform(V)
    try:
        import umap
    except ImportError as exc:
        raise ImportError("method='umap' needs the umap-learn package: pip install "
                          "umap-learn (or use method='pca' or 'tsne')") from exc
    return umap.UMAP(n_components=2, random_state=random_state, **options).fit_transform(V)


def embedding_map(model, features=None, color_by=None, method: str = "pca",
                  label_top: int = 10, weights=None, labels=None, field=None,
                  feature_names: Sequence[str] | None = None, random_state=0,
                  method_options: dict | None = None):
    """The selected factor vectors projected to 2-D, coloured, with the heaviest labelled.

    Parameters
    ----------
    model : FMRegressor, FMClassifier or Recommender
        A fitted model (see `fmrec.inspect.most_similar`).
    features : sequence of str or int, optional
        Features to show (default: all of ``field``, or every column).
    color_by : "field", mapping, Series or sequence, optional
        Colour of each point: by field (the default: the Recommender's feature group, or the
        name before "="), or by a category per feature, e.g. a movie's first genre as a
        Series indexed by item id (looked up as for ``labels``). Missing values are "other".
    method : {"pca", "tsne", "umap"}, default="pca"
        PCA of the centred vectors (exact, by SVD), scikit-learn's t-SNE, or UMAP when
        ``umap-learn`` is installed.
    label_top : int, default=10
        Label this many points: those of largest ``weights``, or of largest vector norm.
    weights : mapping, Series or sequence, optional
        Importance of each feature, e.g. ``pd.Series(rec.popularity_,
        index=rec.items_[:len(rec.popularity_)])`` for item ids.
    labels : mapping, Series or sequence, optional
        Text for each feature (e.g. movie titles by item id); default the feature names.
        A mapping or Series is looked up by feature name, then by the part after "=".
    field : str, slice or sequence, optional
        With ``features=None``: show only this field (see `fmrec.inspect.most_similar`).
    feature_names : sequence of str, optional
        Names of the model's columns (overrides a Recommender's).
    random_state : int, default=0
        Seeds t-SNE / UMAP.
    method_options : dict, optional
        Keyword arguments of ``sklearn.manifold.TSNE`` or ``umap.UMAP`` (e.g.
        ``{"perplexity": 10}``); t-SNE defaults to ``init="pca"`` and a perplexity of at
        most 30 that suits small selections.

    Returns
    -------
    matplotlib.figure.Figure
        With ``fig.fmrec_coords``: a DataFrame of ``feature``, ``x``, ``y``, ``color`` and
        ``labelled`` (bool), one row per point.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from fmrec import FMRegressor
    >>> from fmrec.plot import embedding_map
    >>> X = sp.random(200, 6, density=0.4, format="csr", random_state=0)
    >>> model = FMRegressor(n_factors=3, n_epochs=5, random_state=0).fit(X, X.sum(axis=1).A1)
    >>> embedding_map(model, label_top=2).fmrec_coords.shape
    (6, 5)
    """
    check_choice("method", method, _METHODS)
    check_interval("label_top", label_top, low=0, integer=True)
    emb = embeddings(model, feature_names)
    index = emb.field_index(field) if features is None else emb.index(features)
    if len(index) < 3:
        raise ValueError(f"an embedding map needs at least 3 features, got {len(index)}")
    V = emb.V[index]
    xy = _project(V, method, random_state, dict(method_options or {}))

    if color_by is None or (isinstance(color_by, str) and color_by == "field"):
        colors = emb.fields()[index]
    else:
        colors = _per_feature(color_by, emb, index, "color_by")
    colors = np.array(["other" if c is None or (np.ndim(c) == 0 and pd.isna(c)) else str(c)
                       for c in colors], dtype=object)
    if weights is None:
        weight = np.linalg.norm(V, axis=1)
    else:
        weight = np.array([np.nan if w is None else float(w)
                           for w in _per_feature(weights, emb, index, "weights")])
    ranked = np.argsort(-np.nan_to_num(weight, nan=-np.inf), kind="stable")
    labelled = np.zeros(len(index), dtype=bool)
    labelled[ranked[:label_top]] = True
    text = _labels(emb, index, labels)

    fig = _figure(9, 7.5)
    ax = fig.add_subplot()
    categories = pd.Series(colors).value_counts().index.tolist()  # largest first
    palette = _palette(len(categories))
    for category, color in zip(categories, palette, strict=True):
        at = colors == category
        ax.scatter(xy[at, 0], xy[at, 1], s=14, alpha=0.75, color=color, label=category,
                   linewidths=0)
    for k in np.flatnonzero(labelled):
        ax.annotate(text[k], xy[k], xytext=(3, 3), textcoords="offset points", fontsize=7)
    if 1 < len(categories) <= 25:
        ax.legend(fontsize=7, markerscale=1.5, loc="best", ncols=2 if len(categories) > 10
                  else 1)
    axis = {"pca": "PC", "tsne": "t-SNE ", "umap": "UMAP "}[method]
    ax.set_xlabel(f"{axis}1")
    ax.set_ylabel(f"{axis}2")
    ax.set_title(f"Factor vectors of {len(index)} features ({method.upper()})")
    fig.fmrec_coords = pd.DataFrame({"feature": emb.label(index), "x": xy[:, 0],
                                     "y": xy[:, 1], "color": colors, "labelled": labelled})
    return fig


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(k % cmap.N) for k in range(n)]


# ---------------------------------------------------------------------------------- training
def training_curves(model):
    """Every per-epoch series of ``history_`` (train loss, ALS objective, validation metric).

    Each series gets its own panel (their scales differ), sharing the epoch axis.

    Parameters
    ----------
    model : FMRegressor, FMClassifier, Recommender or dict
        A fitted model (a Recommender's ``model_`` is used) or a ``history_`` dict.

    Returns
    -------
    matplotlib.figure.Figure
        With ``fig.fmrec_series``: the names of the plotted series, in panel order.

    Examples
    --------
    >>> from fmrec.plot import training_curves
    >>> training_curves({"train_loss": [1.0, 0.5, 0.4]}).fmrec_series
    ['train_loss']
    """
    history = model if isinstance(model, Mapping) else getattr(
        getattr(model, "model_", model), "history_", None)
    if not history:
        raise ValueError("training_curves needs a fitted model (with history_) or a "
                         "non-empty history dict")
    names = [name for name, values in history.items() if len(values)]
    fig = _figure(7, 2.2 * len(names) + 0.6)
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names, strict=True):
        values = np.asarray(history[name], dtype=np.float64)
        ax.plot(np.arange(1, len(values) + 1), values, marker="." if len(values) < 30 else None)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("epoch")
    fig.suptitle("Training history")
    fig.fmrec_series = names
    return fig


# ------------------------------------------------------------------------------------ tuning
def _completed(study):
    import optuna

    if len(study.directions) != 1:
        raise ValueError("only single-objective studies can be plotted here")
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not trials:
        raise ValueError("the study has no completed trials")
    return trials


def tuning_history(study):
    """Objective value of every completed trial of an Optuna study and the best so far;
    pruned trials at the last value they reported, as crosses.

    Parameters
    ----------
    study : optuna.study.Study
        A single-objective study.

    Returns
    -------
    matplotlib.figure.Figure
        With ``fig.fmrec_history``: a DataFrame of ``trial``, ``value`` and ``best`` (the
        completed trials) and ``fig.fmrec_pruned``: ``trial`` and ``last_value`` of the
        pruned trials that reported a value.
    """
    import optuna

    trials = _completed(study)
    number = np.array([t.number for t in trials])
    value = np.array([t.value for t in trials], dtype=np.float64)
    if study.direction == optuna.study.StudyDirection.MINIMIZE:
        best = np.minimum.accumulate(value)
    else:
        best = np.maximum.accumulate(value)
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)])
              for t in study.trials
              if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values]
    pruned_frame = pd.DataFrame(pruned, columns=["trial", "last_value"])
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    ax.scatter(number, value, s=18, label="trial")
    if pruned:
        ax.scatter(pruned_frame["trial"], pruned_frame["last_value"], s=18, marker="x",
                   color="tab:gray", label="pruned (last reported)")
    ax.step(number, best, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(study.user_attrs.get("fmrec_metric", "objective"))
    ax.set_title(f"Tuning history ({study.direction.name.lower()})")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.fmrec_history = pd.DataFrame({"trial": number, "value": value, "best": best})
    fig.fmrec_pruned = pruned_frame
    return fig


def param_importances(study, evaluator=None):
    """Hyperparameter importances of an Optuna study (``optuna.importance``).

    Parameters
    ----------
    study : optuna.study.Study
        A single-objective study with at least two completed trials.
    evaluator : optuna importance evaluator, optional
        Default Optuna's (fANOVA).

    Returns
    -------
    matplotlib.figure.Figure
        With ``fig.fmrec_importances``: a Series of importance by parameter, largest first.
    """
    from optuna.importance import get_param_importances

    _completed(study)
    importances = pd.Series(get_param_importances(study, evaluator=evaluator), dtype=float)
    if importances.empty:
        raise ValueError("the study's trials have no parameters to rank")
    importances = importances.sort_values(ascending=False)
    fig = _figure(7, 1.2 + 0.45 * len(importances))
    ax = fig.add_subplot()
    ax.barh(importances.index[::-1], importances.to_numpy()[::-1])
    ax.set_xlabel("importance")
    ax.set_title("Hyperparameter importances")
    ax.grid(axis="x", alpha=0.3)
    fig.fmrec_importances = importances
    return fig
