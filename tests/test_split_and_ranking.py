"""Ranking metrics at k (fmrec.metrics) and train/test splits (fmrec.split).

The metrics are checked against hand-computed examples and against a slow per-user Python
reference on random data; the splits against their documented sizes and invariants.
"""

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmrec.metrics import (
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)
from fmrec.split import kfold_split, train_test_split

REPO = Path(__file__).resolve().parents[1]


def recs_frame(lists: dict) -> pd.DataFrame:
    """{user: [item at rank 1, item at rank 2, ...]} -> (user, item, rank) frame."""
    rows = [(u, item, r) for u, items in lists.items() for r, item in enumerate(items, 1)]
    return pd.DataFrame(rows, columns=["user", "item", "rank"])


def rel_frame(sets: dict) -> pd.DataFrame:
    rows = [(u, item) for u, items in sets.items() for item in items]
    return pd.DataFrame(rows, columns=["user", "item"])


# ---------------------------------------------------------------------------- hand examples

# User 1 hits "b" at position 2 of 2 relevant; user 2 hits "a" at position 1 of 1 relevant;
# user 3 has a relevant item but no recommendations (scores 0); user 4 has no relevant item
# (ignored by the means, but its "x" counts for coverage).
HAND_RECS = recs_frame({1: ["a", "b", "c"], 2: ["a", "e"], 4: ["x"]})
HAND_REL = rel_frame({1: ["b", "d"], 2: ["a"], 3: ["c"]})


def test_hand_example_k3():
    got = ranking_metrics(HAND_RECS, HAND_REL, k=3, n_items=10)
    # precision: (1/3 + 1/3 + 0) / 3; precision divides by k even for user 2's 2-item list.
    # recall: (1/2 + 1/1 + 0) / 3.
    # ndcg: user 1 = (1/log2 3) / (1 + 1/log2 3) = 0.386853, user 2 = 1, user 3 = 0.
    # map: user 1 = (1/2) / min(3, 2) = 0.25, user 2 = 1, user 3 = 0.
    # coverage: {a, b, c, e, x} / 10.
    expected = {"precision@3": 2 / 9, "recall@3": 0.5, "ndcg@3": 0.46228426907818054,
                "map@3": 1.25 / 3, "hit_rate@3": 2 / 3, "coverage@3": 0.5}
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name


def test_hand_example_k1():
    got = ranking_metrics(HAND_RECS, HAND_REL, k=1, n_items=10)
    # Only the first item counts: user 1 misses with "a", user 2 hits with "a".
    expected = {"precision@1": 1 / 3, "recall@1": 1 / 3, "ndcg@1": 1 / 3, "map@1": 1 / 3,
                "hit_rate@1": 1 / 3, "coverage@1": 0.2}
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name


def test_hand_example_several_hits():
    recs = recs_frame({7: ["r1", "r2", "r3", "r4", "r5"]})
    rel = rel_frame({7: ["r1", "r3", "r5", "z"]})
    got = ranking_metrics(recs, rel, k=5)
    assert got["precision@5"] == pytest.approx(3 / 5)
    assert got["recall@5"] == pytest.approx(3 / 4)
    # AP = (1/1 + 2/3 + 3/5) / min(5, 4) = 0.566667
    assert got["map@5"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)
    # DCG = 1 + 1/log2(4) + 1/log2(6); IDCG = sum 1/log2(i + 1), i = 1..4
    assert got["ndcg@5"] == pytest.approx(0.7365896932159578)
    assert got["hit_rate@5"] == 1.0
    assert "coverage@5" not in got


def test_wrappers_match_dict():
    full = ranking_metrics(HAND_RECS, HAND_REL, k=3)
    for fn, name in [(precision_at_k, "precision"), (recall_at_k, "recall"),
                     (ndcg_at_k, "ndcg"), (map_at_k, "map"), (hit_rate_at_k, "hit_rate")]:
        assert fn(HAND_RECS, HAND_REL, k=3) == full[f"{name}@3"]


def test_custom_column_names():
    recs = HAND_RECS.rename(columns={"user": "u", "item": "i", "rank": "pos"})
    rel = HAND_REL.rename(columns={"user": "u", "item": "i"})
    got = ranking_metrics(recs, rel, k=3, user_col="u", item_col="i", rank_col="pos")
    assert got == ranking_metrics(HAND_RECS, HAND_REL, k=3)


