"""Fold-in: users the model was never trained on, scored from their history alone.

A new user's parameters (id weight and factor vector) minimize the model's own training
objective on the user's history rows with every other parameter frozen (``scoring.fold_in``);
with implicit user features the history simply is the user's row.

An FMRanker's user is folded in by BPR: each history item i against ``FOLD_NEGATIVES``
unseen training items j drawn uniformly is the logistic row (q_i − q_j) with label 1, the
expected pairwise loss of the training objective, with the user's factor vector v the
unknown. Its penalty is not the training one: ``reg_factors`` is applied once per SGD step,
to a vector that meets ~100 interactions and 30 epochs of them, and as a prior on five
interactions it is far too weak (the folded vector overfits them). ``RANKER_PRIOR`` per
history item was measured on validation users of MovieLens 100K (``python
benchmarks/bench_topn.py foldin --seed 1 --prior P``: 100 users, 5 interactions each,
popularity NDCG@10 0.329): for the implicit-feedback ``Recommender()``, P = 0.01 (the
default reg_factors), 0.3, 1, 3 and 10 gave 0.312, 0.344, 0.354, 0.345 and 0.336; for the
rating ``Recommender`` (its regressor folded in by ridge, blended) 0.350, 0.402, 0.398,
0.379 and 0.377.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import is_classifier

from fmrec._validation import check_frame
from fmrec.design import part_terms
from fmrec.models.ranker import FMRanker
from fmrec.recommend import scoring as _scoring
from fmrec.recommend._entities import as_keys, rowdot
from fmrec.recommend.dataset import InteractionDataset, implicit_sides

FOLD_NEGATIVES = 64  # unseen items drawn per history item of a user folded into an FMRanker
RANKER_PRIOR = 1.0  # Gaussian prior precision on that user's factor vector, per history item


def fold_in(dataset: InteractionDataset, model, hist: pd.DataFrame, users: np.ndarray, w0: float,
            parts: dict) -> tuple[np.ndarray, np.ndarray]:
    """(t_u, q_u) of new ``users`` from their ``hist`` rows, for one parameter set ``w0``,
    ``parts`` of ``model`` (see ``Recommender.recommend``)."""
    hist = hist[pd.Index(hist[dataset.user_col]).isin(users)]
    group = pd.Index(users).get_indexer(hist[dataset.user_col])
    # A ranker beside a target model learnt no implicit sets: it folds the user in by BPR.
    blend_ranker = isinstance(model, FMRanker) and dataset.target is not None
    if "users" in implicit_sides(dataset.implicit) and not blend_ranker:
        order = np.argsort(group, kind="stable")
        counts = np.bincount(group, minlength=len(users))
        lists = np.split(hist[dataset.item_col].to_numpy()[order], np.cumsum(counts)[:-1])
        rows = dataset.user_vocab_.rows(users, lists)
        if not isinstance(model, FMRanker):
            return part_terms(rows, *parts["user"])
        # The row holds the history as implicit features; BPR folds the id vector in on
        # top (MovieLens fold-in protocol, NDCG@10: the row alone 0.366, with BPR 0.378).
        return _fold_in_ranker(dataset, hist, users, group, parts, rows)
    if isinstance(model, FMRanker):
        return _fold_in_ranker(dataset, hist, users, group, parts)
    t_s, q_s = part_terms(dataset.user_vocab_.rows(users), *parts["user"])
    items = hist[dataset.item_col].to_numpy()
    cols = [c for c in dataset.context_cols if c in hist.columns]
    if cols and len(cols) < len(dataset.context_cols):
        check_frame(hist, dataset.context_cols, "history (with context columns)")
    ctx = hist[cols].reset_index(drop=True) if cols else None
    if dataset.target is None:  # implicit feedback: positives against sampled negatives
        at = dataset.item_vocab_.index(items)
        seen = sp.csr_matrix((np.ones(int((at >= 0).sum())), (group[at >= 0], at[at >= 0])),
                             shape=(len(users), dataset.seen_.shape[1]))
        source, negative = dataset.sample_negatives(group, seen)
        group = np.concatenate([group, group[source]])
        items = as_keys(np.concatenate([
            items.astype(object),
            dataset.item_vocab_.ids.field_values(dataset.item_col)[negative].astype(object)]))
        if ctx is not None:
            ctx = pd.concat([ctx, ctx.iloc[source]], ignore_index=True)
        y = np.concatenate([np.ones(len(hist)), np.zeros(len(source))])
    else:
        y = dataset.targets(hist[dataset.target], "history")
        if is_classifier(model):
            y = (y == model.classes_[1]).astype(np.float64)
    codes, keys = pd.factorize(as_keys(items))
    t_i, q_i = part_terms(dataset.item_rows(keys), *parts["item"])
    t_i, q_i = t_i[codes], q_i[codes]
    if ctx is None:
        t_c, q_c = np.zeros(len(group)), np.zeros_like(q_i)
    else:
        t_c, q_c = part_terms(dataset.context_rows(ctx), *parts["context"])
    qs = q_s[group]
    offset = (w0 + t_s[group] + t_c + t_i + rowdot(qs, q_c) + rowdot(qs, q_i)
              + rowdot(q_c, q_i))
    Z = np.column_stack([np.ones(len(group)), qs + q_c + q_i])
    k = q_i.shape[1]
    if hasattr(model, "samples_V_"):  # fitted by MCMC
        theta = _fold_in_bayesian(dataset, model, Z, offset, y, group, len(users), parts)
    else:
        reg = np.r_[model.reg_linear if model.fit_linear else np.inf,
                    np.full(k, float(model.reg_factors))]
        theta = _scoring.fold_in(Z, offset, y, group, len(users), reg,
                                 float(model.reg_power), logistic=is_classifier(model))
    w_u, v_u = theta[:, 0], theta[:, 1:]
    return t_s + w_u + rowdot(v_u, q_s), q_s + v_u



def _fold_in_ranker(dataset: InteractionDataset, hist: pd.DataFrame, users: np.ndarray,
                    group: np.ndarray, parts: dict, rows: sp.csr_matrix | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(t_u, q_u) of new users of an FMRanker: the factor vector v maximizing the BPR
    likelihood of their history items against sampled unseen items under the prior
    N(0, 1/(RANKER_PRIOR·n) I), n the user's history length (Newton steps), added to
    what their block ``rows`` (default: side features only) give."""
    if rows is None:
        rows = dataset.user_vocab_.rows(users)
    t_s, q_s = part_terms(rows, *parts["user"])
    items = hist[dataset.item_col].to_numpy()
    codes, keys = pd.factorize(as_keys(items))
    t_k, q_k = part_terms(dataset.item_rows(keys), *parts["item"])
    at = dataset.item_vocab_.index(items)
    known = at >= 0
    seen = sp.csr_matrix((np.ones(int(known.sum())), (group[known], at[known])),
                         shape=(len(users), dataset.seen_.shape[1]))
    source, negative = _scoring.sample_negatives(
        seen, group, FOLD_NEGATIVES, seen.shape[1], None,
        np.random.default_rng(dataset.random_state))
    t_n, q_n = part_terms(dataset.item_rows(
        dataset.item_vocab_.ids.field_values(dataset.item_col)), *parts["item"])
    t_n, q_n = t_n[negative], q_n[negative]
    pos = codes[source]
    Z = q_k[pos] - q_n
    # The user's id weight and its side features' linear terms cancel in a difference.
    offset = t_k[pos] - t_n + rowdot(q_s[group[source]], Z)
    k = Z.shape[1]
    theta = _scoring.fold_in(np.column_stack([np.zeros(len(Z)), Z]), offset,
                             np.ones(len(Z)), group[source], len(users),
                             np.r_[np.inf, np.full(k, RANKER_PRIOR)], 1.0, logistic=True,
                             sample_weight=np.full(len(Z), 1.0 / FOLD_NEGATIVES))
    v_u = theta[:, 1:]
    return t_s + rowdot(v_u, q_s), q_s + v_u


