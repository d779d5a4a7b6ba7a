"""
Cold start and fold-in
======================

A user who arrives after training is not a reason to retrain. A `fmrec.Recommender`
serves such a user in two ways:

- **cold start**: a user listed in ``user_features`` but absent from the interactions is
  scored from those features alone (age, gender, occupation on MovieLens);
- **fold-in**: given a few interactions of the new user (``history=``), the model fits that
  user's own weight and factors against its frozen item factors, by its own training
  objective, in milliseconds.

Here 100 MovieLens users are held out of training entirely; we compare their top-10 lists
under popularity, cold start and fold-in from 5 of their positives.
"""

# %%
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import fmrec
from fmrec.datasets import load_movielens, make_recsys
from fmrec.metrics import ndcg_at_k

try:
    ml = load_movielens("100k", download=False)
    ratings, users = ml.ratings, ml.users[["user_id", "age", "gender", "occupation"]]
except FileNotFoundError:
    data = make_recsys(n_users=600, n_items=1000, n_interactions=40_000, noise=0.9)
    ratings, users = data.interactions, data.users
positives = ratings.loc[ratings["rating"] >= 4, ["user_id", "item_id"]]

rng = np.random.default_rng(0)
new_users = rng.choice(positives["user_id"].unique(), size=100, replace=False)
is_new = positives["user_id"].isin(new_users)
train = positives[~is_new]

# %%
# One model for both. ``user_features`` lists every user, the held-out ones included, so
# the recommender knows their features but none of their interactions.
rec = fmrec.Recommender(user_features=users,
                        model=fmrec.FMRanker(n_factors=32, n_epochs=30, random_state=0),
                        random_state=0).fit(train)

# %%
# Each new user reveals 5 positives (their history); the rest are what we hope to find.
new = positives[is_new].sample(frac=1.0, random_state=0)
history = new.groupby("user_id").head(5)
held_out = new.drop(history.index)
relevant = held_out.rename(columns={"user_id": "user", "item_id": "item"})
ask = np.sort(history["user_id"].unique())

cold = rec.recommend(ask, n=10, exclude_seen=False)
folded = rec.recommend(ask, n=10, history=history)
print(folded.head(10))

# %%
# Popularity, leaving out each user's history as the fold-in lists do:
order = train["item_id"].value_counts().index.to_numpy()
known = history.groupby("user_id")["item_id"].apply(set)
popular = pd.DataFrame([(u, i, r + 1) for u in ask
                        for r, i in enumerate([i for i in order[:100]
                                               if i not in known[u]][:10])],
                       columns=["user", "item", "rank"])

scores = pd.Series({name: ndcg_at_k(lists, relevant, k=10) for name, lists in
                    [("popularity", popular), ("cold start (features)", cold),
                     ("fold-in (5 positives)", folded)]}, name="NDCG@10")
print(scores.round(4))

# %%
# Age, gender and occupation say little about one person's taste: from them alone the
# lists land near popularity. Five interactions, folded in, say much more.
fig = Figure(figsize=(6, 2.4), layout="constrained")
ax = fig.subplots()
ax.barh(scores.index[::-1], scores.to_numpy()[::-1], color=["C2", "C1", "C0"])
ax.set_xlabel("NDCG@10 of 100 users never trained on")
