"""
Ratings with side features
==========================

A rating model learns more than user and item ids when it is given what is known about
them. This example fits the same `fmrec.Recommender` twice on MovieLens 100K (the official
``u1`` split): once on ids alone, once with the users' age, gender and occupation, the
films' genres and, for every user, the set of films they rated (``implicit="users"``,
SVD++'s implicit feedback). Without MovieLens on this machine it uses synthetic ratings
from `fmrec.datasets.make_recsys`, whose users have a group and items genres.
"""

# %%
# The data
# --------
# `fmrec.datasets.load_movielens` reads the unzipped ``ml-100k`` folder from
# ``$FMREC_DATA_HOME`` (``download=True`` would fetch it once and check its SHA-256).
import time

import fmrec
from fmrec.datasets import load_movielens, make_recsys
from fmrec.metrics import rmse
from fmrec.split import train_test_split

try:
    ml = load_movielens("100k", download=False)
    train, test = ml.splits["u1"]
    users, items = ml.users[["user_id", "age", "gender", "occupation"]], ml.items[
        ["item_id", "genres"]]
except FileNotFoundError:
    data = make_recsys(n_users=600, n_items=1000, n_interactions=40_000, noise=0.9)
    train, test = train_test_split(data.interactions, method="per_user", random_state=0)
    users, items = data.users, data.items
print(f"{len(train)} training ratings, {len(test)} test ratings")
print(users.head(3))
print(items.head(3))

# %%
# Two recommenders
# ----------------
# Both use the ALS solver with the same penalties; the second also gets the side tables
# and the implicit features. The tables are joined on ``user_id`` and ``item_id``; list
# cells such as ``genres`` become multi-valued features, numbers are standardized and
# everything else is categorical.
def fit(label, **kwargs):
    model = fmrec.FMRegressor(n_factors=8, n_epochs=60, reg_linear=0.5, reg_factors=1.5,
                              init_std=0.01, random_state=0)
    rec = fmrec.Recommender(target="rating", model=model, random_state=0, **kwargs)
    start = time.perf_counter()
    rec.fit(train)
    print(f"{label}: fit {time.perf_counter() - start:.1f} s, "
          f"test RMSE {rmse(test['rating'], rec.predict(test)):.4f}")
    return rec


ids_only = fit("ids only")
rich = fit("ids + side + implicit features", user_features=users, item_features=items,
           implicit="users", implicit_weight=2.0)

# %%
# The features each model reads are named after the table they came from:
print(rich.feature_names_[[0, len(rich.feature_names_) // 2, -1]])
print({group: (s.stop - s.start) for group, s in rich.feature_groups_.items()})

# %%
# Training curves
# ---------------
# Every fit records its per-epoch training loss (and, for ALS, the objective) in the
# model's ``history_``; `fmrec.plot.training_curves` draws each series in its own panel.
fig = fmrec.plot.training_curves(rich)

# %%
# Top-N lists
# -----------
# ``recommend`` scores every unseen item of each user and returns the best ``n``. With a
# target, the list blends the rating model with a ranker trained on the same rows
# (``target_weight``); ``predict`` stays the rating model's.
print(rich.recommend([1, 2], n=5))
