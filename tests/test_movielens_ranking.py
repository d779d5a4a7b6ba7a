"""Implicit feedback on MovieLens 100K (ratings >= 4 are the positives): FMRanker (BPR)
against popularity, for users with a history and for users known only by their
demographics. Skipped, with the reason, when the data is not available."""

import numpy as np
import pytest
from reference import popular_lists

from fmrec import Recommender
from fmrec.datasets import load_movielens
from fmrec.metrics import ranking_metrics
from fmrec.models.ranker import FMRanker


@pytest.fixture(scope="module")
def ml(ml100k_dir):
    data = load_movielens("100k", ml100k_dir, download=False)
    ratings = data.ratings
    positives = ratings.loc[ratings["rating"] >= 4, ["user_id", "item_id"]]
    return data, positives


def test_cold_start_users_from_demographics_beat_popularity(ml):
    """100 users (seed 0) held out of training entirely; only their age, gender and
    occupation are known. Items carry their genres."""
    data, positives = ml
    rng = np.random.default_rng(0)
    cold = rng.choice(positives["user_id"].unique(), 100, replace=False)
    train = positives[~positives["user_id"].isin(cold)]
    truth = positives[positives["user_id"].isin(cold)].rename(
        columns={"user_id": "user", "item_id": "item"})
    # The penalties of the FMRanker defaults before issue 14 (0.01). The defaults since (64
    # factors, 0.05, chosen on users with a history) measure 0.3849 here: stronger penalties
    # shrink the demographic weights cold users are scored with.
    rec = Recommender(model=FMRanker(n_factors=32, n_epochs=30, reg_linear=0.01,
                                     reg_factors=0.01, random_state=0),
                      user_features=data.users[["user_id", "age", "gender", "occupation"]],
                      item_features=data.items[["item_id", "genres"]], random_state=0)
    rec.fit(train)
    assert not np.isin(cold, rec.users_[:rec.seen_.shape[0]]).any()  # never trained on
    ndcg = ranking_metrics(rec.recommend(cold, n=10), truth, k=10)["ndcg@10"]
    baseline = ranking_metrics(popular_lists(train, cold), truth, k=10)["ndcg@10"]
    print(f"\ncold users, NDCG@10: FMRanker with demographics {ndcg:.4f}, popularity "
          f"{baseline:.4f}")
    # Measured: 0.4020 against 0.3837.
    assert ndcg > baseline + 0.01


def test_bpr_with_side_features_ranks_best(ml):
    """The issue's protocol: a per-user random 20% of each user's positives held out (seed 0).
    Settings were picked on a validation split carved the same way from the rest
    (``python benchmarks/bench_ranker.py``); this refits them and scores the test part."""
    from fmrec import FMClassifier
    from fmrec.split import train_test_split

    data, positives = ml
    train, test = train_test_split(positives, method="per_user", test_size=0.2,
                                   random_state=0)
    truth = test.rename(columns={"user_id": "user", "item_id": "item"})
    users = truth["user"].unique()

    def ndcg(rec):
        return ranking_metrics(rec.fit(train).recommend(users, n=10, unknown="popular"),
                               truth, k=10)["ndcg@10"]

    bpr = ndcg(Recommender(
        model=FMRanker(n_factors=64, reg_linear=0.05, reg_factors=0.05, n_epochs=30,
                       random_state=0),
        user_features=data.users[["user_id", "age", "gender", "occupation"]],
        item_features=data.items[["item_id", "genres"]], random_state=0))
    logloss = ndcg(Recommender(model=FMClassifier(n_factors=16, reg_factors=0.5, n_epochs=20,
                                                  random_state=0), random_state=0))
    baseline = ranking_metrics(popular_lists(train, users), truth, k=10)["ndcg@10"]
    print(f"\nNDCG@10: FMRanker + side features {bpr:.4f}, FMClassifier log loss {logloss:.4f}, "
          f"popularity {baseline:.4f} (implicit 0.7.3 in the benchmark: ALS 0.3120, BPR 0.2474)")
    # Measured: 0.3211, 0.2855, 0.1540. The best of implicit's models measured 0.3120.
    assert bpr >= 0.312
    assert bpr > logloss + 0.02 and logloss > baseline + 0.1
