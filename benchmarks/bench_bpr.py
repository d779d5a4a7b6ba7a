"""FMRanker's BPR epoch against implicit's BPR in the same run, and NDCG@10 against training
seconds for both (issue 16).

Two data sets, both one-hot user and item ids (FMRanker's fast path):

* MovieLens 100K (``FMREC_DATA_HOME``, read by ``fmrec.datasets.load_movielens``): ratings
  >= 4 are positives, 20% of each user's held out for test (``fmrec.split``, seed 0).
* A synthetic set of ``--size`` interactions (default 10M) in the spirit of
  ``shared/bench/gen_synthetic.py``: Zipf item popularity (p ∝ rank^-0.8); each user belongs to
  one of 50 taste groups and takes 80% of its items from its group's Zipf list, the rest from
  the global one; user activity ∝ rank^-0.5. One positive of each of ``--eval-users`` users
  is held out.

Side features: FMRanker alone (implicit takes ids only), its epoch on one thread, then on
two threads with and without per-thread copies of the columns most triples step (the
kernel's hot columns), taking turns.

Timing: one thread each (``n_jobs=1``, ``num_threads=1``). Each repeat fits a fresh model of
each library back to back (the order alternating), and an epoch is the fit's wall time over
its epochs: what a user waits for, setup included. The ratio fmrec / implicit is taken within
a repeat; the median and range over the repeats are printed (``--repeats`` on ml-100k,
``--synthetic-repeats`` on the synthetic set, where one 10M epoch takes seconds). FMRanker's
kernel-only epoch (``history_["seconds"]``) is printed beside it. The SIMD variant of the
BPR kernel's factor loops is printed too (``FMREC_NO_AVX=1`` forces SSE2).

Curves: NDCG@10 on the held-out positives of fresh fits of increasing numbers of epochs,
against each fit's wall time (evaluation excluded), saved as the PNG ``--plot``.

    python benchmarks/bench_bpr.py [--size 10000000] [--repeats 5] [--synthetic-repeats 3]
                                   [--plot bench_bpr.png] [--skip-ml100k] [--skip-synthetic]

About 4 minutes on 2 cores at the default size (most of it the synthetic set).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from fmrec.datasets import load_movielens
from fmrec.models.ranker import FMRanker
from fmrec.split import train_test_split

K = 64  # FMRanker's default rank; implicit gets the same number of factors


# ------------------------------------------------------------------ data
def _movielens_split():
    """MovieLens 100K and its ratings >= 4 split per user, 20% held out (seed 0)."""
    home = os.environ.get("FMREC_DATA_HOME",
                          Path(__file__).resolve().parents[2] / "shared" / "datasets")
    ml = load_movielens("100k", home, download=False)
    df = ml.ratings.assign(
        user=ml.ratings["user_id"].astype("category").cat.codes.astype(np.int64),
        item=ml.ratings["item_id"].astype("category").cat.codes.astype(np.int64))
    pos = df[df["rating"] >= 4].reset_index(drop=True)
    train, test = train_test_split(pos, method="per_user", test_size=0.2, random_state=0)
    return ml, df, train, test


def ml100k():
    """(train pairs, test pairs, n_users, n_items) of MovieLens 100K as implicit feedback."""
    _, df, train, test = _movielens_split()
    n_users, n_items = int(df["user"].max()) + 1, int(df["item"].max()) + 1
    return ((train["user"].to_numpy(), train["item"].to_numpy()),
            (test["user"].to_numpy(), test["item"].to_numpy()), n_users, n_items)


def ml100k_features():
    """(U, I, users, items) of the same positives with the users' age, gender, occupation and
    zip code and the items' genres and dates beside the ids, as ``Recommender(target=None,
    user_features=..., item_features=...)`` encodes them: FMRanker's general path."""
    from fmrec.recommend.dataset import InteractionDataset
    ml, _, train, _ = _movielens_split()
    items = ml.items.drop(columns=["title"], errors="ignore")  # identifies rows: not a feature
    ds = InteractionDataset(user_features=ml.users, item_features=items).fit(train)
    return ds.ranking_data(train)[:4]


