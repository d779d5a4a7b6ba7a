"""``fmrec demo``: popularity, a bias baseline and four FMs at the Recommender's defaults on
MovieLens 100K (or synthetic ratings when it is absent), compared in one table; the best FM's
top-10 lists are written out.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fmrec import datasets, plot  # plot imports matplotlib only when a figure is drawn
from fmrec.cli import io
from fmrec.metrics import mae, ranking_metrics, rmse
from fmrec.models.fm import FMRegressor
from fmrec.recommend.defaults import default_model
from fmrec.recommend.recommender import Recommender
from fmrec.split import train_test_split

# -------------------------------------------------------------------------------------- demo
# Every FM of the demo is what a newcomer gets: the Recommender's own default model
# (fmrec.default_model), nothing tuned. The log-loss ranker is the default for implicit
# feedback with context columns, shown here without them beside BPR.
# The fallback: MovieLens 100K's shape scaled down to run in seconds (67 ratings a user, its
# median is 65; 6.7% of the cells rated, its 6.3%) and its noise: the best FMs reach RMSE
# ~0.88 there on ratings that spread 1.13, so much of a rating is not predictable
# (make_recsys's default noise, 0.3, is far less).
DEMO_SYNTHETIC = {"n_users": 600, "n_items": 1000, "n_interactions": 40_000, "noise": 0.9}
DEMO_K = 10
DEMO_TUNE = {"n_trials": 12, "n_epochs": 30}  # a short search on ids, for its figures
DEMO_HEATMAP_ITEMS, DEMO_FIGURE_ITEMS = 20, 300  # most-rated movies in the figures
NDCG = f"NDCG@{DEMO_K}"
DEMO_RELEVANT = 4.0  # test ratings >= this are the items a top-10 list should find
# Koren's damping of the baseline biases (shrink towards 0 for rarely rated items/users).
BIAS_REG_ITEM, BIAS_REG_USER = 25.0, 10.0


@dataclass
class _DemoData:
    description: str
    train: pd.DataFrame
    test: pd.DataFrame
    users: pd.DataFrame  # id plus the side columns the feature model uses
    items: pd.DataFrame
    titles: pd.Series | None = None  # item id -> title, for the figures


def _demo_data(data_home: str | None, download: bool, console) -> _DemoData:
    """MovieLens 100K (u1) when it is on disk or ``download`` fetches it, else synthetic
    ratings split 80/20 at random."""
    home = datasets.data_home(data_home)
    if download and not (home / "ml-100k").is_dir():
        console.note(f"downloading MovieLens 100K from {datasets.MOVIELENS_URLS['100k']} "
                     f"into {home} (about 5 MB, SHA-256 checked)")
    try:
        # A failed download raises ConnectionError (or ValueError for a bad digest): the
        # user asked for the real data, so no silent fallback then.
        ml = datasets.load_movielens("100k", data_home, download=download)
    except FileNotFoundError:
        if download:
            raise
        console.note(f"MovieLens 100K not found in {home}: using synthetic data instead "
                     "(fmrec demo --download fetches MovieLens, or set FMREC_DATA_HOME or "
                     "--data-home to a folder with ml-100k/)")
        data = datasets.make_recsys(**DEMO_SYNTHETIC, random_state=0)
        train, test = train_test_split(data.interactions, test_size=0.2, random_state=0)
        return _DemoData(f"synthetic ratings ({len(data.interactions)} from "
                         f"{DEMO_SYNTHETIC['n_users']} users on {DEMO_SYNTHETIC['n_items']} "
                         "items), random 80/20 split", train, test, data.users, data.items)
    if "u1" in ml.splits:
        (train, test), split = ml.splits["u1"], "official u1 split"
    else:
        train, test = train_test_split(ml.ratings, test_size=0.2, random_state=0)
        split = "random 80/20 split"
    return _DemoData(f"MovieLens 100K from {ml.path}, {split}", train, test,
                     ml.users[["user_id", "age", "gender", "occupation"]],
                     ml.items[["item_id", "genres", "year"]],  # a missing year is imputed
                     ml.items.set_index("item_id")["title"])


def _bias_baseline(train: pd.DataFrame):
    """Global mean plus damped item, then user, biases (Koren 2010, eq. 2): (mu, b_u, b_i)."""
    r = train["rating"].to_numpy(np.float64)
    mu = float(r.mean())
    by_item = pd.Series(r - mu).groupby(train["item_id"].to_numpy()).agg(["sum", "size"])
    b_i = by_item["sum"] / (BIAS_REG_ITEM + by_item["size"])
    rest = r - mu - b_i.reindex(train["item_id"].to_numpy()).to_numpy()
    by_user = pd.Series(rest).groupby(train["user_id"].to_numpy()).agg(["sum", "size"])
    return mu, by_user["sum"] / (BIAS_REG_USER + by_user["size"]), b_i


def _global_top_n(item_scores: pd.Series, train: pd.DataFrame, users, n: int) -> pd.DataFrame:
    """Every user's ``n`` best unseen items under one item ordering (popularity, bias)."""
    order = np.argsort(-item_scores.to_numpy(), kind="stable")
    ranked, scores = item_scores.index.to_numpy()[order], item_scores.to_numpy()[order]
    users = np.asarray(users)
    rows = pd.Index(users).get_indexer(train["user_id"])
    cols = pd.Index(ranked).get_indexer(train["item_id"])
    allowed = np.ones((len(users), len(ranked)), dtype=bool)
    allowed[rows[(rows >= 0) & (cols >= 0)], cols[(rows >= 0) & (cols >= 0)]] = False
    position = np.cumsum(allowed, axis=1)
    u, c = np.nonzero(allowed & (position <= n))  # row-major: each user's items in order
    return pd.DataFrame({"user": users[u], "item": ranked[c], "score": scores[c],
                         "rank": position[u, c]})


