"""Which (user, item) pairs a synthetic log observes: the exposure model of `make_recsys`.

Users differ in activity and items in popularity (lognormal weights), and, when ``exposure``
is positive, people mostly rate what they like: a pair's weight is multiplied by
``exp(exposure * affinity)``, the affinity coming from the same FM as the ratings.
"""

from __future__ import annotations

import numpy as np

# Spread (lognormal sigma) of the users' activity and the items' base popularity. With the
# default exposure, MovieLens-100K-sized data (943 x 1682, 100,000 pairs, noise 0.9) come out
# with MovieLens's spread of ratings per item and per user (std of log counts 1.65 and 0.72,
# against 1.63 and 0.88) and its link between an item's popularity and its mean rating
# (correlation of log count and mean 0.48, against 0.52).
_ACTIVITY_SIGMA, _POPULARITY_SIGMA = 0.9, 1.5


def activity_and_popularity(rng, n_users: int, n_items: int):
    """Lognormal weights of the users' activity and the items' popularity, each summing to 1."""
    p_user = rng.lognormal(0, _ACTIVITY_SIGMA, n_users)
    p_item = rng.lognormal(0, _POPULARITY_SIGMA, n_items)
    return p_user / p_user.sum(), p_item / p_item.sum()


class Affinity:
    """``affinity(users, items)``: the item-dependent part of the noise-free FM rating.

    With P_u = V_user + V_group and Q_i = V_item + Σ V_genre, the rating of (u, i) on a device
    is user-only terms + device terms + b_i + <P_u, Q_i>, where b_i gathers the item's and its
    genres' weights and their pairwise terms; the affinity is b_i + <P_u, Q_i>.
    """

    def __init__(self, w, V, offsets, group, item_genres) -> None:
        n_items = len(item_genres)
        items = offsets["item"] + np.arange(n_items)
        genre_w = w[offsets["genre"]:offsets["genre"] + item_genres.shape[1]]
        genre_V = V[offsets["genre"]:offsets["genre"] + item_genres.shape[1]]
        in_genre = item_genres.astype(np.float64)
        genre_sum = in_genre @ genre_V
        self.user_vectors = V[offsets["user"] + np.arange(len(group))] + V[offsets["group"]
                                                                         + group]
        self.item_vectors = V[items] + genre_sum
        # Pairwise terms among the item's own columns: 0.5 (|Σ v|² - Σ |v|²).
        squares = (V[items] ** 2).sum(axis=1) + in_genre @ (genre_V ** 2).sum(axis=1)
        self.item_bias = (w[items] + in_genre @ genre_w
                          + 0.5 * ((self.item_vectors ** 2).sum(axis=1) - squares))

    def __call__(self, users, items) -> np.ndarray:
        users, items = np.asarray(users), np.asarray(items)
        return self.item_bias[items] + np.einsum("...f,...f->...", self.user_vectors[users],
                                                 self.item_vectors[items])

    def __repr__(self) -> str:
        return (f"<affinity of {len(self.user_vectors)} users for "
                f"{len(self.item_vectors)} items>")


def draw_exposed_pairs(rng, activity, popularity, affinity: Affinity, exposure: float,
                       n: int):
    """n distinct 0-based (user, item) pairs with P ∝ activity × popularity × e^(β·affinity).

    Sampling without replacement by Gumbel top-k (Kool et al., ICML 2019): each cell's key is
    its log weight plus a Gumbel draw, and the cells of the n largest keys are a draw of n
    cells one after another without replacement. Users are scored in chunks and only the n
    best keys so far are kept, so memory stays O(n + chunk).
    """
    n_users, n_items = len(activity), len(popularity)
    log_item = np.log(popularity) + exposure * affinity.item_bias
    chunk = max(1, (1 << 21) // n_items)
    keys, cells = np.empty(0), np.empty(0, dtype=np.int64)
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        block = (np.log(activity[start:stop, None]) + log_item
                 + exposure * (affinity.user_vectors[start:stop] @ affinity.item_vectors.T)
                 + rng.gumbel(size=(stop - start, n_items)))
        keys = np.concatenate([keys, block.ravel()])
        cells = np.concatenate([cells, np.arange(start * n_items, stop * n_items)])
        if len(keys) > n:
            best = np.argpartition(-keys, n - 1)[:n]
            keys, cells = keys[best], cells[best]
    # In key order the first rows would be the best-liked pairs: shuffle, so that any slice
    # of the rows (a first-n train split, say) is a fair sample.
    cells = rng.permutation(cells)
    return cells // n_items, cells % n_items


def draw_pairs(rng, p_user, p_item, n: int):
    """n distinct 0-based (user, item) pairs, busy users and popular items more likely."""
    n_users, n_items = len(p_user), len(p_item)
    n_cells = n_users * n_items
    if n_cells <= max(2_000_000, 10 * n):  # the full cell table is small: sample it exactly
        cells = rng.choice(n_cells, n, replace=False, p=np.outer(p_user, p_item).ravel())
    else:  # sparse: draw with replacement and drop repeats until n distinct pairs are found
        cells = np.empty(0, dtype=np.int64)
        while len(cells) < n:
            more = (rng.choice(n_users, n, p=p_user) * n_items
                    + rng.choice(n_items, n, p=p_item))
            both = np.concatenate([cells, more])
            _, first = np.unique(both, return_index=True)
            cells = both[np.sort(first)][:n]
    return cells // n_items, cells % n_items
