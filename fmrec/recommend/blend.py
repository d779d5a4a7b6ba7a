"""``recommend``'s score in one factorized form, whatever it is made of.

A Recommender scores with one model, or with a target model and a ranker blended: Σ_m c_m
(ŷ_m − μ_m), each model's raw score standardized (mean μ_m, standard deviation σ_m over
random training pairs) and weighted (c_m = weight / σ_m). Each ŷ_m, and each retained MCMC
sample's, is b[u] + t_i[i] + a[u]·q_i[i] (``fmrec.recommend.scoring``), and so is any
weighted sum of them: weighted sums of b and t_i, and a·q_i over the vectors side by side.
So scoring every item stays one matrix product, exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmrec.design import part_terms
from fmrec.recommend import query
from fmrec.recommend._entities import as_keys, rowdot
from fmrec.recommend.dataset import InteractionDataset
from fmrec.recommend.foldin import fold_in

# Pairs of training users and items whose raw scores set the standardization of a blend.
CALIBRATION_PAIRS = 20000


def parameter_parts(model, groups: dict) -> list[tuple[float, dict]]:
    """w0 and the float64 (w, V) of the context, user and item columns of ``model`` (design
    column ``groups``): one pair, or one per retained sample of a model fitted by MCMC
    (whose scores average the samples')."""
    spans = {"context": groups["context"],
             "user": slice(groups["user_id"].start, groups["user_implicit"].stop),
             "item": slice(groups["item_id"].start, groups["item_implicit"].stop)}
    out = []
    for w0, w, V in zip(*model.parameter_sets(), strict=True):
        w, V = w.astype(np.float64), V.astype(np.float64)
        out.append((float(w0), {name: (w[s], V[s]) for name, s in spans.items()}))
    return out


def components(model, ranker, scale: np.ndarray | None,
               target_weight: float) -> list[tuple[object, float, float]]:
    """(model, weight, shift) of each model in the score Σ weight·(ŷ − shift): ``model``
    alone when ``ranker`` is None, else both standardized by ``scale`` (rows of (mean, std))
    and weighted ``target_weight`` and ``1 - target_weight``."""
    if ranker is None:
        return [(model, 1.0, 0.0)]
    (mean_m, std_m), (mean_r, std_r) = scale
    alpha = float(target_weight)
    return [(model, alpha / std_m, mean_m), (ranker, (1.0 - alpha) / std_r, mean_r)]


def score_terms(dataset: InteractionDataset, parts_of, users, candidates, hist, folded,
                context) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, q_i, t_i) of the score b[u] + t_i[i] + a[u]·q_i[i] of ``users`` and
    ``candidates``; ``parts_of`` is the (model, weight, shift, parameter parts) of every
    component."""
    a, b, q, t = [], 0.0, [], 0.0
    for model, weight, shift, sets in parts_of:
        for w0, parts in sets:
            a_s, b_s, q_s, t_s = _model_terms(dataset, model, users, candidates, hist, folded,
                                              context, w0, parts)
            share = weight / len(sets)
            a.append(share * a_s)
            q.append(q_s)
            b = b + share * (b_s - shift)
            t = t + share * t_s
    return np.hstack(a), b, np.hstack(q), t


def _model_terms(dataset, model, users, candidates, hist, folded, context, w0, parts):
    """(a, b, q_i, t_i) of one parameter set of ``model``."""
    t_i, q_i = part_terms(dataset.item_rows(candidates), *parts["item"])
    t_u, q_u = part_terms(dataset.user_rows(users), *parts["user"])
    if folded.any():
        t_u[folded], q_u[folded] = fold_in(dataset, model, hist, users[folded], w0, parts)
    t_c, q_c = query.context_terms(dataset, context, users, parts["context"],
                                   model.V_.shape[1])
    return q_u + q_c, w0 + t_u + t_c + rowdot(q_u, q_c), q_i, t_i


def entity_vectors(parts_of, rows, part: str) -> np.ndarray:
    """The q vectors of block ``rows`` of one ``part`` ("user" or "item") of every component
    and sample side by side, scaled so that q·q' weighs them as the score does."""
    return np.hstack([np.sqrt(weight / len(sets)) * part_terms(rows, *parts[part])[1]
                      for _, weight, _, sets in parts_of for _, parts in sets])


def calibrate(dataset: InteractionDataset, models_parts, random_state) -> np.ndarray:
    """(mean, std) of the raw scores of each of ``models_parts`` (the parameter parts of each
    model) over ``CALIBRATION_PAIRS`` random (training user, training item) pairs, seeded by
    ``random_state`` (an integer, else 0). Without context: the context part of a model is a
    shift of all its scores on one occasion, not part of their spread."""
    n_users, n_items = dataset.seen_.shape
    rng = np.random.default_rng(random_state if isinstance(random_state, int | np.integer)
                                else 0)
    size = min(CALIBRATION_PAIRS, n_users * n_items)
    u_codes, u_keys = pd.factorize(as_keys(dataset.users_[rng.integers(0, n_users, size)]))
    i_codes, i_keys = pd.factorize(as_keys(dataset.items_[rng.integers(0, n_items, size)]))
    user_rows, item_rows = dataset.user_rows(u_keys), dataset.item_rows(i_keys)
    scale = np.empty((len(models_parts), 2))
    for row, sets in enumerate(models_parts):
        raw = np.zeros(size)
        for w0, parts in sets:
            t_u, q_u = part_terms(user_rows, *parts["user"])
            t_i, q_i = part_terms(item_rows, *parts["item"])
            raw += w0 + t_u[u_codes] + t_i[i_codes] + rowdot(q_u[u_codes], q_i[i_codes])
        raw /= len(sets)
        std = float(np.std(raw))
        scale[row] = float(np.mean(raw)), std if std > 0 else 1.0
    return scale