def _demo_row(name: str, test: pd.DataFrame, predicted, recs: pd.DataFrame,
              relevant: pd.DataFrame, seconds: float | None) -> dict:
    ranking = ranking_metrics(recs, io.truth_pairs(relevant, "user_id", "item_id"), k=DEMO_K)
    row = {"model": name, "RMSE": np.nan, "MAE": np.nan,
           NDCG: ranking[f"ndcg@{DEMO_K}"],
           f"P@{DEMO_K}": ranking[f"precision@{DEMO_K}"], "fit s": seconds}
    if predicted is not None:
        row["RMSE"], row["MAE"] = rmse(test["rating"], predicted), mae(test["rating"], predicted)
    return row


def _format_table(rows: list[dict]) -> str:
    columns = [("RMSE", 8, 4), ("MAE", 8, 4), (NDCG, 9, 4), (f"P@{DEMO_K}", 8, 4),
               ("fit s", 7, 1)]

    def cell(value, width: int, digits: int) -> str:
        missing = value is None or not np.isfinite(value)
        return f"{'-':>{width}}" if missing else f"{value:>{width}.{digits}f}"

    lines = [f"{'model':<48}" + "".join(f"{name:>{width}}" for name, width, _ in columns)]
    lines += [f"{row['model']:<48}" + "".join(cell(row[name], width, digits)
                                              for name, width, digits in columns)
              for row in rows]
    return "\n".join(lines)


