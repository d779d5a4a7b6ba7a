"""FMRanker (BPR): reference gradients, kernel vs reference, sampler, ranking quality, API."""

import numpy as np
import pytest
import reference as ref
import scipy.sparse as sp
from conftest import assert_same_bits_with_and_without_avx
from scipy import stats

from fmrec import openmp_enabled
from fmrec._kernels import bpr as _bpr
from fmrec.models.ranker import FMRanker
from fmrec.solvers.bpr import MAX_DRAWS, popularity_cdf


def _csr(M, index_dtype=np.int32, dtype=np.float64):
    M = sp.csr_matrix(M, dtype=dtype)
    M.sum_duplicates()
    M.sort_indices()
    M.eliminate_zeros()
    M.indices = M.indices.astype(index_dtype)
    M.indptr = M.indptr.astype(index_dtype)
    return M


def _random_rows(n_rows, n_cols, density, seed, empty_rows=()):
    rng = np.random.default_rng(seed)
    M = sp.random(n_rows, n_cols, density=density, format="lil", random_state=seed,
                  data_rvs=rng.standard_normal)
    for r in empty_rows:
        M.rows[r], M.data[r] = [], []
    return sp.csr_matrix(M)


def _one_hot(n_users, n_items):
    U = sp.hstack([sp.eye(n_users), sp.csr_matrix((n_users, n_items))]).tocsr()
    I = sp.hstack([sp.csr_matrix((n_items, n_users)), sp.eye(n_items)]).tocsr()  # noqa: E741
    return U, I


@pytest.fixture(scope="module")
def synthetic():
    """Users and items with latent vectors; each user's positives are its 25 best items."""
    rng = np.random.default_rng(0)
    n_users, n_items, d, n_pos = 200, 120, 4, 25
    P, Q = rng.normal(size=(n_users, d)), rng.normal(size=(n_items, d))
    top = np.argsort(-(P @ Q.T), axis=1)[:, :n_pos]
    users, items = np.repeat(np.arange(n_users), n_pos), top.ravel()
    test = rng.random(len(users)) < 0.2
    U, I = _one_hot(n_users, n_items)  # noqa: E741
    return U, I, users, items, test


def _heldout_auc(model, data) -> float:
    """Mean over users of P(score of a held-out positive > score of a non-positive)."""
    U, I, users, items, test = data  # noqa: E741
    S = model.score_matrix(U, I)
    positive = np.zeros(S.shape, bool)
    positive[users, items] = True
    held = np.zeros(S.shape, bool)
    held[users[test], items[test]] = True
    aucs = [np.mean(S[u, held[u]][:, None] > S[u, ~positive[u]][None, :])
            for u in range(S.shape[0]) if held[u].any()]
    return float(np.mean(aucs))


def _fit(data, **params):
    U, I, users, items, test = data  # noqa: E741
    # Penalties pinned at the values these tests were written with (the class defaults
    # before issue 14): the training-loss checks below measure how far they let it fall.
    defaults = dict(n_factors=16, n_epochs=20, reg_linear=0.01, reg_factors=0.01,
                    random_state=0)
    return FMRanker(**{**defaults, **params}).fit(U, I, users[~test], items[~test])


# ------------------------------------------------------------------ 1. gradients and steps
def test_reference_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    n, k = 9, 3
    # Overlapping rows: column 2 is in all three, column 5 in both items, column 7 in u and i.
    u = np.zeros(n)
    i = np.zeros(n)
    j = np.zeros(n)
    u[[0, 2, 7]] = rng.normal(size=3)
    i[[2, 3, 5, 7]] = rng.normal(size=4)
    j[[2, 5, 8]] = rng.normal(size=3)
    w, V = rng.normal(size=n), rng.normal(size=(n, k))
    loss, gw, gV = ref.bpr_triple_gradient(u, i, j, w, V, 0.3, 0.2)
    assert loss > 0
    h = 1e-6
    for c in range(n):
        e = np.zeros(n)
        e[c] = h
        fd = (ref.bpr_triple_loss(u, i, j, w + e, V, 0.3, 0.2)
              - ref.bpr_triple_loss(u, i, j, w - e, V, 0.3, 0.2)) / (2 * h)
        assert gw[c] == pytest.approx(fd, rel=1e-6, abs=1e-8)
        for f in range(k):
            E = np.zeros_like(V)
            E[c, f] = h
            fd = (ref.bpr_triple_loss(u, i, j, w, V + E, 0.3, 0.2)
                  - ref.bpr_triple_loss(u, i, j, w, V - E, 0.3, 0.2)) / (2 * h)
            assert gV[c, f] == pytest.approx(fd, rel=1e-6, abs=1e-8)
    # Untouched parameters have no gradient: column 1 is in no row, column 0 only in u.
    assert gw[1] == 0 and not gV[1].any() and gw[0] == 0


def _epoch(U, I, seen, users, items, w, V, aw, aV, *, lr, adagrad, rw, rv,  # noqa: E741
           n_candidates, seed, order=None, negatives=None, cdf=None, max_draws=MAX_DRAWS,
           **options):
    """One ``_bpr.bpr_epoch`` on one thread over the positives (users[t], items[t]) in
    ``order`` (default: as given), updating w, V, aw, aV in place; returns its figures.
    ``negatives``: given negatives (default none); ``cdf``: popularity sampling (default
    uniform); ``options``: the kernel's keywords (one_hot, seen_bits, ...)."""
    def int64(a):
        return np.ascontiguousarray(a, dtype=np.int64)
    return _bpr.bpr_epoch(
        U.indptr, U.indices, U.data, I.indptr, I.indices, I.data, seen.indptr, seen.indices,
        int64(users), int64(items), int64([] if negatives is None else negatives),
        int64(np.arange(len(users)) if order is None else order),
        np.empty(0) if cdf is None else cdf, w, V, aw, aV, lr, adagrad, rw, rv, n_candidates,
        max_draws, np.array([seed], np.uint64), 1, **options)


def _kernel_epoch(U, I, users, items, negatives, order, w, V, acc, *, lr, adagrad, rw, rv,  # noqa: E741
                  dtype=np.float64, index_dtype=np.int32):
    U, I = _csr(U, index_dtype, dtype), _csr(I, index_dtype, dtype)  # noqa: E741
    seen = _csr(sp.csr_matrix((np.ones(len(users)), (users, items)),
                              shape=(U.shape[0], I.shape[0])), index_dtype)
    w, V = w.astype(dtype), V.astype(dtype)
    aw, aV = acc[0].astype(dtype), acc[1].astype(dtype)
    out = _epoch(U, I, seen, users, items, w, V, aw, aV, lr=lr, adagrad=adagrad, rw=rw, rv=rv,
                 n_candidates=1, seed=7, order=order, negatives=negatives)
    return w, V, (aw, aV), out