# -------------------------------------------------------------------- brute-force reference

def reference_metrics(recs: pd.DataFrame, rel: pd.DataFrame, k: int) -> dict:
    """Per-user loops straight from the definitions."""
    lists = {}
    for user, group in recs.groupby("user"):
        lists[user] = list(group.sort_values("rank")["item"])[:k]
    relevant = {}
    for user, item in zip(rel["user"], rel["item"], strict=True):
        relevant.setdefault(user, set()).add(item)
    scores = {"precision": [], "recall": [], "ndcg": [], "map": [], "hit_rate": []}
    for user, rel_items in relevant.items():
        top = lists.get(user, [])
        hits = [item in rel_items for item in top]
        n_hits = sum(hits)
        scores["precision"].append(n_hits / k)
        scores["recall"].append(n_hits / len(rel_items))
        dcg = sum(1 / math.log2(i + 2) for i, h in enumerate(hits) if h)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(rel_items))))
        scores["ndcg"].append(dcg / idcg)
        ap, seen = 0.0, 0
        for i, h in enumerate(hits):
            if h:
                seen += 1
                ap += seen / (i + 1)
        scores["map"].append(ap / min(k, len(rel_items)))
        scores["hit_rate"].append(float(n_hits > 0))
    return {f"{name}@{k}": float(np.mean(v)) for name, v in scores.items()}


def random_ranking_data(seed: int, n_users: int = 60, n_items: int = 40):
    rng = np.random.default_rng(seed)
    recs, rel = [], []
    for user in range(n_users):
        n_rec = rng.integers(0, 16)  # some users get no recommendations
        items = rng.permutation(n_items)[:n_rec]
        # Ranks with gaps and shuffled rows: only their order within a user may matter.
        ranks = np.sort(rng.choice(np.arange(1, 100), size=n_rec, replace=False))
        recs += [(user, int(i), int(r)) for i, r in zip(items, ranks, strict=True)]
        if rng.random() < 0.85:  # the rest have nothing held out and must be ignored
            rel += [(user, int(i)) for i in rng.choice(n_items, rng.integers(1, 12))]
    recs = pd.DataFrame(recs, columns=["user", "item", "rank"]).sample(frac=1, random_state=seed)
    return recs, pd.DataFrame(rel, columns=["user", "item"])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 10, 50])
def test_matches_brute_force_reference(seed, k):
    recs, rel = random_ranking_data(seed)
    got = ranking_metrics(recs, rel, k=k)
    want = reference_metrics(recs, rel, k)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name


def test_coverage_matches_brute_force():
    recs, rel = random_ranking_data(3)
    top = recs.sort_values("rank").groupby("user").head(5)
    assert ranking_metrics(recs, rel, k=5, n_items=40)["coverage@5"] == \
        top["item"].nunique() / 40


# --------------------------------------------------------------------------------- edges

def test_k_larger_than_lists():
    recs = recs_frame({1: ["a", "b"]})
    got = ranking_metrics(recs, rel_frame({1: ["a", "b"]}), k=5)
    # Both recommended items are relevant: perfect except precision, which divides by k.
    assert got == pytest.approx({"precision@5": 0.4, "recall@5": 1.0, "ndcg@5": 1.0,
                                 "map@5": 1.0, "hit_rate@5": 1.0})


def test_users_without_recommendations_score_zero():
    got = ranking_metrics(recs_frame({1: ["a"]}), rel_frame({1: ["a"], 2: ["a"], 3: ["b"]}),
                          k=1)
    assert got == pytest.approx({"precision@1": 1 / 3, "recall@1": 1 / 3, "ndcg@1": 1 / 3,
                                 "map@1": 1 / 3, "hit_rate@1": 1 / 3})


def test_no_recommendations_at_all():
    empty = pd.DataFrame({"user": pd.Series([], dtype=int), "item": pd.Series([], dtype=int),
                          "rank": pd.Series([], dtype=int)})
    got = ranking_metrics(empty, rel_frame({1: [3]}), k=3, n_items=5)
    assert all(v == 0.0 for v in got.values())


def test_repeated_relevant_pairs_count_once():
    rel = pd.concat([HAND_REL, HAND_REL])
    assert ranking_metrics(HAND_RECS, rel, k=3) == ranking_metrics(HAND_RECS, HAND_REL, k=3)


