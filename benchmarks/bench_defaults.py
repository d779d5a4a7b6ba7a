"""Untuned default configurations per task, on MovieLens 100K and on synthetic data.

Run by hand (not in CI); every figure is one fit with ``random_state=0`` and ``n_jobs=1``:

    FMREC_DATA_HOME=/path/to/datasets python benchmarks/bench_defaults.py \
        [--task ratings labels implicit] [--dataset ml100k synthetic] \
        [--candidates SUBSTRING|=NAME ...] [--features NAME ...] [--no-test]

Nothing is tuned: each candidate is a fixed configuration, scored on a validation split
carved from the training data (what a choice should rest on) and on the test split (what
it reports). Tasks:

* ``ratings``: an ``FMRegressor`` through ``Recommender(target="rating")``; RMSE.
  MovieLens: ``u1.base`` → ``u1.test``; synthetic: a random 20% (seed 0) held out as test;
  validation = a random 10% of the training part (seed 0).
* ``labels``: ``liked = rating >= 4`` with an ``FMClassifier``; AUC and log loss, same splits.
* ``implicit``: positives = ratings >= 4 of the whole log; a per-user random 20% held out as
  test (seed 0) and, the same way, 20% of the rest as validation (the protocol of
  ``tests/test_movielens_ranking.py``); ``FMRanker`` through ``Recommender()``; NDCG@10 of
  ``recommend(users, n=10, unknown="popular")``.

Feature sets: ids only; ids + side features (MovieLens: age, gender, occupation, genres;
synthetic: group, genres, and the device as context for ratings and labels), with or without
implicit sets (``implicit="users"`` / ``"both"``).

The synthetic data set is :func:`synthetic` (``fmrec.datasets.make_recsys`` at about the
size of MovieLens 100K): re-run it whenever ``make_recsys`` changes. Times are wall-clock
fit times on whatever the machine is doing meanwhile: indicative only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fmrec import FMClassifier, FMRegressor, Recommender
from fmrec.datasets import load_ml100k_split, load_movielens, make_recsys
from fmrec.metrics import auc, log_loss, ranking_metrics, rmse
from fmrec.models.ranker import FMRanker
from fmrec.recommend.defaults import default_model
from fmrec.split import train_test_split

KEYS = ["user_id", "item_id"]


@dataclass
class Data:
    """One data set for one task: validation and test splits, side features, context."""

    name: str
    val_train: pd.DataFrame
    val: pd.DataFrame
    train: pd.DataFrame
    test: pd.DataFrame
    side: dict = field(default_factory=dict)
    context: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ data sets
def movielens(task: str) -> Data:
    data = load_movielens("100k", download=False)
    side = {"user_features": data.users[["user_id", "age", "gender", "occupation"]],
            "item_features": data.items[["item_id", "genres"]]}
    if task == "implicit":
        return _ranking_data("ml100k", data.ratings, side)
    base, test = load_ml100k_split("u1")
    return _pointwise_data("ml100k", base, test, side, [], task)


def synthetic(task: str, n_users: int = 1500, n_items: int = 800,
              n_interactions: int = 80_000, random_state: int = 0) -> Data:
    """``make_recsys`` at about MovieLens 100K's size; ratings >= 4 are the positives."""
    data = make_recsys(n_users=n_users, n_items=n_items, n_interactions=n_interactions,
                       random_state=random_state)
    ratings = data.interactions
    side = {"user_features": data.users, "item_features": data.items}
    if task == "implicit":
        return _ranking_data("synthetic", ratings, side)
    train, test = train_test_split(ratings, test_size=0.2, random_state=0)
    return _pointwise_data("synthetic", train, test, side, ["device"], task)


def _pointwise_data(name, train, test, side, context, task) -> Data:
    if task == "labels":
        train, test = (f.assign(liked=(f["rating"] >= 4).astype(np.int64)) for f in (train, test))
    val_train, val = train_test_split(train, test_size=0.1, random_state=0)
    return Data(name, val_train, val, train, test, side, context)


def _ranking_data(name, ratings, side) -> Data:
    positives = ratings.loc[ratings["rating"] >= 4, KEYS].reset_index(drop=True)
    train, test = train_test_split(positives, method="per_user", test_size=0.2, random_state=0)
    val_train, val = train_test_split(train, method="per_user", test_size=0.2, random_state=0)
    return Data(name, val_train, val, train, test, side)