@pytest.mark.parametrize("adagrad", [False, True], ids=["constant", "adagrad"])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("k", [4, 19])  # 19: whole SIMD vectors of factors, then the rest
def test_kernel_epoch_matches_reference(adagrad, index_dtype, k):
    rng = np.random.default_rng(2)
    n_features = 15
    # Random rows share columns between users and items and between items; some are empty.
    U = _random_rows(8, n_features, 0.3, seed=3, empty_rows=(1,))
    I = _random_rows(10, n_features, 0.3, seed=4, empty_rows=(2,))  # noqa: E741
    users = rng.integers(0, 8, 40)
    items = rng.integers(0, 10, 40)
    negatives = rng.integers(0, 10, 40)
    order = rng.permutation(40)
    w, V = rng.normal(size=n_features) * 0.3, rng.normal(size=(n_features, k)) * 0.3
    acc = (rng.random(n_features), rng.random((n_features, k)))
    hp = dict(learning_rate=0.1, adagrad=adagrad, reg_linear=0.05, reg_factors=0.02)
    w_ref, V_ref, acc_ref, loss_ref = ref.bpr_epoch(U, I, users, items, negatives, order, w, V,
                                                    acc=acc, **hp)
    w_k, V_k, acc_k, (loss_k, n_done, n_skipped, n_bad) = _kernel_epoch(
        U, I, users, items, negatives, order, w, V, acc, lr=0.1, adagrad=adagrad, rw=0.05,
        rv=0.02, index_dtype=index_dtype)
    assert (n_done, n_skipped, n_bad) == (40, 0, 0)
    assert loss_k == pytest.approx(loss_ref, rel=1e-12)
    np.testing.assert_allclose(w_k, w_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(V_k, V_ref, rtol=1e-9, atol=1e-12)
    if adagrad:
        np.testing.assert_allclose(acc_k[0], acc_ref[0], rtol=1e-9)
        np.testing.assert_allclose(acc_k[1], acc_ref[1], rtol=1e-9)
    assert not np.allclose(V_k, V)  # the epoch did move the parameters

    # float32 follows the same arithmetic to single precision.
    w32, V32, _, _ = _kernel_epoch(U, I, users, items, negatives, order, w, V, acc, lr=0.1,
                                   adagrad=adagrad, rw=0.05, rv=0.02, dtype=np.float32)
    np.testing.assert_allclose(V32, V_ref, rtol=1e-3, atol=1e-4)


def _one_hot_epochs(dtype, index_dtype, adagrad, n_candidates, k, negatives=None,
                    sampling="uniform", n_epochs=3, **options):
    """w, V, accumulators and figures after ``n_epochs`` kernel epochs on one-hot ids, once
    through the one-hot fast path and once through the general path (same seeds).
    ``options``: more of the kernel's keywords."""
    rng = np.random.default_rng(8)
    n_users, n_items = 40, 30
    U, I = _one_hot(n_users, n_items)  # noqa: E741
    U, I = _csr(U, index_dtype, dtype), _csr(I, index_dtype, dtype)  # noqa: E741
    users, items = rng.integers(0, n_users, 300), rng.integers(0, n_items, 300)
    seen = _csr(sp.csr_matrix((np.ones(len(users)), (users, items)),
                              shape=(n_users, n_items)), index_dtype)
    cdf = np.empty(0) if sampling == "uniform" else popularity_cdf(items, n_items)
    negatives = np.empty(0, np.int64) if negatives is None else negatives(rng, len(users))
    n_features = n_users + n_items
    w0 = (rng.normal(size=n_features) * 0.1).astype(dtype)
    V0 = (rng.normal(size=(n_features, k)) * 0.1).astype(dtype)
    out = {}
    for fast in (True, False):
        w, V = w0.copy(), V0.copy()
        aw = np.zeros_like(w) if adagrad else np.zeros(1, dtype)
        aV = np.zeros_like(V) if adagrad else np.zeros((1, 1), dtype)
        figures = []
        for epoch in range(n_epochs):
            order = np.random.default_rng(epoch).permutation(len(users))
            figures.append(_epoch(U, I, seen, users, items, w, V, aw, aV, lr=0.1,
                                  adagrad=adagrad, rw=0.03, rv=0.02,
                                  n_candidates=n_candidates, seed=5 + epoch, order=order,
                                  negatives=negatives, cdf=cdf, one_hot=fast, **options))
        out[fast] = (w, V, aw, aV, figures)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("adagrad", [False, True], ids=["constant", "adagrad"])
# The fast path scores candidates four to a pass (dot4), the rest one by one: 4 and 8 are
# whole passes, 5 and 7 leave one and three.
@pytest.mark.parametrize("n_candidates", [1, 4, 5, 7, 8])
@pytest.mark.parametrize("k", [3, 8, 19])
def test_one_hot_fast_path_gives_the_general_paths_bits(dtype, adagrad, n_candidates, k):
    out = _one_hot_epochs(dtype, np.int32, adagrad, n_candidates, k)
    for fast, general in zip(out[True], out[False], strict=True):
        if isinstance(fast, list):
            assert fast == general  # loss sums (exactly), steps, skipped, non-finite
        else:
            np.testing.assert_array_equal(fast, general)
    assert all(fig[1] > 250 for fig in out[True][4])  # steps were taken (not skipped)


def test_one_hot_fast_path_with_given_negatives_and_popularity_sampling():
    # Given negatives include some equal to the positive (that triple takes the general
    # path inside the fast one); int64 indices; popularity sampling.
    def negatives(rng, n):
        return rng.integers(0, 30, n)
    out = _one_hot_epochs(np.float64, np.int64, True, 1, 8, negatives=negatives)
    np.testing.assert_array_equal(out[True][1], out[False][1])
    assert out[True][4] == out[False][4]
    out = _one_hot_epochs(np.float32, np.int64, True, 5, 8, sampling="popularity")
    np.testing.assert_array_equal(out[True][1], out[False][1])
    assert out[True][4] == out[False][4]


def _seen_bit_reference(j, n_items, words):
    """Item j's bit in a row of ``words`` words: j in an exact row, else the top
    log2(64 * words) bits of j * 0x9E3779B97F4A7C15 (mod 2**64)."""
    if words == (n_items + 63) // 64:
        return j
    product = (int(j) * 0x9E3779B97F4A7C15) % 2**64
    return product >> (64 - (64 * words).bit_length() + 1)


@pytest.mark.parametrize("words", [None, 1, 2], ids=["exact", "1-word filter", "2-word filter"])
def test_seen_bitmap_sets_each_seen_items_bit(words):
    n_users, n_items = 30, 200  # 4 words make an exact row
    seen = _seen_matrix(n_users, n_items, 0.05, seed=11)
    bits = _bpr.seen_bitmap(seen.indptr, seen.indices, n_items, words)
    per_user = words or 4
    assert bits.shape == (n_users * per_user,)
    unpacked = np.unpackbits(bits.view(np.uint8), bitorder="little").reshape(n_users, -1)
    expected = np.zeros_like(unpacked)
    for u in range(n_users):
        for j in seen.indices[seen.indptr[u]:seen.indptr[u + 1]]:
            expected[u, _seen_bit_reference(j, n_items, per_user)] = 1
    np.testing.assert_array_equal(unpacked, expected)
    if words is None:
        np.testing.assert_array_equal(unpacked[:, :n_items], seen.toarray() != 0)


@pytest.mark.parametrize("words", [0, 3, 5, -1])
def test_seen_bitmap_rejects_rows_that_are_neither_exact_nor_a_power_of_two(words):
    seen = _seen_matrix(4, 200, 0.05, seed=11)
    with pytest.raises(ValueError, match="4 words or a smaller power of two"):
        _bpr.seen_bitmap(seen.indptr, seen.indices, 200, words)


def _bitmap_epoch(seen, U, I, users, items, w, V, n_candidates, fast, seen_bits,  # noqa: E741
                  exact_of=None, exact_bits=None):
    w, V, aV = w.copy(), V.copy(), np.zeros_like(V)
    figures = _epoch(U, I, seen, users, items, w, V, np.zeros_like(w), aV, lr=0.1,
                     adagrad=True, rw=0.01, rv=0.01, n_candidates=n_candidates, seed=4,
                     one_hot=fast, seen_bits=seen_bits, exact_of=exact_of,
                     exact_bits=exact_bits)
    return w, V, aV, figures


def _seen_case(rng_seed, seen_seed, empty_user_0):
    """30 users and 140 items (not a multiple of 64), 30% seen; user 1 has seen every item,
    user 2 all but one (and has the first 40 of 400 positives); one-hot rows, random w, V."""
    rng = np.random.default_rng(rng_seed)
    n_users, n_items, k = 30, 140, 4
    seen = _seen_matrix(n_users, n_items, 0.3, seed=seen_seed).tolil()
    if empty_user_0:
        seen.rows[0], seen.data[0] = [], []
    seen.rows[1], seen.data[1] = list(range(n_items)), [1.0] * n_items
    seen.rows[2], seen.data[2] = list(range(1, n_items)), [1.0] * (n_items - 1)
    seen = _csr(seen)
    users = rng.integers(0, n_users, 400).astype(np.int64)
    users[:40] = 2
    items = rng.integers(0, n_items, 400).astype(np.int64)
    U, I = _one_hot(n_users, n_items)  # noqa: E741
    U, I = _csr(U), _csr(I)  # noqa: E741
    w0, V0 = rng.normal(size=U.shape[1]) * 0.1, rng.normal(size=(U.shape[1], k)) * 0.1
    return seen, U, I, users, items, w0, V0


@pytest.mark.parametrize("fast", [True, False], ids=["one-hot path", "general path"])
@pytest.mark.parametrize("n_candidates", [1, 5])
@pytest.mark.parametrize("words", [None, 1, 2], ids=["exact", "1-word filter", "2-word filter"])
def test_seen_bits_give_the_searchs_bits(fast, n_candidates, words):
    # Users who have seen none, some, all but one or all of the items, a catalogue that is
    # not a multiple of 64: training with the bits (exact or a filter) must give the bits of
    # training with the sorted rows alone.
    seen, U, I, users, items, w0, V0 = _seen_case(9, 10, empty_user_0=True)  # noqa: E741
    bits = _bpr.seen_bitmap(seen.indptr, seen.indices, 140, words)
    args = (seen, U, I, users, items, w0, V0, n_candidates, fast)
    search, with_bits = _bitmap_epoch(*args, None), _bitmap_epoch(*args, bits)
    assert search[3] == with_bits[3] and search[3][2] > 0  # user 1 was skipped
    for a, b in zip(search[:3], with_bits[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    # The kernel reads the bits: set everywhere, an exact row leaves no negative to draw
    # (every positive skipped) while a filter falls back to the search (the same bits).
    every = _bitmap_epoch(*args, np.full_like(bits, np.iinfo(np.uint64).max))
    if words is None:
        assert every[3][1] == 0 and every[3][2] == 400
    else:
        np.testing.assert_array_equal(every[1], search[1])
        # A clear bit of a filter is trusted: cleared everywhere, user 2's draws of seen
        # items are taken as negatives, and the epoch changes.
        cleared = _bitmap_epoch(*args, np.zeros_like(bits))
        assert cleared[3][2] < search[3][2]
    with pytest.raises(ValueError, match="one row of words per user"):
        _bitmap_epoch(*args, bits[:-1])


@pytest.mark.parametrize("fast", [True, False], ids=["one-hot path", "general path"])
@pytest.mark.parametrize("n_candidates", [1, 5])
@pytest.mark.parametrize("words", [0, 1], ids=["no filter", "1-word filter"])
def test_exact_rows_of_heavy_users_give_the_searchs_bits(fast, n_candidates, words):
    # Users 1 (seen everything), 2 (all but one), 5 and 7 get exact rows; the others keep
    # their filter rows (or none): the same bits as the search alone.
    seen, U, I, users, items, w0, V0 = _seen_case(12, 13, empty_user_0=False)  # noqa: E741
    n_items = 140
    filters = _bpr.seen_bitmap(seen.indptr, seen.indices, n_items, words) if words else None
    heavy = np.array([5, 1, 7, 2], np.int64)
    exact_bits = _bpr.seen_bitmap(seen.indptr, seen.indices, n_items, users=heavy)
    exact_of = np.full(30, -1, np.int64)
    exact_of[heavy] = np.arange(4)
    users[40:80] = 5
    args = (seen, U, I, users, items, w0, V0, n_candidates, fast, filters)
    search = _bitmap_epoch(*args[:-1], None)
    with_rows = _bitmap_epoch(*args, exact_of, exact_bits)
    assert search[3] == with_rows[3] and search[3][2] > 0
    for a, b in zip(search[:3], with_rows[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    # The kernel reads them: user 5's exact row set everywhere leaves it nothing to draw.
    full = exact_bits.copy()
    words_per_row = (n_items + 63) // 64
    full[:words_per_row] = np.iinfo(np.uint64).max
    blocked = _bitmap_epoch(*args, exact_of, full)
    # (user 1's positives are always skipped, user 2's (at most 40) only by chance)
    assert blocked[3][2] >= np.sum(users == 5) + np.sum(users == 1) > search[3][2]
    for bad, match in [((exact_of, None), "go together"),
                       ((exact_of[:-1], exact_bits), "one entry per user"),
                       ((exact_of, exact_bits[:-1]), "whole rows"),
                       ((np.where(exact_of == 3, 4, exact_of), exact_bits), "names no row")]:
        with pytest.raises(ValueError, match=match):
            _bitmap_epoch(*args, *bad)


def test_seen_bitmap_of_some_users_is_their_rows_of_the_full_one():
    seen = _seen_matrix(20, 150, 0.2, seed=3)
    full = _bpr.seen_bitmap(seen.indptr, seen.indices, 150).reshape(20, -1)
    some = _bpr.seen_bitmap(seen.indptr, seen.indices, 150, users=[7, 0, 19]).reshape(3, -1)
    np.testing.assert_array_equal(some, full[[7, 0, 19]])
    with pytest.raises(ValueError, match="rows of seen"):
        _bpr.seen_bitmap(seen.indptr, seen.indices, 150, users=[20])


def test_heavy_users_are_the_most_active_within_the_budget(monkeypatch):
    import fmrec.solvers.bpr as solver
    counts = np.array([500, 10, 129, 128, 900, 300])
    np.testing.assert_array_equal(solver.heavy_users(counts, 640), [4, 0, 5, 2])
    monkeypatch.setattr(solver, "SEEN_BITMAP_MAX_BYTES", 2 * 80)  # two rows of 10 words
    np.testing.assert_array_equal(solver.heavy_users(counts, 640), [4, 0])


@pytest.mark.parametrize(("n_users", "n_items", "words"), [
    (943, 1682, 27),            # MovieLens 100K: exact rows
    (6040, 3706, 58),           # MovieLens 1M: exact rows, 2.8 MB
    (200_000, 50_000, 8),       # a one-line filter per user (12.8 MB)
    (400_000, 50_000, 4),       # 16 MB / 400k users leaves 5 words: the power of two below
    (3_000_000, 50_000, 0),     # not even a word per user within the budget
    (0, 10, 1),
])
def test_seen_bits_take_exact_rows_when_they_fit_else_a_filter(n_users, n_items, words):
    from fmrec.solvers.bpr import SEEN_BITMAP_MAX_BYTES, seen_bits_words
    assert seen_bits_words(n_users, n_items) == words
    assert n_users * words * 8 <= SEEN_BITMAP_MAX_BYTES


def test_fits_with_and_without_the_seen_bitmap_agree(synthetic, monkeypatch):
    import fmrec.solvers.bpr as solver
    made, real = [], solver._bpr.seen_bitmap

    def recording(*args, **kwargs):
        made.append("some users" if kwargs.get("users") is not None else "every user")
        return real(*args, **kwargs)

    monkeypatch.setattr(solver._bpr, "seen_bitmap", recording)
    with_bits = _fit(synthetic, n_epochs=2, random_state=3)
    assert made == ["every user"]  # a small catalogue: exact rows for everyone
    # 200 users, 120 items: a budget of one word per user makes one-word filters, and the
    # users with more than 19 seen items get exact rows (two words) within the same budget.
    monkeypatch.setattr(solver, "SEEN_BITMAP_MAX_BYTES", 200 * 8)
    monkeypatch.setattr(solver, "SEEN_EXACT_MIN_ITEMS", 19)
    mixed = _fit(synthetic, n_epochs=2, random_state=3)
    assert made == ["every user"] * 2 + ["some users"]
    monkeypatch.setattr(solver, "SEEN_BITMAP_MAX_BYTES", 0)
    without = _fit(synthetic, n_epochs=2, random_state=3)
    assert len(made) == 3  # no budget: the fit searched the sorted rows
    for model in (with_bits, mixed):
        np.testing.assert_array_equal(model.V_, without.V_)
        assert model.history_ == without.history_ | {"seconds": model.history_["seconds"]}


def _general_epochs(dtype, k, n_epochs=2, adagrad=True, **options):
    """w, V, AdaGrad sums of V and figures after ``n_epochs`` kernel epochs with 5 sampled
    candidates on rows that share columns (user with item, item with item). ``options``:
    more of the kernel's keywords."""
    rng = np.random.default_rng(9)
    n_users, n_items, n_features = 12, 10, 16
    U = _csr(_random_rows(n_users, n_features, 0.3, seed=10), dtype=dtype)
    I = _csr(_random_rows(n_items, n_features, 0.3, seed=11), dtype=dtype)  # noqa: E741
    users, items = rng.integers(0, n_users, 80), rng.integers(0, n_items, 80)
    seen = _csr(sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(n_users, n_items)))
    w = (rng.normal(size=n_features) * 0.1).astype(dtype)
    V = (rng.normal(size=(n_features, k)) * 0.1).astype(dtype)
    aw, aV = np.zeros_like(w), np.zeros_like(V)
    figures = [_epoch(U, I, seen, users, items, w, V, aw, aV, lr=0.1, adagrad=adagrad,
                      rw=0.03, rv=0.02, n_candidates=5, seed=epoch,
                      order=np.random.default_rng(epoch).permutation(len(users)), **options)
               for epoch in range(n_epochs)]
    return w, V, aV, figures


def test_avx_and_sse2_factor_loops_give_the_same_bits(tmp_path):
    # The kernel picks AVX at run time where the CPU has it; FMREC_NO_AVX=1 forces the SSE2
    # loops. Same lanes, same operations, no FMA: the parameters must agree bit for bit.
    script = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import test_ranker as t\n"
        "out = {}\n"
        "for dt in (np.float32, np.float64):\n"
        "    runs = t._one_hot_epochs(dt, np.int32, True, 5, 19)\n"
        "    for fast, (w, V, aw, aV, fig) in runs.items():\n"
        "        out[f'{dt.__name__}_{fast}_w'], out[f'{dt.__name__}_{fast}_V'] = w, V\n"
        "        out[f'{dt.__name__}_{fast}_aV'] = aV\n"
        "    for k in (5, 19):  # rows sharing columns, through the general path only\n"
        "        w, V, aV, fig = t._general_epochs(dt, k)\n"
        "        out[f'{dt.__name__}_general{k}_w'], out[f'{dt.__name__}_general{k}_V'] = w, V\n"
        "        out[f'{dt.__name__}_general{k}_aV'] = aV\n"
        "np.savez(sys.argv[2], **out)\n")
    assert_same_bits_with_and_without_avx(script, tmp_path, n_arrays=24)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("adagrad", [False, True], ids=["constant", "adagrad"])
@pytest.mark.parametrize("merge_every", [1, 7, 10**6])
def test_hot_column_copies_give_the_same_bits_on_one_thread(dtype, adagrad, merge_every):
    # One thread stepping its copies of the hot columns and merging them now and then must
    # end exactly where it ends in place: every read and write of a hot column (the user's
    # sum, candidate scores, steps, AdaGrad sums) has to go to the copy, and a merge with no
    # other thread's changes sets the shared values to the copy's.
    hot = {"hot_columns": np.array([0, 3, 4, 9, 15, 7]), "merge_every": merge_every}
    for a, b in zip(_general_epochs(dtype, 11, adagrad=adagrad),
                    _general_epochs(dtype, 11, adagrad=adagrad, **hot), strict=True):
        if isinstance(a, list):
            assert a == b
        else:
            np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not openmp_enabled(), reason="kernels built without OpenMP: one thread")
def test_two_threads_merge_every_step_of_their_hot_copies():
    # A zero learning rate leaves w and V where they are, so each triple's AdaGrad
    # increments depend on that triple alone (its negative given): however two threads
    # share the positives, the sums must come out as one thread's, to rounding. A merge
    # that lost one thread's changes would leave about half of them.
    rng = np.random.default_rng(3)
    n_users, n_items, n_features, k = 30, 25, 40, 6
    U = _csr(_random_rows(n_users, n_features, 0.2, seed=4))
    I = _csr(_random_rows(n_items, n_features, 0.2, seed=5))  # noqa: E741
    users, items = rng.integers(0, n_users, 4000), rng.integers(0, n_items, 4000)
    negatives = rng.integers(0, n_items, 4000)
    seen = _csr(sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(n_users, n_items)))
    w0, V0 = rng.normal(size=n_features) * 0.1, rng.normal(size=(n_features, k)) * 0.1
    sums = {}
    for n_threads in (1, 2):
        w, V = w0.copy(), V0.copy()
        aw, aV = np.zeros_like(w), np.zeros_like(V)
        out = _bpr.bpr_epoch(
            U.indptr, U.indices, U.data, I.indptr, I.indices, I.data, seen.indptr,
            seen.indices, users, items, negatives, np.arange(len(users)), np.empty(0), w, V,
            aw, aV, 0.0, True, 0.03, 0.02, 1, MAX_DRAWS, np.array([1, 2], np.uint64),
            n_threads, hot_columns=np.arange(n_features), merge_every=16)
        assert out[1] == len(users)
        np.testing.assert_array_equal(w, w0)
        np.testing.assert_array_equal(V, V0)
        sums[n_threads] = aw, aV
    assert sums[1][1].min() > 0  # every column was stepped
    for one, two in zip(sums[1], sums[2], strict=True):
        np.testing.assert_allclose(two, one, rtol=1e-9)


def test_hot_column_copies_are_checked():
    U, I = _one_hot(4, 3)  # noqa: E741
    U, I = _csr(U), _csr(I)  # noqa: E741
    seen = _csr(sp.csr_matrix(([1.0], ([0], [0])), shape=(4, 3)))
    w, V = np.zeros(7), np.zeros((7, 2))
    for options, match in [({"hot_columns": [1, 7]}, "columns of V"),
                           ({"hot_columns": [-1]}, "columns of V"),
                           ({"hot_columns": [2, 2]}, "distinct"),
                           ({"merge_every": 0}, "merge_every"),
                           ({"hot_columns": [1], "one_hot": True}, "general path")]:
        with pytest.raises(ValueError, match=match):
            _epoch(U, I, seen, [0], [0], w, V, np.zeros(7), np.zeros((7, 2)), lr=0.1,
                   adagrad=True, rw=0, rv=0, n_candidates=1, seed=0, **options)


def test_hot_columns_are_the_often_stepped_ones(monkeypatch):
    import fmrec.solvers.bpr as solver
    # 200 users (ids 0-199, then a column of half of them each: 200, 201) and 300 items
    # (ids 202-501; 502 in items 0-9 only; 503 in every item). A triple steps its user's
    # columns, its positive's and its negative's: 503 twice, 200 or 201, 502 with a chance
    # of 2 * 10/300, any one id 2/300, below HOT_MIN_SHARE = 1/128.
    n_users, n_items = 200, 300
    users = np.repeat(np.arange(n_users), 15)
    items = np.arange(len(users)) % n_items  # 10 positives each: 2/300 a triple, with negatives
    U = sp.hstack([sp.eye(n_users), sp.csr_matrix(np.c_[np.arange(n_users) % 2 == 0,
                                                        np.arange(n_users) % 2 == 1]),
                   sp.csr_matrix((n_users, 302))]).tocsr()
    I = sp.hstack([sp.csr_matrix((n_items, 202)), sp.eye(n_items),  # noqa: E741
                   sp.csr_matrix(np.c_[np.arange(n_items) < 10, np.ones(n_items)])]).tocsr()
    hot = solver.hot_columns(U, I, users, items, np.empty(0))
    assert hot[0] == 503 and set(hot[1:3]) == {200, 201} and hot[3] == 502 and len(hot) == 4
    monkeypatch.setattr(solver, "HOT_MAX_COLUMNS", 2)
    assert list(solver.hot_columns(U, I, users, items, np.empty(0))) == list(hot[:2])
    # Negatives drawn by popularity: items 0-9 taking nearly all draws makes their ids hot.
    cdf = np.r_[np.linspace(0.099, 0.99, 10), np.linspace(0.990033, 1, n_items - 10)]
    monkeypatch.setattr(solver, "HOT_MAX_COLUMNS", 256)
    assert set(range(202, 212)) <= set(solver.hot_columns(U, I, users, items, cdf))


def test_one_hot_detection():
    from fmrec.solvers.bpr import is_one_hot
    U, I = _one_hot(4, 3)  # noqa: E741
    U, I = _csr(U), _csr(I)  # noqa: E741
    assert is_one_hot(U, I)
    assert not is_one_hot(_csr(U * 2.0), I)  # a value other than 1
    assert not is_one_hot(U, _csr(I + sp.csr_matrix(([1.0], ([0], [0])), shape=I.shape)))
    shared = _csr(sp.hstack([sp.csr_matrix((3, 4)), sp.eye(3)]).tocsr()[:, :7])
    assert not is_one_hot(_csr(sp.eye(4, 7)), _csr(sp.eye(3, 7)))  # columns in both
    assert is_one_hot(_csr(sp.eye(4, 7)), shared)


# ------------------------------------------------------------------ 2. the sampler
def _seen_matrix(n_users, n_items, density, seed):
    seen = sp.random(n_users, n_items, density=density, format="csr", random_state=seed)
    seen.data[:] = 1
    return _csr(seen)


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_sampler_never_returns_a_seen_item(sampling):
    n_users, n_items = 30, 50
    seen = _seen_matrix(n_users, n_items, 0.6, seed=5)
    seen = _csr(seen + sp.csr_matrix(([1], ([0], [n_items - 1])), shape=seen.shape))
    cdf = np.empty(0) if sampling == "uniform" else popularity_cdf(seen.indices.astype(
        np.int64), n_items)
    users = np.repeat(np.arange(n_users), 2000).astype(np.int64)
    out = _bpr.sample_negatives(seen.indptr, seen.indices, users, n_items, cdf, 11, MAX_DRAWS)
    assert (out >= 0).all() and (out < n_items).all()
    assert not np.asarray(seen[users, out]).any()
    # Every unseen item turns up (nothing is systematically excluded).
    found = sp.csr_matrix((np.ones(len(out)), (users, out)), shape=seen.shape)
    found.data[:] = 1
    assert (found + seen).nnz == n_users * n_items


def test_sampler_gives_up_for_users_who_have_seen_everything():
    n_items = 20
    seen = _csr(np.vstack([np.ones(n_items), np.r_[np.ones(n_items - 1), 0]]))
    out = _bpr.sample_negatives(seen.indptr, seen.indices, np.array([0, 0, 1, 1], np.int64),
                                n_items, np.empty(0), 3, 1000)
    assert out[0] == out[1] == -1
    assert out[2] == out[3] == n_items - 1  # the one unseen item, found by rejection
    # In an epoch such a positive is skipped, not trained on.
    U, I = _one_hot(2, n_items)  # noqa: E741
    model = FMRanker(n_factors=2, n_epochs=1, random_state=0).fit(
        U, I, np.array([0, 1]), np.array([0, 1]), seen=seen)
    assert model.history_["n_skipped"] == [1]


@pytest.mark.parametrize("rows", ["one-hot", "one-hot via the general path", "general",
                                  "general, side columns first"])
@pytest.mark.parametrize("k", [3, 19])
def test_hard_negative_is_the_best_scoring_unseen_draw(rows, k):
    # Far more candidates than items: every unseen item is among them, so each positive's
    # negative must be its user's best scoring unseen item. Each user's two best items are
    # seen ones: a candidate not looked up would be caught. A zero learning rate leaves the
    # model as it is, so the loss sum tells which negatives were taken.
    rng = np.random.default_rng(12)
    n_users, n_items, n_side = 6, 8, 3
    U, I = _one_hot(n_users, n_items)  # noqa: E741
    if rows.startswith("general"):  # side columns shared by user and item rows
        # Placed first, they are a user's first columns: an item's are not all past them.
        first = rows.endswith("first")
        U = sp.hstack([_random_rows(n_users, n_side, 0.7, seed=13), U][::1 if first else -1])
        I = sp.hstack([_random_rows(n_items, n_side, 0.7, seed=14), I][::1 if first else -1])  # noqa: E741
        U, I = U.tocsr(), I.tocsr()  # noqa: E741
    U, I = _csr(U), _csr(I)  # noqa: E741
    w, V = rng.normal(size=U.shape[1]), rng.normal(size=(U.shape[1], k))
    S = np.array([[ref.predict((U[u] + I[j]).toarray(), 0.0, w, V)[0] for j in range(n_items)]
                  for u in range(n_users)])
    ranked = np.argsort(-S, axis=1)
    users = np.arange(n_users)
    items = ranked[:, 5]  # a positive among the worse half; the two best are seen too
    seen = np.zeros((n_users, n_items), bool)
    seen[users, items] = True
    seen[users[:, None], ranked[:, :2]] = True
    S_seen = np.where(seen, -np.inf, S)
    expected = sum(np.logaddexp(0.0, -(S[u, items[u]] - S_seen[u].max())) for u in users)
    seen = _csr(seen.astype(float))
    loss, n_done, n_skipped, n_bad = _epoch(
        U, I, seen, users, items, w, V.copy(), np.zeros(1), np.zeros((1, 1)), lr=0.0,
        adagrad=False, rw=0.0, rv=0.0, n_candidates=500, seed=3, max_draws=1000,
        one_hot=rows == "one-hot")
    assert (n_done, n_skipped, n_bad) == (n_users, 0, 0)
    assert loss == pytest.approx(expected, rel=1e-12)


def test_popularity_frequencies_follow_the_stated_distribution():
    n_items = 40
    rng = np.random.default_rng(6)
    positives = rng.zipf(1.5, 3000) % n_items  # skewed item counts
    cdf = popularity_cdf(positives, n_items)
    expected = (np.bincount(positives, minlength=n_items) + 1.0) ** 0.75
    np.testing.assert_allclose(np.diff(np.r_[0, cdf]), expected / expected.sum(), rtol=1e-12)
    # User 0 has seen nothing; user 1 has seen items 0..9, so draws follow the same weights
    # renormalized over items 10..39.
    seen = _csr(sp.csr_matrix((np.ones(10), (np.ones(10, int), np.arange(10))),
                              shape=(2, n_items)))
    n = 200_000
    for user, allowed in ((0, np.arange(n_items)), (1, np.arange(10, n_items))):
        out = _bpr.sample_negatives(seen.indptr, seen.indices, np.full(n, user, np.int64),
                                    n_items, cdf, 17 + user, MAX_DRAWS)
        counts = np.bincount(out, minlength=n_items)
        assert counts[np.setdiff1d(np.arange(n_items), allowed)].sum() == 0
        p = expected[allowed] / expected[allowed].sum()
        assert stats.chisquare(counts[allowed], p * n).pvalue > 1e-4
        # ...and clearly not uniform
        assert stats.chisquare(counts[allowed]).pvalue < 1e-10


def _splitmix64_uniforms(seed: int, n: int) -> np.ndarray:
    """The sampler's first n uniforms from ``seed``: splitmix64's top 53 bits over 2**53."""
    out, state, mask = np.empty(n), seed, 2**64 - 1
    for t in range(n):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out[t] = ((z ^ (z >> 31)) >> 11) / 2.0**53
    return out


@pytest.mark.parametrize("case", ["popularity", "zero-weight items", "mass short of 1",
                                  "one item"])
def test_popularity_draws_are_the_first_item_whose_cdf_exceeds_the_uniform(case):
    # The kernel walks from a guide rather than halving the table: same answer, every draw.
    rng = np.random.default_rng(8)
    n_items = {"one item": 1}.get(case, 300)
    weights = rng.zipf(1.3, n_items).astype(float)
    if case == "zero-weight items":  # runs of equal cumulative values
        weights[rng.random(n_items) < 0.5] = 0
    cdf = np.cumsum(weights / weights.sum())
    if case == "popularity":
        cdf = popularity_cdf(rng.zipf(1.5, 5000) % n_items, n_items)
    elif case == "mass short of 1":  # uniforms above cdf[-1] take the last item
        cdf *= 0.9
    n, seed = 20_000, 23
    seen = _csr(sp.csr_matrix((1, n_items)))
    out = _bpr.sample_negatives(seen.indptr, seen.indices, np.zeros(n, np.int64), n_items,
                                cdf, seed, MAX_DRAWS)
    r = _splitmix64_uniforms(seed, n)
    expected = np.minimum(np.searchsorted(cdf, r, side="right"), n_items - 1)
    np.testing.assert_array_equal(out, expected)
    if case == "zero-weight items":
        assert not np.isin(out, np.flatnonzero(weights == 0)).any()


@pytest.mark.parametrize("cdf, match", [
    (np.array([0.2, 0.1, 1.0]), "non-decreasing"),
    (np.array([0.2, np.nan, 1.0]), "finite"),
    (np.array([0.5, 1.0]), "one entry per item")])
def test_a_malformed_cdf_is_refused(cdf, match):
    seen = _csr(sp.csr_matrix((1, 3)))
    with pytest.raises(ValueError, match=match):
        _bpr.sample_negatives(seen.indptr, seen.indices, np.zeros(4, np.int64), 3, cdf, 1,
                              MAX_DRAWS)


# ------------------------------------------------------------------ 3. ranking quality
def test_heldout_auc_on_a_known_ranking(synthetic):
    untrained = _fit(synthetic, n_epochs=1, learning_rate=1e-9)
    assert abs(_heldout_auc(untrained, synthetic) - 0.5) < 0.1
    model = _fit(synthetic)
    auc = _heldout_auc(model, synthetic)
    assert auc > 0.9, auc
    losses = model.history_["train_loss"]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("params", [dict(negative_sampling="popularity"),
                                    dict(n_candidates=5), dict(lr_schedule="constant")],
                         ids=["popularity", "hard-negatives", "constant-lr"])
def test_variants_also_learn_the_ranking(synthetic, params):
    if params.get("lr_schedule") == "constant":
        params = {**params, "learning_rate": 0.05, "init_std": 0.1}
    assert _heldout_auc(_fit(synthetic, **params), synthetic) > 0.85


def test_user_and_item_features_beyond_ids(synthetic):
    """Side features on top of the ids (overlapping columns between items) still train."""
    U, I, users, items, test = synthetic  # noqa: E741
    rng = np.random.default_rng(8)
    genres = sp.csr_matrix((rng.random((I.shape[0], 5)) < 0.3).astype(float))
    I2 = sp.hstack([I, genres]).tocsr()
    U2 = sp.hstack([U, sp.csr_matrix((U.shape[0], 5))]).tocsr()
    one = _heldout_auc(_fit((U2, I2, users, items, test)), (U2, I2, users, items, test))
    assert one > 0.85
    # Two threads step the genres in their own copies (the hot columns), merged now and then.
    two = _heldout_auc(_fit((U2, I2, users, items, test), n_jobs=2),
                       (U2, I2, users, items, test))
    assert two > 0.85 and abs(one - two) < 0.03


# ------------------------------------------------------------------ 4. reproducibility
def test_reproducible_with_one_thread(synthetic):
    a = _fit(synthetic, n_epochs=3, random_state=5)
    b = _fit(synthetic, n_epochs=3, random_state=5)
    c = _fit(synthetic, n_epochs=3, random_state=6)
    assert np.array_equal(a.V_, b.V_) and np.array_equal(a.w_, b.w_)
    assert a.history_["train_loss"] == b.history_["train_loss"]
    assert not np.array_equal(a.V_, c.V_)
    h = _fit(synthetic, n_epochs=3, random_state=5, n_candidates=3, negative_sampling="popularity")
    h2 = _fit(synthetic, n_epochs=3, random_state=5, n_candidates=3,
              negative_sampling="popularity")
    assert np.array_equal(h.V_, h2.V_)


def test_two_threads_reach_a_similar_auc(synthetic):
    one = _heldout_auc(_fit(synthetic, n_jobs=1), synthetic)
    two = _heldout_auc(_fit(synthetic, n_jobs=2), synthetic)
    assert two > 0.85 and abs(one - two) < 0.03


# ------------------------------------------------------------------ 5. API, errors, state
def test_score_and_score_matrix_are_the_fm_output():
    rng = np.random.default_rng(9)
    U = _random_rows(6, 12, 0.4, seed=10)
    I = _random_rows(7, 12, 0.4, seed=11)  # noqa: E741 (shares columns with U)
    users, items = rng.integers(0, 6, 30), rng.integers(0, 7, 30)
    model = FMRanker(n_factors=3, n_epochs=2, init_std=0.3, dtype="float64",
                     random_state=0).fit(U, I, users, items)
    S = model.score_matrix(U, I)
    a, b = np.repeat(np.arange(6), 7), np.tile(np.arange(7), 6)
    expected = ref.predict_pairwise(U[a] + I[b], 0.0, model.w_, model.V_)
    np.testing.assert_allclose(S.ravel(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.score(U[a], I[b]), expected, rtol=1e-10, atol=1e-12)
    assert model.w0_ == 0.0 and model.n_features_in_ == 12
    assert set(model.history_) >= {"train_loss", "seconds", "n_skipped"}
    assert all(len(values) == 2 for values in model.history_.values())


def test_callbacks_see_each_epoch_and_can_stop(synthetic):
    seen_params = []

    def callback(est, epoch, logs):
        seen_params.append(est.V_.copy())
        logs["val_auc"] = _heldout_auc(est, synthetic)
        return epoch == 2

    model = _fit(synthetic, n_epochs=10)
    stopped = FMRanker(n_factors=16, n_epochs=10, random_state=0)
    U, I, users, items, test = synthetic  # noqa: E741
    stopped.fit(U, I, users[~test], items[~test], callbacks=[callback])
    assert stopped.n_epochs_ == 3 and len(seen_params) == 3
    assert np.array_equal(seen_params[-1], stopped.V_)
    assert not np.array_equal(seen_params[0], seen_params[1])
    assert len(stopped.history_["train_loss"]) == 3
    assert len(stopped.history_["val_auc"]) == 3  # the callback's key, every epoch
    assert model.n_epochs_ == 10


def _good_inputs():
    U, I = _one_hot(4, 5)  # noqa: E741
    return dict(U=U, I=I, users=np.array([0, 1, 2, 3]), items=np.array([0, 1, 2, 4]))


@pytest.mark.parametrize("change, error, match", [
    (dict(users=np.array([0, 1, 2, 4])), ValueError, r"users\[3\] = 4 is not a row of U"),
    (dict(items=np.array([0, 1, -1, 4])), ValueError, r"items\[2\] = -1"),
    (dict(users=np.array([0.0, 1, 2, 3])), TypeError, "integer row positions"),
    (dict(items=np.array([0, 1, 2])), ValueError, "same length"),
    (dict(users=np.array([], int), items=np.array([], int)), ValueError, "no positives"),
    (dict(I=sp.csr_matrix((5, 8))), ValueError, "same number of columns"),
    (dict(U=sp.csr_matrix((0, 9))), ValueError, "U is empty"),
    (dict(U=np.where(np.eye(4, 9) > 0, np.nan, 0.0)), ValueError, r"U contains NaN.*row 0"),
    (dict(I=sp.csr_matrix(([np.inf], ([3], [6])), shape=(5, 9))), ValueError,
     r"I contains NaN or infinity \(row 3\)"),
    (dict(seen=sp.csr_matrix((4, 4))), ValueError, r"seen must have shape"),
    (dict(users=np.zeros((2, 2), int)), ValueError, "users must be 1-D"),
])
def test_bad_inputs_raise_clear_errors(change, error, match):
    with pytest.raises(error, match=match):
        FMRanker(n_epochs=1).fit(**{**_good_inputs(), **change})


@pytest.mark.parametrize("params, error, match", [
    (dict(n_factors=0), ValueError, "n_factors must be >= 1"),
    (dict(n_epochs=2.5), TypeError, "n_epochs must be an integer"),
    (dict(learning_rate=0), ValueError, "learning_rate must be > 0"),
    (dict(lr_schedule="adam"), ValueError, "lr_schedule must be one of"),
    (dict(reg_linear=-1), ValueError, "reg_linear must be >= 0"),
    (dict(reg_factors=np.nan), ValueError, "reg_factors must be finite"),
    (dict(negative_sampling="hard"), ValueError, "negative_sampling must be one of"),
    (dict(n_candidates=0), ValueError, "n_candidates must be >= 1"),
    (dict(dtype="int8"), ValueError, "dtype must be"),
    (dict(n_jobs=0), ValueError, "n_jobs must not be 0"),
])
def test_bad_hyperparameters_raise(params, error, match):
    with pytest.raises(error, match=match):
        FMRanker(**params).fit(**_good_inputs())


def test_failed_fit_leaves_the_fitted_model_intact(synthetic):
    model = _fit(synthetic, n_epochs=2)
    before = {k: (val.copy() if isinstance(val, np.ndarray) else val)
              for k, val in model.__dict__.items() if k.endswith("_")}
    history = {key: list(values) for key, values in model.history_.items()}

    with pytest.raises(ValueError, match="not a row of U"):
        model.fit(**{**_good_inputs(), "users": np.array([0, 1, 2, 9])})

    def boom(est, epoch, logs):  # fails mid-training, after parameters were replaced
        raise RuntimeError("callback failed")

    U, I, users, items, test = synthetic  # noqa: E741
    with pytest.raises(RuntimeError, match="callback failed"):
        model.fit(U, I, users, items, callbacks=[boom])
    model.set_params(learning_rate=1e30, init_std=1e10)
    with pytest.raises(ValueError, match="diverged"):
        model.fit(U, I, users, items)
    assert {k for k in model.__dict__ if k.endswith("_")} == set(before)
    for key, val in before.items():
        if isinstance(val, np.ndarray):
            assert np.array_equal(model.__dict__[key], val), key
        elif key != "history_":
            assert model.__dict__[key] == val, key
    assert model.history_ == history


def test_warm_start_continues_from_the_fitted_parameters_and_adagrad_sums(synthetic):
    U, I, users, items, test = synthetic  # noqa: E741
    users, items = users[~test], items[~test]
    model = FMRanker(n_factors=8, n_epochs=3, random_state=0, warm_start=True)
    model.fit(U, I, users, items)
    w, V, acc = model.w_.copy(), model.V_.copy(), [a.copy() for a in model._accumulators]
    history = list(model.history_["train_loss"])
    model.fit(U, I, users, items)
    assert model.n_epochs_ == 6 and model.history_["train_loss"][:3] == history
    assert not np.array_equal(model.V_, V)
    assert np.all(model._accumulators[2] >= acc[2]) and model._accumulators[2].sum() > acc[2].sum()
    # continuing is reproducible with one thread
    again = FMRanker(n_factors=8, n_epochs=3, random_state=0, warm_start=True)
    again.fit(U, I, users, items)
    np.testing.assert_array_equal(again.V_, V)
    again.fit(U, I, users, items)
    np.testing.assert_array_equal(again.V_, model.V_)
    fresh = FMRanker(n_factors=8, n_epochs=3, random_state=0).fit(U, I, users, items)
    fresh.fit(U, I, users, items)  # warm_start=False: afresh, the same result again
    np.testing.assert_array_equal(fresh.V_, V)
    np.testing.assert_array_equal(fresh.w_, w)
    assert fresh.n_epochs_ == 3


@pytest.mark.parametrize("change, match", [
    ({"dtype": "float64"}, "dtype changed"),
    ({"n_factors": 4}, "n_factors changed"),
    ({"columns": 1}, "U has 321 features, but FMRanker is expecting 320"),
])
def test_warm_start_checks_what_it_continues(synthetic, change, match):
    U, I, users, items, test = synthetic  # noqa: E741
    model = FMRanker(n_factors=8, n_epochs=2, random_state=0, warm_start=True)
    model.fit(U, I, users, items)
    V = model.V_.copy()
    if change.pop("columns", None):
        U = sp.hstack([U, sp.csr_matrix((U.shape[0], 1))]).tocsr()
        I = sp.hstack([I, sp.csr_matrix((I.shape[0], 1))]).tocsr()  # noqa: E741
    model.set_params(**change)
    with pytest.raises(ValueError, match=match):
        model.fit(U, I, users, items)
    np.testing.assert_array_equal(model.V_, V)
    assert model.n_epochs_ == 2


def test_sklearn_params():
    from sklearn.base import clone

    model = FMRanker(8, n_candidates=3, negative_sampling="popularity")
    assert clone(model).get_params() == model.get_params()
    assert model.get_params()["n_factors"] == 8
    with pytest.raises(Exception, match="not fitted"):
        model.score_matrix(np.eye(2), np.eye(2))


def test_no_negative_to_sample_is_an_error_not_a_nan_loss():
    """Issue 15: on one item every triple was skipped and train_loss was NaN, silently."""
    import pandas as pd

    from fmrec import Recommender

    one_item = pd.DataFrame({"user_id": [1, 2, 3], "item_id": ["a", "a", "a"]})
    with pytest.raises(ValueError, match="no negatives to sample.*all 1 item"):
        Recommender(random_state=0).fit(one_item)
    # One user with an unseen item is enough: the others' positives are skipped, not all.
    two_items = pd.DataFrame({"user_id": [1, 2, 3], "item_id": ["a", "a", "b"]})
    loss = Recommender(random_state=0).fit(two_items).model_.history_["train_loss"]
    assert np.isfinite(loss).all()