def test_duplicate_recommendations_raise():
    recs = pd.concat([HAND_RECS, pd.DataFrame({"user": [1], "item": ["a"], "rank": [4]})])
    with pytest.raises(ValueError, match="repeat item 'a' for user 1"):
        ranking_metrics(recs, HAND_REL, k=3)


def test_duplicate_ranks_raise():
    recs = pd.concat([HAND_RECS, pd.DataFrame({"user": [1], "item": ["z"], "rank": [2]})])
    with pytest.raises(ValueError, match="rank 2 twice for user 1"):
        ranking_metrics(recs, HAND_REL, k=3)


@pytest.mark.parametrize("bad", [0, -1, 0.5])
def test_bad_rank_values_raise(bad):
    recs = HAND_RECS.astype({"rank": float})
    recs.loc[0, "rank"] = bad
    with pytest.raises(ValueError, match="ranks >= 1"):
        ranking_metrics(recs, HAND_REL, k=3)


@pytest.mark.parametrize("k", [0, -2, 2.5, True])
def test_bad_k_raises(k):
    with pytest.raises(ValueError, match=f"k must be an integer >= 1, got {k!r}"):
        ranking_metrics(HAND_RECS, HAND_REL, k=k)


def test_bad_n_items_raises():
    with pytest.raises(ValueError, match="n_items must be a positive integer or None, got 0"):
        ranking_metrics(HAND_RECS, HAND_REL, k=3, n_items=0)


def test_missing_columns_named():
    with pytest.raises(ValueError, match=r"recommendations is missing column\(s\) \['rank'\]"):
        ranking_metrics(HAND_RECS.drop(columns="rank"), HAND_REL)
    with pytest.raises(ValueError, match=r"relevant is missing column\(s\) \['user', 'item'\]"):
        ranking_metrics(HAND_RECS, pd.DataFrame({"u": [1], "i": [2]}))


def test_empty_relevant_raises():
    with pytest.raises(ValueError, match="relevant has no"):
        ranking_metrics(HAND_RECS, HAND_REL.iloc[:0])


# --------------------------------------------------------------------------------- splits