# Φ(x) ≈ σ(1.702·x): the probit link of an MCMC classifier, as a logistic one.
_PROBIT_TO_LOGIT = 1.702


def _fold_in_bayesian(dataset: InteractionDataset, model, Z: np.ndarray, offset: np.ndarray,
                      y: np.ndarray, group: np.ndarray, n_users: int, parts: dict) -> np.ndarray:
    """New users' (w_u, v_u) for one sample of a model fitted by MCMC: the posterior mode
    given the sample's other parameters.

    The sample has no penalties but a Gaussian prior on every user's id weight and factors;
    its mean and variances are those of the trained users' id parameters in this sample (what
    the chain's hyperprior draws estimate). With the noise precision α, the square loss
    α/2·Σe² + ½Σ(θ-μ)²/σ² is a ridge regression around μ with penalty 1/(α σ²); the probit
    classifier's latent noise has precision 1, and its link is taken as logistic.
    """
    n_ids = dataset.feature_groups_["user_id"]
    w, V = parts["user"]
    ids = np.column_stack([w[:n_ids.stop - n_ids.start], V[:n_ids.stop - n_ids.start]])
    mu, var = ids.mean(axis=0), ids.var(axis=0)
    logistic = is_classifier(model)
    if logistic:
        Z, offset = _PROBIT_TO_LOGIT * Z, _PROBIT_TO_LOGIT * offset
        scale = _PROBIT_TO_LOGIT ** 2
    else:
        scale = model.noise_precision_
    # No spread among the trained users: the prior pins the parameter at μ.
    reg = np.full(len(var), np.inf)
    np.divide(1.0, scale * var, out=reg, where=var > 0)
    if not model.fit_linear:
        mu[0], reg[0] = 0.0, np.inf
    delta = _scoring.fold_in(Z, offset + Z @ mu, y, group, n_users, reg, 0.0,
                             logistic=logistic)
    return mu + delta
