"""Evaluation metrics for rating prediction and binary classification.

Each takes ``(y_true, y_pred, sample_weight=None)`` and returns a float; ``METRICS`` maps the
names accepted by ``eval_metric`` to (function, greater_is_better).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from fmrec._validation import check_frame


def _checked(y_true, y_pred, sample_weight, pred_name: str = "y_pred", labels: bool = False):
    """Float64 1-D ``y_true``, ``y_pred`` and weights of one length, all finite, weights
    non-negative with a positive sum (and ``y_true`` in {0, 1} for ``labels``): a metric of
    NaN, of misaligned arrays or of labels it does not define would be a wrong figure, not
    an error."""
    arrays = {"y_true": y_true, pred_name: y_pred}
    if sample_weight is not None:
        arrays["sample_weight"] = sample_weight
    out = {}
    for name, values in arrays.items():
        try:
            a = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must hold numbers: {exc}") from None
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
        bad = np.flatnonzero(~np.isfinite(a))
        if len(bad):
            raise ValueError(f"{name} is NaN or infinite at position {int(bad[0])}")
        out[name] = a
    lengths = {name: len(a) for name, a in out.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"lengths differ: {lengths}")
    if lengths["y_true"] == 0:
        raise ValueError("no values to score (y_true is empty)")
    weights = out.get("sample_weight")
    if weights is not None and ((weights < 0).any() or weights.sum() <= 0):
        raise ValueError("sample_weight must be non-negative with a positive sum")
    if labels and not np.isin(out["y_true"], (0.0, 1.0)).all():
        odd = out["y_true"][~np.isin(out["y_true"], (0.0, 1.0))][0]
        raise ValueError(f"y_true must hold labels 0 and 1, got {odd:g}")
    return out["y_true"], out[pred_name], weights


def rmse(y_true, y_pred, sample_weight=None) -> float:
    """Root mean squared error."""
    y, p, w = _checked(y_true, y_pred, sample_weight)
    return float(np.sqrt(np.average((y - p) ** 2, weights=w)))


def mae(y_true, y_pred, sample_weight=None) -> float:
    """Mean absolute error."""
    y, p, w = _checked(y_true, y_pred, sample_weight)
    return float(np.average(np.abs(y - p), weights=w))


def log_loss(y_true, y_prob, sample_weight=None) -> float:
    """Mean negative log-likelihood of labels in {0, 1} given P(y=1), clipped away from 0/1."""
    y, p, w = _checked(y_true, y_prob, sample_weight, "y_prob", labels=True)
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(np.average(-(y * np.log(p) + (1 - y) * np.log1p(-p)), weights=w))


def auc(y_true, y_score, sample_weight=None) -> float:
    """Area under the ROC curve for labels in {0, 1}; both must occur (ValueError if not:
    the area is undefined, not NaN)."""
    y, s, w = _checked(y_true, y_score, sample_weight, "y_score", labels=True)
    weight = np.ones_like(y) if w is None else w
    if len(np.unique(y)) < 2:
        raise ValueError(f"AUC needs both labels in y_true, got only {y[0]:g}")
    if weight[y == 0].sum() <= 0 or weight[y == 1].sum() <= 0:
        raise ValueError("AUC needs both labels with a positive weight; one label's rows "
                         "all weigh 0")
    return float(roc_auc_score(y, s, sample_weight=w))


METRICS = {
    "rmse": (rmse, False),
    "mae": (mae, False),
    "logloss": (log_loss, False),
    "auc": (auc, True),
}


# --------------------------------------------------------------------------------------------
# Ranking metrics at k for top-N recommendation lists.
# --------------------------------------------------------------------------------------------

def ranking_metrics(recommendations, relevant, k: int = 10, user_col: str = "user",
                    item_col: str = "item", rank_col: str = "rank",
                    n_items: int | None = None) -> dict[str, float]:
    """Top-k ranking metrics of recommendation lists against held-out relevant items.

    Relevance is binary. Each metric is computed per user and averaged over the users that
    have at least one relevant item; such users without any recommendation score 0, and
    users that only appear in ``recommendations`` are ignored (there is nothing to hit).

    Parameters
    ----------
    recommendations : pandas.DataFrame
        One row per recommended (user, item) with its position ``rank_col`` (1 = best). Only
        the order of the ranks within a user matters, so gaps (e.g. after filtering) are fine;
        a user may not have the same item or the same rank twice.
    relevant : pandas.DataFrame
        Held-out (user, item) pairs; repeated pairs count once.
    k : int, default=10
        Cut-off: only each user's first ``k`` recommendations are scored.
    user_col, item_col, rank_col : str
        Column names, shared by both frames (``rank_col`` only in ``recommendations``).
    n_items : int, optional
        Catalogue size; when given, ``coverage@k`` is also returned.

    Returns
    -------
    dict of str to float
        ``precision@k`` (hits / k, so short lists are penalised), ``recall@k`` (hits /
        number of relevant items), ``ndcg@k`` (log2 discount, ideal DCG over
        ``min(k, n_relevant)`` hits), ``map@k`` (average precision normalised by
        ``min(k, n_relevant)``), ``hit_rate@k`` (share of users with at least one hit) and,
        with ``n_items``, ``coverage@k`` (distinct items in all top-k lists / ``n_items``).

    Examples
    --------
    >>> import pandas as pd
    >>> recs = pd.DataFrame({"user": [1, 1, 2, 2], "item": [10, 11, 10, 12],
    ...                      "rank": [1, 2, 1, 2]})
    >>> held_out = pd.DataFrame({"user": [1, 2], "item": [11, 13]})
    >>> m = ranking_metrics(recs, held_out, k=2, n_items=4)
    >>> m["precision@2"], m["recall@2"], m["hit_rate@2"], m["coverage@2"]
    (0.25, 0.5, 0.5, 0.75)
    """
    import pandas as pd

    check_frame(recommendations, [user_col, item_col, rank_col], "recommendations")
    check_frame(relevant, [user_col, item_col], "relevant")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    k = int(k)
    if n_items is not None and (isinstance(n_items, bool)
                                or not isinstance(n_items, int | np.integer) or n_items < 1):
        raise ValueError(f"n_items must be a positive integer or None, got {n_items!r}")

    recs = recommendations[[user_col, item_col, rank_col]]
    # A repeated item would be counted as two hits and inflate every metric; refuse it.
    dup = recs.duplicated([user_col, item_col])
    if dup.any():
        # tolist() gives Python scalars, so the message reads 2 rather than np.int64(2).
        user, item = recs.loc[dup, user_col].tolist()[0], recs.loc[dup, item_col].tolist()[0]
        raise ValueError(f"recommendations repeat item {item!r} for user {user!r} "
                         f"(row label {recs.index[dup.to_numpy()].tolist()[0]!r})")
    # Equal ranks would make the order (and so the discounts) arbitrary.
    dup = recs.duplicated([user_col, rank_col])
    if dup.any():
        user, rank = recs.loc[dup, user_col].tolist()[0], recs.loc[dup, rank_col].tolist()[0]
        raise ValueError(f"recommendations give rank {rank!r} twice for user {user!r}")
    ranks = pd.to_numeric(recs[rank_col], errors="coerce")
    if ranks.isna().any() or (ranks < 1).any():
        bad = recs[rank_col][ranks.isna() | (ranks < 1)].tolist()[0]
        raise ValueError(f"recommendations column {rank_col!r} must hold ranks >= 1, "
                         f"found {bad!r}")

    rel = relevant[[user_col, item_col]].drop_duplicates()
    n_rel = rel.groupby(user_col, sort=False, observed=True).size()
    if n_rel.empty:
        raise ValueError("relevant has no (user, item) rows, so no user can be evaluated")

    # Positions 1..n per user from the order of the ranks, then the top k only.
    recs = recs.assign(_rank=ranks.to_numpy()).sort_values([user_col, "_rank"], kind="stable")
    pos = recs.groupby(user_col, sort=False, observed=True).cumcount().to_numpy() + 1
    top = recs.loc[pos <= k, [user_col, item_col]].assign(_pos=pos[pos <= k])

    hits = top.merge(rel, on=[user_col, item_col], how="inner")
    # The merge does not promise to keep (user, position) order, which the cumcount relies on.
    hits = hits.sort_values([user_col, "_pos"], kind="stable")
    # The i-th hit of a user contributes precision-at-its-position i / pos to AP.
    nth_hit = hits.groupby(user_col, sort=False, observed=True).cumcount().to_numpy() + 1
    hits = hits.assign(_gain=1.0 / np.log2(hits["_pos"].to_numpy() + 1.0),
                       _prec=nth_hit / hits["_pos"].to_numpy())
    per_user = hits.groupby(user_col, sort=False, observed=True).agg(
        n_hits=("_pos", "size"), dcg=("_gain", "sum"), ap=("_prec", "sum"))
    # Reindex on the users with relevant items: users without recommendations get 0.
    per_user = per_user.reindex(n_rel.index, fill_value=0)
    n_hits = per_user["n_hits"].to_numpy(np.float64)
    n_relevant = n_rel.to_numpy(np.float64)
    cap = np.minimum(k, n_rel.to_numpy())
    # ideal[j] = DCG of j hits in the first j positions.
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])

    out = {
        f"precision@{k}": float(np.mean(n_hits / k)),
        f"recall@{k}": float(np.mean(n_hits / n_relevant)),
        f"ndcg@{k}": float(np.mean(per_user["dcg"].to_numpy(np.float64) / ideal[cap])),
        f"map@{k}": float(np.mean(per_user["ap"].to_numpy(np.float64) / cap)),
        f"hit_rate@{k}": float(np.mean(n_hits > 0)),
    }
    if n_items is not None:
        out[f"coverage@{k}"] = top[item_col].nunique() / int(n_items)
    return out


def _one_ranking_metric(name: str, recommendations, relevant, k: int, **kwargs) -> float:
    return ranking_metrics(recommendations, relevant, k=k, **kwargs)[f"{name}@{k}"]


def precision_at_k(recommendations, relevant, k: int = 10, **kwargs) -> float:
    """Mean precision@k (hits in the top k / k); see :func:`ranking_metrics`.

    Examples
    --------
    >>> import pandas as pd
    >>> recs = pd.DataFrame({"user": [1, 1], "item": [10, 11], "rank": [1, 2]})
    >>> precision_at_k(recs, pd.DataFrame({"user": [1], "item": [11]}), k=2)
    0.5
    """
    return _one_ranking_metric("precision", recommendations, relevant, k, **kwargs)


def recall_at_k(recommendations, relevant, k: int = 10, **kwargs) -> float:
    """Mean recall@k (hits in the top k / relevant items); see :func:`ranking_metrics`.

    Examples
    --------
    >>> import pandas as pd
    >>> recs = pd.DataFrame({"user": [1, 1], "item": [10, 11], "rank": [1, 2]})
    >>> recall_at_k(recs, pd.DataFrame({"user": [1, 1], "item": [11, 12]}), k=2)
    0.5
    """
    return _one_ranking_metric("recall", recommendations, relevant, k, **kwargs)


def ndcg_at_k(recommendations, relevant, k: int = 10, **kwargs) -> float:
    """Mean binary-relevance NDCG@k with a log2 discount; see :func:`ranking_metrics`.

    Examples
    --------
    >>> import pandas as pd
    >>> recs = pd.DataFrame({"user": [1, 1], "item": [10, 11], "rank": [1, 2]})
    >>> round(ndcg_at_k(recs, pd.DataFrame({"user": [1], "item": [11]}), k=2), 4)
    0.6309
    """
    return _one_ranking_metric("ndcg", recommendations, relevant, k, **kwargs)


def map_at_k(recommendations, relevant, k: int = 10, **kwargs) -> float:
    """Mean average precision@k, normalised by min(k, n_relevant); see :func:`ranking_metrics`.

    Examples
    --------
    >>> import pandas as pd
    >>> recs = pd.DataFrame({"user": [1, 1], "item": [10, 11], "rank": [1, 2]})
    >>> map_at_k(recs, pd.DataFrame({"user": [1], "item": [11]}), k=2)
    0.5
    """
    return _one_ranking_metric("map", recommendations, relevant, k, **kwargs)


def hit_rate_at_k(recommendations, relevant, k: int = 10, **kwargs) -> float:
    """Share of users with at least one relevant item in their top k; see :func:`ranking_metrics`.

    Examples
    --------
    >>> import pandas as pd
    >>> recs = pd.DataFrame({"user": [1, 1], "item": [10, 11], "rank": [1, 2]})
    >>> hit_rate_at_k(recs, pd.DataFrame({"user": [1, 2], "item": [11, 10]}), k=2)
    0.5
    """
    return _one_ranking_metric("hit_rate", recommendations, relevant, k, **kwargs)