def synthetic(size, n_eval, seed=0, n_groups=50):
    """(train pairs, test pairs, n_users, n_items): ``size`` distinct (user, item) pairs."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(size // 50, 100), max(size // 200, 50)
    group_of_user = rng.integers(0, n_groups, n_users)
    p = 1.0 / np.arange(1, n_items + 1) ** 0.8
    cdf = np.cumsum(p / p.sum())
    a = 1.0 / np.arange(1, n_users + 1) ** 0.5  # user activity, milder skew
    ucdf = np.cumsum(a / a.sum())
    # Each group ranks the items by its own permutation of the popularity list.
    perms = np.stack([rng.permutation(n_items) for _ in range(n_groups)])
    pairs = np.empty(0, np.int64)
    while len(pairs) < size:  # repeated pairs are dropped: draw until enough are distinct
        draw = int((size - len(pairs)) * 1.5) + 1000
        users = np.minimum(np.searchsorted(ucdf, rng.random(draw)), n_users - 1)
        ranks = np.minimum(np.searchsorted(cdf, rng.random(draw)), n_items - 1)
        items = np.where(rng.random(draw) < 0.8, perms[group_of_user[users], ranks], ranks)
        pairs = np.unique(np.concatenate([pairs, users.astype(np.int64) * n_items + items]))
    pairs = rng.permutation(pairs)[:size]
    users, items = pairs // n_items, pairs % n_items
    # Hold out one positive of n_eval users that have at least 3.
    counts = np.bincount(users, minlength=n_users)
    eligible = np.flatnonzero(counts >= 3)
    chosen = rng.choice(eligible, size=min(n_eval, len(eligible)), replace=False)
    rows = np.flatnonzero(np.isin(users, chosen))
    test_rows = rows[np.unique(users[rows], return_index=True)[1]]
    keep = np.ones(len(users), bool)
    keep[test_rows] = False
    return ((users[keep], items[keep]), (users[test_rows], items[test_rows]), n_users, n_items)


def one_hot(n_users, n_items):
    U = sp.hstack([sp.eye(n_users, format="csr"), sp.csr_matrix((n_users, n_items))]).tocsr()
    I = sp.hstack([sp.csr_matrix((n_items, n_users)), sp.eye(n_items, format="csr")]).tocsr()  # noqa: E741
    return U, I


def pattern(pairs, n_users, n_items):
    M = sp.csr_matrix((np.ones(len(pairs[0]), np.float32), pairs), shape=(n_users, n_items))
    M.sum_duplicates()
    M.data[:] = 1
    return M


# ------------------------------------------------------------------ metric
def ndcg_at_10(score_rows, train_m, test_m, users, chunk=512):
    """Mean NDCG@10 over ``users`` of the items ranked by ``score_rows(user_block)`` (dense
    scores), the user's training items excluded."""
    total = 0.0
    discounts = 1.0 / np.log2(np.arange(2, 12))
    for start in range(0, len(users), chunk):
        block = users[start:start + chunk]
        S = np.asarray(score_rows(block), dtype=np.float64)
        seen = train_m[block]
        S[np.repeat(np.arange(len(block)), np.diff(seen.indptr)), seen.indices] = -np.inf
        top = np.argpartition(-S, 10, axis=1)[:, :10]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(S, top, 1), 1), 1)
        rel = np.asarray(test_m[block].toarray(), bool)
        hits = np.take_along_axis(rel, top, 1)
        n_rel = np.minimum(rel.sum(1), 10)
        idcg = np.cumsum(discounts)[np.maximum(n_rel - 1, 0)]
        total += float(((hits * discounts).sum(1) / idcg).sum())
    return total / len(users)


# ------------------------------------------------------------------ the two libraries
def fmrec_model(epochs, **params):
    return FMRanker(K, n_epochs=epochs, random_state=0, n_jobs=1, **params)


def implicit_model(epochs, **params):
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    return BayesianPersonalizedRanking(factors=K, iterations=epochs, random_state=0,
                                       num_threads=1, **params)


def fit_fmrec(model, U, I, train):  # noqa: E741
    start = time.perf_counter()
    model.fit(U, I, train[0], train[1])
    return time.perf_counter() - start


def fit_implicit(model, X):
    start = time.perf_counter()
    model.fit(X, show_progress=False)
    return time.perf_counter() - start


def epoch_ratios(name, data, repeats, epochs, fm_params):
    """Interleaved fresh fits; prints per-epoch times and the fmrec / implicit ratio."""
    train, _, n_users, n_items = data
    U, I = one_hot(n_users, n_items)  # noqa: E741
    X = pattern(train, n_users, n_items)
    fm, imp, kern = [], [], []
    models = {}
    for rep in range(repeats):
        runs = [("fm", None), ("imp", None)]
        if rep % 2:
            runs.reverse()
        for which, _ in runs:
            if which == "fm":
                model = fmrec_model(epochs, **fm_params)
                fm.append(fit_fmrec(model, U, I, train) / epochs)
                kern.append(float(np.median(model.history_["seconds"])))
                models["fm"] = model
            else:
                models["imp"] = implicit_model(epochs)
                imp.append(fit_implicit(models["imp"], X) / epochs)
    fm, imp, kern = np.array(fm), np.array(imp), np.array(kern)
    ratio = fm / imp
    label = ", ".join(f"{k}={v}" for k, v in fm_params.items()) or "defaults"
    print(f"  {name}: FMRanker({label}) {np.median(fm) * 1e3:8.1f} ms/epoch "
          f"(kernel {np.median(kern) * 1e3:.1f} ms), implicit BPR {np.median(imp) * 1e3:8.1f} "
          f"ms/epoch; ratio fmrec/implicit median {np.median(ratio):.2f} "
          f"[{ratio.min():.2f}, {ratio.max():.2f}] over {repeats} repeats", flush=True)
    return models, float(np.median(fm)) * epochs, float(np.median(imp)) * epochs