DATASETS: dict[str, Callable[[str], Data]] = {"ml100k": movielens, "synthetic": synthetic}


# ------------------------------------------------------------------------------ candidates
def _pointwise(**params) -> Callable[[type], object]:
    return lambda cls: cls(**params)


POINTWISE = {
    "als k16 e20 (old Recommender default)": _pointwise(n_factors=16, n_epochs=20),
    "als k8 e50 (class default)": _pointwise(),
    "als k16 e50": _pointwise(n_factors=16),
    "als k32 e50": _pointwise(n_factors=32),
    "als k16 e50 reg3": _pointwise(n_factors=16, reg_factors=3.0),
    "als k32 e50 reg3": _pointwise(n_factors=32, reg_factors=3.0),
    "sgd (class defaults)": _pointwise(solver="sgd"),
    "mcmc k8 (default sweeps)": _pointwise(solver="mcmc"),
    "mcmc k16 (default sweeps)": _pointwise(solver="mcmc", n_factors=16),
    "mcmc k32 (default sweeps)": _pointwise(solver="mcmc", n_factors=32),
    "mcmc k16 e100": _pointwise(solver="mcmc", n_factors=16, n_epochs=100),
    "mcmc k8 e200": _pointwise(solver="mcmc", n_epochs=200),
    "mcmc k16 e200": _pointwise(solver="mcmc", n_factors=16, n_epochs=200),
    "mcmc k32 e200": _pointwise(solver="mcmc", n_factors=32, n_epochs=200),
    # Thinned: at most 50 samples kept (memory, saved size and recommend() time).
    "mcmc k8 e200 s50": _pointwise(solver="mcmc", n_epochs=200, n_samples=50),
    "mcmc k16 e200 s50": _pointwise(solver="mcmc", n_factors=16, n_epochs=200, n_samples=50),
    # Whatever fmrec.recommend.defaults chooses now (mcmc k8 e200 s50 when it was written).
    "default_model()": lambda cls: default_model("rating" if cls is FMRegressor else "label"),
}

# Changes to the old FMRanker defaults, spelled out so the rows keep their meaning when the
# class defaults change.
OLD_RANKER = dict(n_factors=32, n_epochs=30, learning_rate=0.05, reg_linear=0.01,
                  reg_factors=0.01, n_candidates=5, negative_sampling="uniform")


def _ranker(n_factors=32, reg=0.01, **params) -> dict:
    return {**OLD_RANKER, "n_factors": n_factors, "reg_linear": reg, "reg_factors": reg,
            **params}


RANKER = {
    "old default (k32 e30 lr.05 reg.01 nc5)": _ranker(),
    "k64": _ranker(64),
    "k128": _ranker(128),
    "k32 reg.05": _ranker(32, 0.05),
    "k64 reg.02": _ranker(64, 0.02),
    "k64 reg.005": _ranker(64, 0.005),
    "k64 reg.05": _ranker(64, 0.05),
    "k64 reg.1": _ranker(64, 0.1),
    "k64 reg.05 e50": _ranker(64, 0.05, n_epochs=50),
    "k64 reg.05 lr.1": _ranker(64, 0.05, learning_rate=0.1),
    "k64 reg.05 nc10": _ranker(64, 0.05, n_candidates=10),
    "k64 reg.05 nc1": _ranker(64, 0.05, n_candidates=1),
    "k64 reg.05 popularity": _ranker(64, 0.05, negative_sampling="popularity"),
    "k128 reg.05": _ranker(128, 0.05),
    "Recommender() as shipped": None,  # the model=None path: whatever the defaults are now
}

FEATURES = {
    "ratings": ["ids", "side", "side+implicit users", "side+implicit both"],
    "labels": ["ids", "side", "side+implicit users", "side+implicit both"],
    "implicit": ["ids", "ids+implicit users", "side", "side+implicit users"],
}


def recommender(data: Data, features: str, task: str, model) -> Recommender:
    kwargs = {"random_state": 0, "model": model}
    if "side" in features:
        kwargs.update(data.side)
        if task != "implicit" and data.context:
            kwargs["context"] = data.context
    if "implicit" in features:
        kwargs["implicit"] = features.rsplit(" ", 1)[1]
    if task != "implicit":
        kwargs["target"] = "rating" if task == "ratings" else "liked"
    return Recommender(**kwargs)


