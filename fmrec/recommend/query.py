"""The arguments of ``Recommender.recommend`` as arrays: candidates, excluded pairs, context
terms, new users' history; and the long frame of top-N lists it returns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmrec._validation import check_frame
from fmrec.design import part_terms
from fmrec.recommend._entities import as_keys, check_keys, shown
from fmrec.recommend.dataset import InteractionDataset, implicit_sides


def ranked(owner_col: str, owners, col: str, keys, top: np.ndarray,
            score: np.ndarray) -> pd.DataFrame:
    """Long frame of per-owner top lists: ``top`` holds positions in ``keys`` (-1: none)."""
    valid = top >= 0
    counts = valid.sum(axis=1)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return pd.DataFrame({owner_col: np.repeat(owners, counts), col: keys[top[valid]],
                         "score": score[valid],
                         "rank": np.arange(int(counts.sum())) - starts + 1})


def candidates(dataset: InteractionDataset, items) -> np.ndarray:
    """The candidate items of a ``recommend`` call: every known item, or ``items`` checked."""
    if items is None:
        return dataset.items_
    keys = as_keys(pd.unique(as_keys([items] if np.ndim(items) == 0 else items)))
    vocab = dataset.item_vocab_
    known = (vocab.index(keys) >= 0) | (vocab.side_index(keys) >= 0)
    if not known.all():
        raise ValueError(f"items {shown(keys[~known])} are unknown to the model (not in "
                         "the training data or item_features)")
    return keys

def exclusions(dataset: InteractionDataset, users, candidates, hist) -> sp.csr_matrix:
    """Pattern (users × candidates) of the pairs seen in training or in ``history``."""
    column = np.full(dataset.seen_.shape[1], -1, dtype=np.int64)
    at = dataset.item_vocab_.index(candidates)
    column[at[at >= 0]] = np.flatnonzero(at >= 0)
    u = dataset.user_vocab_.index(users)
    seen = (sp.diags((u >= 0).astype(np.float64)) @ dataset.seen_[np.maximum(u, 0)]).tocoo()
    rows, cols = seen.row, column[seen.col]
    keep = (cols >= 0) & (seen.data > 0)
    rows, cols = rows[keep], cols[keep]
    if hist is not None:
        h_rows = pd.Index(users).get_indexer(hist[dataset.user_col])
        h_cols = pd.Index(candidates).get_indexer(hist[dataset.item_col])
        keep = (h_rows >= 0) & (h_cols >= 0)
        rows = np.concatenate([rows, h_rows[keep]])
        cols = np.concatenate([cols, h_cols[keep]])
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)),
                         shape=(len(users), len(candidates)))

def context_terms(dataset: InteractionDataset, context, users, params, k: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(t_c, q_c) of every user's context (a dict or one row for all, or a row per user;
    zeros without one) for the context parameters ``params`` of ``k`` factors."""
    if context is None:
        return np.zeros(len(users)), np.zeros((len(users), k))
    if dataset.context_encoder_ is None:
        raise ValueError("this Recommender has no context columns: context must be None")
    frame = pd.DataFrame([context]) if isinstance(context, dict) else context
    check_frame(frame, dataset.context_cols, "context")
    if len(frame) == 1:
        at = np.zeros(len(users), dtype=np.int64)
    else:
        if dataset.user_col not in frame.columns:
            raise ValueError(f"a context with {len(frame)} rows needs a {dataset.user_col!r} "
                             "column saying which user each row is for")
        index = pd.Index(frame[dataset.user_col])
        if not index.is_unique:
            raise ValueError(f"context has several rows for user(s) "
                             f"{shown(index[index.duplicated()].unique())}")
        at = index.get_indexer(users)
        if (at < 0).any():
            raise ValueError(f"context has no row for user(s) {shown(users[at < 0])}")
    t, q = part_terms(dataset.context_rows(frame), *params)
    return t[at], q[at]


def history_frame(dataset: InteractionDataset, history) -> pd.DataFrame | None:
    """``history`` (a frame or a dict user -> items) as a checked frame of new users."""
    if history is None:
        return None
    if isinstance(history, dict):
        pairs = [(u, i) for u, its in history.items()
                 for i in ([its] if np.ndim(its) == 0 else its)]
        history = pd.DataFrame(pairs, columns=[dataset.user_col, dataset.item_col])
    check_frame(history, [dataset.user_col, dataset.item_col], "history")
    for col in (dataset.user_col, dataset.item_col):
        check_keys(history, col, "history")
    needs_target = dataset.target is not None and "users" not in implicit_sides(dataset.implicit)
    if needs_target and dataset.target not in history.columns:
        raise ValueError(f"history needs the target column {dataset.target!r} to fold users "
                         "into this model (or use implicit=True)")
    users = as_keys(pd.unique(history[dataset.user_col]))
    trained = dataset.user_vocab_.index(users) >= 0
    if trained.any():
        raise ValueError(f"history is for users the model has not been trained on; "
                         f"{shown(users[trained])} are (use partial_fit to update them)")
    return history.reset_index(drop=True)