def features_epoch(repeats, epochs=5):
    """FMRanker's epoch with side features (no peer here: implicit takes ids only)."""
    U, I, users, items = ml100k_features()  # noqa: E741
    fit, kern = [], []
    for _ in range(repeats):
        model = fmrec_model(epochs)
        fit.append(fit_fmrec(model, U, I, (users, items)) / epochs)
        kern.append(float(np.median(model.history_["seconds"])))
    print(f"  ml-100k + side features ({U.nnz / U.shape[0]:.1f} + {I.nnz / I.shape[0]:.1f} "
          f"non-zeros per user + item row, general path): FMRanker(defaults) "
          f"{np.median(fit) * 1e3:.1f} ms/epoch (kernel {np.median(kern) * 1e3:.1f} ms), median "
          f"of {repeats}", flush=True)


def features_threads(repeats, epochs=5):
    """The side-features epoch on one and two threads, the two-thread one also without the
    per-thread copies of the hot columns (``HOT_MAX_COLUMNS = 0``), taking turns."""
    import fmrec.solvers.bpr as solver
    U, I, users, items = ml100k_features()  # noqa: E741
    cap = solver.HOT_MAX_COLUMNS
    times = {"1 thread": [], "2 threads, shared": [], "2 threads, hot copies": []}
    for _ in range(repeats):
        for label, n_jobs, hot_cap in [("1 thread", 1, cap), ("2 threads, shared", 2, 0),
                                       ("2 threads, hot copies", 2, cap)]:
            solver.HOT_MAX_COLUMNS = hot_cap
            try:
                model = FMRanker(K, n_epochs=epochs, random_state=0, n_jobs=n_jobs)
                model.fit(U, I, users, items)
            finally:
                solver.HOT_MAX_COLUMNS = cap
            times[label].append(float(np.median(model.history_["seconds"])))
    one = np.array(times["1 thread"])
    print(f"  ml-100k + side features, kernel epoch on two threads ({repeats} rounds taking "
          "turns; speed-up over one thread: median [min, max]):", flush=True)
    for label, t in times.items():
        gain = one / np.array(t)
        print(f"    {label:22s} {np.median(t) * 1e3:7.1f} ms  {np.median(gain):.2f}x "
              f"[{gain.min():.2f}, {gain.max():.2f}]", flush=True)


def fm_point(model, seconds, epochs, data, eval_users):
    train, test, n_users, n_items = data
    V, w = model.V_.astype(np.float64), model.w_.astype(np.float64)
    Vu, Vi, wi = V[:n_users], V[n_users:], w[n_users:]
    return (seconds, ndcg_at_10(lambda b: Vu[b] @ Vi.T + wi, pattern(train, n_users, n_items),
                                pattern(test, n_users, n_items), eval_users), epochs)


def implicit_point(model, seconds, epochs, data, eval_users):
    train, test, n_users, n_items = data
    uf, itf = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return (seconds, ndcg_at_10(lambda b: uf[b] @ itf.T, pattern(train, n_users, n_items),
                                pattern(test, n_users, n_items), eval_users), epochs)


