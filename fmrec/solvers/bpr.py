"""BPR epochs: SGD/AdaGrad over (user, positive, sampled negative) triples (FMRanker)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fmrec._kernels import bpr as _bpr
from fmrec.solvers._state import Diverged, FMState, weighted_column_counts

# A positive whose user rejects this many sampled items in a row is skipped for the epoch
# (users who have seen nearly every item).
MAX_DRAWS = 100
# Popularity sampling draws item i with probability ∝ (n_i + 1) ** POPULARITY_POWER, n_i its
# number of training positives (word2vec's 3/4; the +1 keeps items without positives in play).
POPULARITY_POWER = 0.75
# The sampler also keeps each user's seen items as a row of bits, within this many bytes in
# all: exactly (a bit per item; MovieLens 1M takes 2.8 MB) when that fits, so that a lookup
# reads one bit instead of searching the user's row; else as a filter of up to
# SEEN_FILTER_MAX_WORDS 64-bit words (one cache line) per user, which rules most unseen items
# out without the search.
SEEN_BITMAP_MAX_BYTES = 16 << 20
SEEN_FILTER_MAX_WORDS = 8
# Without exact rows for everyone, users who have seen more items than this (the part of a
# row the kernel prefetches; a 512-bit filter of theirs is over a fifth set) get exact rows
# too, the most active first, within another SEEN_BITMAP_MAX_BYTES: otherwise their lookups
# are searches of long rows, cache misses for every step.
SEEN_EXACT_MIN_ITEMS = 128
# With several threads, columns stepped by at least this share of the triples (a user's
# gender, an item's year, a common genre) are stepped in per-thread copies merged now and
# then (the kernel's Replica), at most HOT_MAX_COLUMNS of them, the most stepped first:
# threads that all write the same rows spend their time passing cache lines between cores.
HOT_MIN_SHARE = 1 / 128
HOT_MAX_COLUMNS = 256


def exact_row_words(n_items: int) -> int:
    """64-bit words of an exact row of seen bits: one bit per item."""
    return (n_items + 63) // 64


def seen_bits_words(n_users: int, n_items: int) -> int:
    """64-bit words per user of the sampler's seen bits (0: none), see SEEN_BITMAP_MAX_BYTES."""
    exact = exact_row_words(n_items)
    fits = SEEN_BITMAP_MAX_BYTES // (8 * max(n_users, 1))
    if exact <= fits:
        return exact
    words = min(fits, SEEN_FILTER_MAX_WORDS)
    return 1 << (words.bit_length() - 1) if words > 0 else 0