def interactions(n_users: int = 40, seed: int = 0) -> pd.DataFrame:
    """Users with 1..30 interactions (user 0 has exactly one), shuffled, with a non-default
    index so that positions and labels differ."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 31, n_users)
    counts[0] = 1
    users = np.repeat(np.arange(n_users), counts)
    df = pd.DataFrame({"user_id": users, "item_id": rng.integers(0, 500, users.size),
                       "timestamp": rng.integers(0, 50, users.size)})  # ties on purpose
    df = df.sample(frac=1, random_state=seed)
    df.index = df.index * 10 + 7
    return df


def assert_partition(df, train, test):
    assert len(train) + len(test) == len(df)
    assert not set(train.index) & set(test.index)
    both = pd.concat([train, test]).sort_index()
    pd.testing.assert_frame_equal(both, df.sort_index())
    # Each part keeps the input's row order.
    order = {label: i for i, label in enumerate(df.index)}
    for part in (train, test):
        pos = [order[label] for label in part.index]
        assert pos == sorted(pos)


@pytest.mark.parametrize("test_size", [0.1, 0.2, 0.25, 0.5, 0.9])
def test_random_split_sizes(test_size):
    df = interactions()
    train, test = train_test_split(df, method="random", test_size=test_size, random_state=1)
    assert len(test) == math.floor(test_size * len(df) + 0.5)
    assert_partition(df, train, test)


@pytest.mark.parametrize("test_size", [0.1, 0.2, 0.5, 0.8])
def test_per_user_fractions(test_size):
    df = interactions()
    train, test = train_test_split(df, method="per_user", test_size=test_size, random_state=2)
    assert_partition(df, train, test)
    n = df.groupby("user_id").size()
    n_test = test.groupby("user_id").size().reindex(n.index, fill_value=0)
    want = np.where(n >= 2, np.clip(np.floor(test_size * n + 0.5), 1, n - 1), 0)
    np.testing.assert_array_equal(n_test.to_numpy(), want)
    # Users with a single interaction stay in train; everyone else is in both parts.
    assert 0 not in set(test["user_id"])
    assert set(train["user_id"]) == set(df["user_id"])
    assert set(test["user_id"]) == set(n.index[n >= 2])


def test_per_user_choice_is_not_positional():
    # With 10 rows per user and test_size 0.5 the held-out half must vary with the seed.
    df = pd.DataFrame({"user_id": np.repeat([1, 2], 10), "item_id": np.arange(20)})
    tests = {tuple(train_test_split(df, method="per_user", test_size=0.5,
                                    random_state=s)[1]["item_id"]) for s in range(5)}
    assert len(tests) > 1


def test_leave_last_out_picks_max_timestamp():
    df = interactions()
    train, test = train_test_split(df, method="leave_last_out")
    assert_partition(df, train, test)
    assert test["user_id"].is_unique and set(test["user_id"]) == set(df["user_id"])
    latest = df.groupby("user_id")["timestamp"].max()
    np.testing.assert_array_equal(test.set_index("user_id")["timestamp"].sort_index(),
                                  latest.sort_index())
    # Nothing left in train is later than that user's test interaction.
    cmp = train.merge(test[["user_id", "timestamp"]], on="user_id", suffixes=("", "_test"))
    assert (cmp["timestamp"] <= cmp["timestamp_test"]).all()


def test_leave_last_out_ties_go_to_the_later_row():
    df = pd.DataFrame({"user_id": [1, 2, 1, 1, 2], "item_id": [10, 20, 11, 12, 21],
                       "timestamp": [5, 3, 9, 9, 1]})
    train, test = train_test_split(df, method="leave_last_out")
    assert test["item_id"].tolist() == [20, 12]
    assert train["item_id"].tolist() == [10, 11, 21]


def test_leave_last_out_datetimes():
    df = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": [1, 2, 3],
                       "when": pd.to_datetime(["2024-01-02", "2024-01-01", "2023-05-05"])})
    train, test = train_test_split(df, method="leave_last_out", time_col="when")
    assert test["item_id"].tolist() == [1, 3]


@pytest.mark.parametrize("method", ["random", "per_user", "leave_last_out"])
def test_reproducible_with_seed(method):
    df = interactions()
    a = train_test_split(df, method=method, random_state=123)
    b = train_test_split(df, method=method, random_state=123)
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x, y)
    # A Generator is accepted too, and the same seed gives the same draw.
    c = train_test_split(df, method=method, random_state=np.random.default_rng(123))
    pd.testing.assert_frame_equal(a[1], c[1])
    if method != "leave_last_out":
        other = train_test_split(df, method=method, random_state=124)[1]
        assert not other.index.equals(a[1].index)


def test_duplicate_index_labels_kept_apart():
    df = pd.DataFrame({"user_id": [1, 1, 2, 2], "timestamp": [1, 2, 1, 2]}, index=[0, 0, 0, 0])
    train, test = train_test_split(df, method="leave_last_out")
    assert len(train) == len(test) == 2
    assert test["timestamp"].tolist() == [2, 2]


@pytest.mark.parametrize("method", ["random", "per_user", "leave_last_out"])
def test_empty_frame(method):
    df = pd.DataFrame({"user_id": pd.Series([], dtype=int),
                       "timestamp": pd.Series([], dtype=int)})
    train, test = train_test_split(df, method=method, random_state=0)
    assert len(train) == len(test) == 0


def test_split_validation():
    df = interactions()
    with pytest.raises(ValueError, match="method must be one of .* got 'temporal'"):
        train_test_split(df, method="temporal")
    for bad in [0, 1, 1.0, -0.1, 1.5, True, "0.2", float("nan")]:
        with pytest.raises(ValueError, match=f"test_size .* got {bad!r}"):
            train_test_split(df, test_size=bad)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['user'\] needed by "
                                         r"method='per_user'"):
        train_test_split(df, method="per_user", user_col="user")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['ts'\]"):
        train_test_split(df, method="leave_last_out", time_col="ts")
    # The random split needs no column at all.
    train_test_split(df.drop(columns=["user_id", "timestamp"]), method="random")
    holes = df.astype({"user_id": float})
    holes.iloc[3, holes.columns.get_loc("user_id")] = np.nan
    with pytest.raises(ValueError, match="'user_id' has a missing value at row 3"):
        train_test_split(holes, method="per_user")
    with pytest.raises(TypeError, match="df must be a pandas DataFrame, got ndarray"):
        train_test_split(df.to_numpy())


# ------------------------------------------------------------------------ docs, real data

def ml100k_udata() -> Path | None:
    """u.data under $FMREC_DATA_HOME/ml-100k, else ../shared/datasets/ml-100k."""
    homes = [os.environ.get("FMREC_DATA_HOME"), REPO.parent / "shared" / "datasets"]
    for home in homes:
        if home and (Path(home) / "ml-100k" / "u.data").is_file():
            return Path(home) / "ml-100k" / "u.data"
    return None


def test_ml100k_per_user_split():
    path = ml100k_udata()
    if path is None:
        pytest.skip("MovieLens 100K u.data not found under $FMREC_DATA_HOME/ml-100k or "
                    f"{REPO.parent / 'shared' / 'datasets' / 'ml-100k'}")
    df = pd.read_csv(path, sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    assert len(df) == 100_000 and df["user_id"].nunique() == 943
    train, test = train_test_split(df, method="per_user", test_size=0.2, random_state=0)
    assert_partition(df, train, test)
    n = df.groupby("user_id").size()
    assert n.min() >= 20  # every ML-100K user rated at least 20 movies
    n_test = test.groupby("user_id").size().reindex(n.index, fill_value=0)
    np.testing.assert_array_equal(n_test.to_numpy(), np.floor(0.2 * n.to_numpy() + 0.5))
    assert len(test) == int(np.floor(0.2 * n.to_numpy() + 0.5).sum())
    assert abs(len(test) / len(df) - 0.2) < 0.01


# ------------------------------------------------------------------------------- k folds
def _interactions(seed=0, n_users=40):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 12, size=n_users)
    users = np.repeat(np.arange(n_users), counts)
    return pd.DataFrame({"user_id": users, "item_id": rng.integers(0, 50, size=len(users))},
                        index=rng.permutation(len(users)) + 100)


@pytest.mark.parametrize("method", ["per_user", "random"])
@pytest.mark.parametrize("n_splits", [2, 3, 5])
def test_kfold_tests_partition_the_rows(method, n_splits):
    df = _interactions()
    folds = kfold_split(df, n_splits, method=method, random_state=0)
    assert len(folds) == n_splits
    held = np.concatenate([test.index.to_numpy() for _, test in folds])
    assert len(set(held)) == len(held)  # no row is held out twice
    if method == "random":
        assert sorted(held) == sorted(df.index)
    for train, test in folds:
        assert len(train) + len(test) == len(df)
        assert set(train.index).isdisjoint(test.index)
        assert list(train.index) == [i for i in df.index if i in set(train.index)]  # df order


def test_kfold_per_user_keeps_every_user_in_train():
    df = _interactions()
    counts = df.groupby("user_id").size()
    folds = kfold_split(df, 4, random_state=1)
    for train, test in folds:
        assert set(test["user_id"]) <= set(train["user_id"])
        assert not set(test["user_id"]) & set(counts.index[counts == 1])
    held = pd.concat([test for _, test in folds])
    # Users with two or more rows are all held out somewhere, each row once at most.
    assert set(held["user_id"]) == set(counts.index[counts >= 2])
    held_counts = held.groupby("user_id").size()
    assert held_counts.to_dict() == counts[counts >= 2].to_dict()
    # A user's held-out rows are spread evenly over the folds.
    per_fold = np.array([[int((test["user_id"] == u).sum()) for _, test in folds]
                         for u in counts.index])
    assert (per_fold.max(axis=1) - per_fold.min(axis=1) <= 1).all()


def test_kfold_is_seeded():
    df = _interactions()
    a = [t.index.tolist() for _, t in kfold_split(df, 3, random_state=5)]
    b = [t.index.tolist() for _, t in kfold_split(df, 3, random_state=5)]
    c = [t.index.tolist() for _, t in kfold_split(df, 3, random_state=6)]
    assert a == b and a != c


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n_splits": 1}, ValueError, "n_splits must be >= 2, got 1"),
    ({"n_splits": True}, TypeError, "n_splits must be an integer, got True"),
    ({"n_splits": 2.0}, TypeError, "n_splits must be an integer, got 2.0"),
    ({"n_splits": 500}, ValueError, "at least 500 rows"),
    ({"method": "leave_last_out"}, ValueError, "method must be one of"),
    ({"user_col": "who"}, ValueError, "missing column 'who'"),
])
def test_kfold_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        kfold_split(_interactions(), **{"n_splits": 3, **kwargs})
    with pytest.raises(TypeError, match="DataFrame"):
        kfold_split(_interactions().to_numpy(), 3)