def curves(data, eval_users, fm_epochs, implicit_epochs, implicit_lrs, fm_variants=None,
           known=None):
    """{label: [(seconds, ndcg, epochs)]} for FMRanker and implicit: a fresh fit per point (a
    warm restart would replay the seeded sampler) and its wall time. ``known`` holds points
    already measured (label -> list), e.g. from the timed fits."""
    train, _, n_users, n_items = data
    U, I = one_hot(n_users, n_items)  # noqa: E741
    X = pattern(train, n_users, n_items)
    if fm_variants is None:
        fm_variants = (("fmrec FMRanker() [5 candidates]", {}),
                       ("fmrec FMRanker(n_candidates=1)", {"n_candidates": 1}))
    out = {label: list(points) for label, points in (known or {}).items()}
    for label, params in fm_variants:
        for n in fm_epochs:
            model = fmrec_model(n, **params)
            spent = fit_fmrec(model, U, I, train)
            out.setdefault(label, []).append(fm_point(model, spent, n, data, eval_users))
    for lr in implicit_lrs:
        label = f"implicit BPR (learning_rate={lr})"
        for n in implicit_epochs:
            model = implicit_model(n, learning_rate=lr)
            spent = fit_implicit(model, X)
            out.setdefault(label, []).append(implicit_point(model, spent, n, data, eval_users))
    for label, points in out.items():
        points.sort()
        best = max(points, key=lambda p: p[1])
        print(f"    {label:40s} " + "  ".join(f"{n}:{nd:.4f}@{t:.2f}s" for t, nd, n in points)
              + f"  (epochs:NDCG@10@fit seconds; best {best[1]:.4f})", flush=True)
    return out


def plot(all_curves, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(all_curves), figsize=(6 * len(all_curves), 4.2),
                             squeeze=False)
    for ax, (title, cs) in zip(axes[0], all_curves.items(), strict=True):
        for label, points in cs.items():
            x, y, _ = zip(*points, strict=True)
            ax.plot(x, y, marker="o", ms=3, label=label)
        ax.set_xlabel("training seconds (one thread, fit wall time)")
        ax.set_ylabel("test NDCG@10")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot saved to {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=10_000_000, help="synthetic interactions")
    ap.add_argument("--eval-users", type=int, default=3000, help="synthetic held-out users")
    ap.add_argument("--repeats", type=int, default=5, help="timing repeats on ml-100k")
    ap.add_argument("--synthetic-repeats", type=int, default=3,
                    help="timing repeats on the synthetic set (3 keep 10M under 5 minutes)")
    ap.add_argument("--plot", default="bench_bpr.png")
    ap.add_argument("--skip-ml100k", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    args = ap.parse_args()
    all_curves = {}
    from fmrec._kernels.bpr import simd_in_use
    print(f"FMRanker's factor loops: {simd_in_use()}")
    with threadpool_limits(1):  # BLAS in the evaluations only; both fits run one thread
        if not args.skip_ml100k:
            data = ml100k()
            print(f"MovieLens 100K: {len(data[0][0])} train / {len(data[1][0])} test positives, "
                  f"{data[2]} users, {data[3]} items; k={K}, one thread")
            epoch_ratios("ml-100k", data, args.repeats, 10, {})
            epoch_ratios("ml-100k", data, args.repeats, 10, {"n_candidates": 1})
            epoch_ratios("ml-100k", data, args.repeats, 10,
                         {"n_candidates": 1, "lr_schedule": "constant"})
            # Negatives drawn by popularity, as implicit draws its own.
            epoch_ratios("ml-100k", data, args.repeats, 10, {"negative_sampling": "popularity"})
            epoch_ratios("ml-100k", data, args.repeats, 10,
                         {"n_candidates": 1, "lr_schedule": "constant",
                          "negative_sampling": "popularity"})
            features_epoch(args.repeats)
            features_threads(args.repeats)
            print("  NDCG@10 against training seconds:")
            users = np.unique(data[1][0])
            all_curves["MovieLens 100K"] = curves(
                data, users, [1, 2, 4, 8, 15, 30, 60], [5, 10, 25, 50, 100, 200],
                [0.003, 0.01, 0.05])
        if not args.skip_synthetic:
            start = time.perf_counter()
            data = synthetic(args.size, args.eval_users)
            print(f"synthetic: {len(data[0][0])} train / {len(data[1][0])} test positives, "
                  f"{data[2]} users, {data[3]} items (made in {time.perf_counter() - start:.0f} "
                  f"s); k={K}, one thread")
            users = np.unique(data[1][0])
            models, fm_s, imp_s = epoch_ratios("synthetic", data, args.synthetic_repeats, 1, {})
            known = {"fmrec FMRanker() [5 candidates]":
                     [fm_point(models["fm"], fm_s, 1, data, users)],
                     "implicit BPR (learning_rate=0.01)":
                     [implicit_point(models["imp"], imp_s, 1, data, users)]}
            if args.size <= 2_000_000:
                epoch_ratios("synthetic", data, args.synthetic_repeats, 1, {"n_candidates": 1})
            print("  NDCG@10 against training seconds:")
            all_curves[f"synthetic, {len(data[0][0]) / 1e6:.1f}M positives"] = curves(
                data, users, [2], [3], [0.01],
                fm_variants=(("fmrec FMRanker() [5 candidates]", {}),), known=known)
    if all_curves:
        plot(all_curves, args.plot)


if __name__ == "__main__":
    main()