# ------------------------------------------------------------------------------ scoring
def score(task: str, rec: Recommender, train: pd.DataFrame, heldout: pd.DataFrame) -> dict:
    """Fit on ``train``, score ``heldout``: the task's metrics and the fit's wall time."""
    start = time.perf_counter()
    rec.fit(train)
    seconds = time.perf_counter() - start
    if task == "implicit":
        truth = heldout.rename(columns={"user_id": "user", "item_id": "item"})
        lists = rec.recommend(truth["user"].unique(), n=10, unknown="popular")
        return {"ndcg@10": ranking_metrics(lists, truth, k=10)["ndcg@10"], "sec": seconds}
    pred = rec.predict(heldout)
    if task == "ratings":
        return {"rmse": rmse(heldout["rating"], pred), "sec": seconds}
    return {"auc": auc(heldout["liked"], pred), "logloss": log_loss(heldout["liked"], pred),
            "sec": seconds}


MAIN_METRIC = {"ratings": ("rmse", -1), "labels": ("auc", 1), "implicit": ("ndcg@10", 1)}


def run(task: str, datasets: list[str], candidates: list[str], features: list[str],
        with_test: bool = True) -> pd.DataFrame:
    rows = []
    for ds_name in datasets:
        data = DATASETS[ds_name](task)
        for feat in FEATURES[task]:
            if features and feat not in features:
                continue
            for cand in candidates:
                model = make_model(task, cand)
                for split in ("val", "test") if with_test else ("val",):
                    train, heldout = ((data.val_train, data.val) if split == "val"
                                      else (data.train, data.test))
                    rec = recommender(data, feat, task, model)
                    m = score(task, rec, train, heldout)
                    rows.append({"dataset": ds_name, "features": feat, "candidate": cand,
                                 "split": split, **m})
                    print(f"  {task:8s} {ds_name:9s} {feat:22s} {cand:40s} {split:4s} "
                          + " ".join(f"{k}={v:.4f}" for k, v in m.items()), flush=True)
    return pd.DataFrame(rows)


def make_model(task: str, candidate: str):
    if task == "implicit":
        params = RANKER[candidate]
        return None if params is None else FMRanker(**params)
    return POINTWISE[candidate](FMRegressor if task == "ratings" else FMClassifier)


def report(task: str, results: pd.DataFrame) -> None:
    """Per candidate: the metric per (data set, features, split), the mean fit time, and
    the mean regret on validation (distance to the best candidate of each column)."""
    metric, sign = MAIN_METRIC[task]
    table = results.pivot_table(index="candidate", columns=["dataset", "features", "split"],
                                values=metric, sort=False)
    val = table.xs("val", axis=1, level="split")
    regret = ((val.max() - val) if sign > 0 else (val - val.min())).mean(axis=1)
    out = table.copy()
    out[("", "mean val regret", "")] = regret
    out[("", "mean fit s", "")] = results.groupby("candidate", sort=False)["sec"].mean()
    with pd.option_context("display.width", 250, "display.max_columns", 50,
                           "display.float_format", "{:.4f}".format):
        print(f"\n== {task}: {metric} ==")
        print(out.sort_values(("", "mean val regret", "")).to_string())
        if task == "labels":
            print("\nlog loss:")
            print(results.pivot_table(index="candidate",
                                      columns=["dataset", "features", "split"],
                                      values="logloss", sort=False).to_string())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", nargs="+", default=["ratings", "labels", "implicit"],
                    choices=["ratings", "labels", "implicit"])
    ap.add_argument("--dataset", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--candidates", nargs="+", default=[],
                    help="keep candidates whose name contains one of these substrings "
                    "(or, written =NAME, is exactly NAME)")
    ap.add_argument("--features", nargs="+", default=[],
                    help="feature sets to run (exact names, e.g. ids side)")
    ap.add_argument("--no-test", action="store_true", help="validation splits only")
    args = ap.parse_args()
    for task in args.task:
        names = list(RANKER if task == "implicit" else POINTWISE)
        if args.candidates:
            names = [n for n in names if any(n == s[1:] if s.startswith("=") else s in n
                                             for s in args.candidates)]
        results = run(task, args.dataset, names, args.features, not args.no_test)
        if len(results):
            report(task, results)


if __name__ == "__main__":
    main()
