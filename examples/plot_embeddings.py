"""
Embedding maps and heatmaps
===========================

An FM gives every feature (a user, a film, a genre, an occupation) a factor vector, and two
features interact through the dot product of theirs. Films whose vectors point the same way
are liked by the same people. `fmrec.inspect` turns the vectors into readable tables, and
`fmrec.plot` into figures (``pip install "fmrec[plot]"``): a 2-D map of the vectors and a
clustered heatmap of their cosine similarities.
"""

# %%
import pandas as pd

import fmrec
from fmrec.datasets import load_movielens, make_recsys

try:
    ml = load_movielens("100k", download=False)
    ratings, items = ml.ratings, ml.items[["item_id", "genres"]]
    titles = ml.items.set_index("item_id")["title"]
except FileNotFoundError:
    data = make_recsys(n_users=600, n_items=1000, n_interactions=40_000, noise=0.9)
    ratings, items = data.interactions, data.items
    titles = pd.Series({i: f"item {i}" for i in items["item_id"]})

rec = fmrec.Recommender(
    target="rating", item_features=items, target_weight=1, random_state=0,
    model=fmrec.FMRegressor(n_factors=16, n_epochs=40, reg_factors=2.0, init_std=0.01,
                            random_state=0))
rec.fit(ratings)

# %%
# Neighbours
# ----------
# Features are named ``"table:column=value"``; ``field="item_id"`` keeps the candidates to
# films. The most rated film first:
top = ratings["item_id"].value_counts().index
query = top[0]
neighbours = fmrec.inspect.most_similar(rec, f"item:item_id={query}", n=8, field="item_id")
neighbours["title"] = [titles[int(name.split("=")[1])] for name in neighbours["feature"]]
print(f"nearest to {titles[query]}:")
print(neighbours.to_string(index=False))

# %%
# A map of the 300 most rated films
# ---------------------------------
# PCA of their factor vectors, coloured by each film's first genre, the 12 most rated
# labelled by title (``method="tsne"`` draws a t-SNE map instead).
popular = top[:300]
first_genre = items.set_index("item_id")["genres"].map(lambda g: g[0] if len(g) else None)
fig_map = fmrec.plot.embedding_map(
    rec, [f"item:item_id={i}" for i in popular], color_by=first_genre,
    weights=ratings["item_id"].value_counts(), labels=titles, label_top=12)

# %%
# The genres themselves have vectors too; ``fig.fmrec_coords`` holds the points of a map.
fig_genres = fmrec.plot.embedding_map(rec, field="item:genres", label_top=20)
print(fig_genres.fmrec_coords.head())

# %%
# A clustered heatmap
# -------------------
# Cosine similarities of the 25 most rated films, rows and columns ordered by hierarchical
# clustering, so films that act alike sit in blocks.
fig_heatmap = fmrec.plot.similarity_heatmap(
    rec, [f"item:item_id={i}" for i in top[:25]], labels=titles)
# sphinx_gallery_thumbnail_number = 3
