"""
Implicit feedback with BPR
==========================

Most logs hold what people did (watched, clicked, bought), not what they thought of it.
This example keeps the MovieLens ratings of 4 or more as positives and nothing else, holds
out a fifth of each user's positives, and compares top-10 lists of popularity with those of
a `fmrec.Recommender` without a target: it learns a `fmrec.FMRanker` by Bayesian
Personalized Ranking, each step pushing a positive item above a sampled item the user has
not interacted with (the hardest of 5 draws).
"""

# %%
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import fmrec
from fmrec.datasets import load_movielens, make_recsys
from fmrec.metrics import ranking_metrics
from fmrec.split import train_test_split

try:
    ratings = load_movielens("100k", download=False).ratings
except FileNotFoundError:
    ratings = make_recsys(n_users=600, n_items=1000, n_interactions=40_000,
                          noise=0.9).interactions
positives = ratings.loc[ratings["rating"] >= 4, ["user_id", "item_id"]]
train, test = train_test_split(positives, method="per_user", test_size=0.2, random_state=0)
print(f"{len(train)} training positives, {len(test)} held out, "
      f"{positives['item_id'].nunique()} items")

# %%
# The ranker
# ----------
# ``fit`` records the BPR loss of every epoch. A smaller model than the default (64
# factors) keeps this example quick.
rec = fmrec.Recommender(model=fmrec.FMRanker(n_factors=32, n_epochs=30, random_state=0),
                        random_state=0)
rec.fit(train)
lists = rec.recommend(test["user_id"].unique(), n=10)
print(lists.head(12))

# %%
# Against popularity
# ------------------
# `fmrec.metrics.ranking_metrics` compares top-N lists (``user``, ``item``, ``rank``) with
# the held-out items of each user.
seen = train.groupby("user_id")["item_id"].apply(set)
by_count = train["item_id"].value_counts().index.to_numpy()
popular = pd.DataFrame([(u, i, r + 1) for u in lists["user"].unique()
                        for r, i in enumerate([i for i in by_count[:200]
                                               if i not in seen.get(u, ())][:10])],
                       columns=["user", "item", "rank"])
relevant = test.rename(columns={"user_id": "user", "item_id": "item"})
scores = pd.DataFrame({
    "popularity": ranking_metrics(popular, relevant, k=10),
    "FMRanker (BPR)": ranking_metrics(lists, relevant, k=10),
}).T
print(scores.round(4))

# %%
# A figure of both, drawn with matplotlib's object API (no pyplot needed):
fig = Figure(figsize=(6, 2.8), layout="constrained")
ax = fig.subplots()
metrics = ["precision@10", "recall@10", "ndcg@10"]
x = np.arange(len(metrics))
for k, (name, row) in enumerate(scores.iterrows()):
    ax.bar(x + 0.4 * k, row[metrics], width=0.4, label=name)
ax.set_xticks(x + 0.2, metrics)
ax.legend()
ax.set_title("held-out positives found in the top 10")