def run_demo(args: argparse.Namespace, console) -> None:
    """Compare popularity, a bias baseline and four FMs; save the best FM's lists."""
    start = time.perf_counter()
    data = _demo_data(args.data_home, args.download, console)
    train, test = data.train, data.test
    relevant = test[test["rating"] >= DEMO_RELEVANT]
    users = pd.unique(relevant["user_id"])
    console.note(f"{data.description}: {len(train)} train / {len(test)} test ratings; ranking "
                 f"against the {len(relevant)} test ratings >= {DEMO_RELEVANT:g} of "
                 f"{len(users)} users")
    rows = []
    popularity = train.groupby("item_id").size().astype(np.float64)
    rows.append(_demo_row("popularity (most-rated unseen items)", test, None,
                          _global_top_n(popularity, train, users, DEMO_K), relevant, None))

    mu, b_u, b_i = _bias_baseline(train)
    predicted = (mu + b_u.reindex(test["user_id"].to_numpy()).fillna(0).to_numpy()
                 + b_i.reindex(test["item_id"].to_numpy()).fillna(0).to_numpy())
    predicted = np.clip(predicted, train["rating"].min(), train["rating"].max())
    rows.append(_demo_row("baseline: mean + damped user/item biases", test, predicted,
                          _global_top_n(b_i, train, users, DEMO_K), relevant, None))

    features = {"user_features": data.users, "item_features": data.items}
    models = [  # (label, recommender, its model: None for the Recommender's default)
        ("FM, user and item ids", Recommender(target="rating"), None),
        ("FM, ids + side features + implicit users/items",
         Recommender(target="rating", implicit="both", **features), None),
        ("FM ranker: rated vs 4 sampled unrated, features",
         Recommender(target=None, negatives=4, **features),
         default_model("implicit", has_context=True)),
        ("FM ranker: BPR, hard negatives, features", Recommender(target=None, **features),
         None),
    ]
    fitted = {}
    for name, rec, model in models:
        model = rec.make_model() if model is None else model
        model.set_params(random_state=0, n_jobs=-1, verbose=console.verbose)
        rec.set_params(model=model, random_state=0)
        with console.training(name, model.n_epochs) as timer:
            rec.fit(train)
        # A ranker's predictions are probabilities of "rated", not ratings: no RMSE for it.
        predicted = rec.predict(test) if rec.target is not None else None
        rows.append(_demo_row(name, test, predicted,
                              rec.recommend(users, n=DEMO_K, unknown="popular"), relevant,
                              timer["seconds"]))
        fitted[name] = rec
    print(f"{data.description}\n{_format_table(rows)}")

    # The FM whose lists came out best is the one worth keeping.
    name = max((row for row in rows if row["model"] in fitted), key=lambda row: row[NDCG])["model"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    everyone = pd.unique(np.concatenate([data.users["user_id"].to_numpy(),
                                         train["user_id"].to_numpy()]))
    recs = fitted[name].recommend(everyone, n=DEMO_K, unknown="popular")
    io.write_table(recs, out / "recommendations.csv")
    fitted[name].save(out / "model.npz")
    figures = _demo_figures(fitted[name], data, out, console)
    print(f"\nBest {NDCG} of the FMs: '{name}'. Its top-{DEMO_K} lists for "
          f"{recs['user'].nunique()} users: {out / 'recommendations.csv'}; the model: "
          f"{out / 'model.npz'}. {time.perf_counter() - start:.1f} s in all.")
    if figures:
        print(f"Figures of its movie embeddings and training: {figures}")
    tuned = _demo_tuning(train, out, console)
    if tuned:
        print(tuned)


def _demo_figures(rec: Recommender, data: _DemoData, out: Path, console) -> str:
    """Figures of the best FM's item embeddings and training; their paths, or ""."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        console.note("figures skipped: matplotlib is not installed (pip install fmrec[plot])")
        return ""
    # Most-rated first: well-known movies, and factor vectors trained on many ratings.
    trained = rec.items_[:len(rec.popularity_)]
    popularity = pd.Series(rec.popularity_, index=trained).sort_values(ascending=False,
                                                                       kind="stable")
    titles = data.titles if data.titles is not None else pd.Series(
        {i: f"item {i}" for i in trained})
    first_genre = data.items.set_index("item_id")["genres"].map(
        lambda g: g[0] if len(g) else "(none)")
    ids = [f"item:item_id={i}" for i in popularity.index[:DEMO_FIGURE_ITEMS]]
    figures = {
        "similar_movies.png": plot.similarity_heatmap(
            rec, ids[:DEMO_HEATMAP_ITEMS], labels=titles),
        "movie_map.png": plot.embedding_map(
            rec, ids, color_by=first_genre, weights=popularity, labels=titles, label_top=12),
        "training_curves.png": plot.training_curves(rec),
    }
    for file, fig in figures.items():
        fig.savefig(out / file, dpi=100)
    return ", ".join(str(out / file) for file in figures)


def _demo_tuning(train: pd.DataFrame, out: Path, console) -> str:
    """A short ``fmrec.tune`` search of the ids-only FM, drawn as the two study figures; a
    line that says what it found, or "" without Optuna or matplotlib."""
    try:
        import matplotlib  # noqa: F401
        import optuna
    except ImportError:
        console.note("tuning figures skipped: they need pip install 'fmrec[tune,plot]'")
        return ""
    from fmrec.tuning.search import tune  # needs the tune extra (optuna)

    saved = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console.note(f"tuning the ids-only FM: {DEMO_TUNE['n_trials']} trials of fmrec.tune")
    try:
        result = tune(Recommender(target="rating", random_state=0,
                                  model=FMRegressor(n_epochs=DEMO_TUNE["n_epochs"])),
                      train, n_trials=DEMO_TUNE["n_trials"], random_state=0, refit=False)
    finally:
        optuna.logging.set_verbosity(saved)
    files = {"tuning_history.png": plot.tuning_history(result.study),
             "param_importances.png": plot.param_importances(result.study)}
    for file, fig in files.items():
        fig.savefig(out / file, dpi=100)
    return (f"{DEMO_TUNE['n_trials']} trials of fmrec.tune on the ids-only FM: best validation "
            f"{result.metric.upper()} {result.best_score:.4f}; figures: "
            + ", ".join(str(out / file) for file in files))