def heavy_users(seen_counts: np.ndarray, n_items: int) -> np.ndarray:
    """The users that get exact rows of seen bits beside the filters (int64, most active
    first): those with more than SEEN_EXACT_MIN_ITEMS seen items, within the byte budget."""
    row_bytes = 8 * exact_row_words(n_items)
    many = np.flatnonzero(seen_counts > SEEN_EXACT_MIN_ITEMS)
    many = many[np.argsort(-seen_counts[many], kind="stable")]
    return many[:max(SEEN_BITMAP_MAX_BYTES, 0) // max(row_bytes, 1)].astype(np.int64)


def popularity_cdf(items: np.ndarray, n_items: int) -> np.ndarray:
    """Cumulative sampling distribution ∝ (n_i + 1)^0.75 over the items (float64)."""
    p = (np.bincount(items, minlength=n_items) + 1.0) ** POPULARITY_POWER
    cdf = np.cumsum(p / p.sum())
    cdf[-1] = 1.0
    return cdf


def hot_columns(U: sp.csr_matrix, I: sp.csr_matrix, users: np.ndarray,  # noqa: E741
                items: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """The columns (int64, most stepped first) that a triple steps with a probability of at
    least HOT_MIN_SHARE, at most HOT_MAX_COLUMNS of them.

    A triple steps the columns of its user's row, its positive's and its negative's; the
    negative is taken as drawn from ``cdf`` (uniformly when empty), as a sample would be
    before the hardest of several is kept.
    """
    n = len(users)
    if n == 0:
        return np.empty(0, np.int64)
    n_items = I.shape[0]
    negative = np.diff(cdf, prepend=0.0) if len(cdf) else np.full(n_items, 1.0 / n_items)
    stepped = (weighted_column_counts(U, np.bincount(users, minlength=U.shape[0]) / n)
               + weighted_column_counts(I, np.bincount(items, minlength=n_items) / n + negative))
    hot = np.flatnonzero(stepped >= HOT_MIN_SHARE)
    hot = hot[np.argsort(-stepped[hot], kind="stable")][:HOT_MAX_COLUMNS]
    return hot.astype(np.int64)


def is_one_hot(U: sp.csr_matrix, I: sp.csr_matrix) -> bool:  # noqa: E741
    """True when every row of U and of I is one column with value 1 and no column is both a
    user and an item column: the kernel's fast path (ids only, the common case) applies."""
    for M in (U, I):
        if M.nnz != M.shape[0] or not (np.diff(M.indptr) == 1).all() or (M.data != 1).any():
            return False
    used = np.zeros(U.shape[1], dtype=bool)
    used[U.indices] = True
    return not used[I.indices].any()


@dataclass
class BPREpoch:
    """One epoch's figures: Σ of the triples' BPR losses, how many triples ran, how many
    positives found no negative, and the wall time."""

    loss_sum: float
    n_done: int
    n_skipped: int
    seconds: float


class BPRSolver:
    """BPR epochs over the positives ``(users[t], items[t])`` of user rows U and item rows I.

    ``seen`` (CSR, users × items, positives included) holds the items never sampled as a
    user's negatives; U, I and seen share one index dtype. ``accumulators`` (AdaGrad's
    squared-gradient sums of w and V) continue an earlier fit; the solver updates them in
    place.
    """

    def __init__(self, U: sp.csr_matrix, I: sp.csr_matrix, users: np.ndarray,  # noqa: E741
                 items: np.ndarray, seen: sp.csr_matrix, state: FMState, *, hp: dict,
                 rng: np.random.RandomState, n_threads: int, accumulators=None):
        self.U, self.I, self.users, self.items, self.seen = U, I, users, items, seen
        self.state, self.hp, self.rng, self.n_threads = state, hp, rng, n_threads
        self.adagrad = hp["lr_schedule"] == "adagrad"
        w, V = state.w, state.V
        if accumulators is None or not self.adagrad or accumulators[1].shape != V.shape:
            accumulators = ((np.zeros_like(w), np.zeros_like(V)) if self.adagrad
                            else (np.zeros(1, w.dtype), np.zeros((1, 1), w.dtype)))
        self.accumulators = accumulators
        self.cdf = np.empty(0)
        if hp["negative_sampling"] == "popularity":
            self.cdf = popularity_cdf(items, I.shape[0])
        self.no_negatives = np.empty(0, np.int64)
        self.one_hot = is_one_hot(U, I)
        self.hot = (hot_columns(U, I, users, items, self.cdf)
                    if n_threads > 1 and not self.one_hot else np.empty(0, np.int64))
        n_users, n_items = seen.shape[0], I.shape[0]
        words = seen_bits_words(n_users, n_items)
        self.seen_bits = (None if words == 0 else
                          _bpr.seen_bitmap(seen.indptr, seen.indices, n_items, words))
        self.exact_of = self.exact_bits = None
        if words < exact_row_words(n_items):
            heavy = heavy_users(np.diff(seen.indptr), n_items)
            if len(heavy):
                self.exact_of = np.full(n_users, -1, np.int64)
                self.exact_of[heavy] = np.arange(len(heavy))
                self.exact_bits = _bpr.seen_bitmap(seen.indptr, seen.indices, n_items,
                                                   users=heavy)

    def epoch(self) -> BPREpoch:
        """One pass over the shuffled positives, one (hardest of ``n_candidates``) negative
        each."""
        hp, st, rng = self.hp, self.state, self.rng
        # One seed from the estimator's RandomState drives the epoch: the order comes from a
        # Generator, whose permutation takes half the time of RandomState's (0.35 against
        # 0.67 s for 10M positives).
        seed = np.random.SeedSequence(rng.randint(2**31))
        order = np.random.default_rng(seed).permutation(len(self.users))
        seeds = seed.spawn(1)[0].generate_state(max(self.n_threads, 1), np.uint64)
        acc_w, acc_V = self.accumulators
        U, I, seen = self.U, self.I, self.seen  # noqa: E741
        start = time.perf_counter()
        loss_sum, n_done, n_skipped, n_bad = _bpr.bpr_epoch(
            U.indptr, U.indices, U.data, I.indptr, I.indices, I.data,
            seen.indptr, seen.indices, self.users, self.items, self.no_negatives, order,
            self.cdf, st.w, st.V, acc_w, acc_V, hp["learning_rate"], self.adagrad,
            hp["reg_linear"], hp["reg_factors"], hp["n_candidates"], MAX_DRAWS, seeds,
            self.n_threads, self.one_hot, self.seen_bits, self.exact_of, self.exact_bits,
            self.hot)
        seconds = time.perf_counter() - start
        if n_bad or not (np.isfinite(loss_sum) and st.is_finite()):
            raise Diverged(f"{n_bad} triples had a non-finite score difference")
        return BPREpoch(loss_sum, int(n_done), int(n_skipped), seconds)
