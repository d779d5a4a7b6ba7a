"""FMRanker (BPR) on MovieLens 100K as implicit feedback, against a popularity baseline and,
when importable, implicit's BPR and ALS.

Positives are ratings >= 4. ``fmrec.split.train_test_split(method="per_user")`` holds out 20%
of each user's positives as test (seed 0) and, the same way, 20% of the rest as validation.
Hyperparameters are picked on validation (a small grid, the number of epochs by a per-epoch
callback), then the model is refitted on train + validation and scored on test. U and I are
one-hot ids (I's columns after U's). NDCG@10 and precision@10 rank all items a user has no
training positive for.

    python benchmarks/bench_ranker.py [--quick] [--implicit-path /tmp/implicit_pkg]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmrec import FMClassifier, Recommender
from fmrec.datasets import load_movielens
from fmrec.metrics import ranking_metrics
from fmrec.models.ranker import FMRanker
from fmrec.recommend.scoring import top_n
from fmrec.split import train_test_split

DATA = Path(os.environ.get("FMREC_DATA_HOME", Path(__file__).resolve().parents[2] / "shared"
                           / "datasets")) / "ml-100k" / "u.data"


def load(frames: bool = False):
    """The split (codes as ``user``/``item``); with ``frames`` also the MovieLens tables."""
    df = pd.read_csv(DATA, sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    df["user"] = df["user_id"].astype("category").cat.codes.astype(np.int64)
    df["item"] = df["item_id"].astype("category").cat.codes.astype(np.int64)
    n_users, n_items = int(df["user"].max()) + 1, int(df["item"].max()) + 1
    pos = df[df["rating"] >= 4].reset_index(drop=True)
    train_full, test = train_test_split(pos, method="per_user", test_size=0.2, random_state=0)
    train, val = train_test_split(train_full, method="per_user", test_size=0.2, random_state=0)
    if frames:
        return load_movielens("100k", DATA.parent.parent, download=False), train, val, \
            train_full, test
    return n_users, n_items, train, val, train_full, test


def one_hot(n_users, n_items):
    U = sp.hstack([sp.eye(n_users), sp.csr_matrix((n_users, n_items))]).tocsr()
    I = sp.hstack([sp.csr_matrix((n_items, n_users)), sp.eye(n_items)]).tocsr()  # noqa: E741
    return U, I


def pattern(frame, n_users, n_items):
    return sp.csr_matrix((np.ones(len(frame)), (frame["user"], frame["item"])),
                         shape=(n_users, n_items))


def evaluate(S, train, heldout, n_users, n_items, k=10):
    """NDCG@k and precision@k of the top-k of score matrix S, training positives excluded."""
    users = np.unique(heldout["user"])
    exclude = pattern(train, n_users, n_items)[users]
    items, _ = top_n(S[users], np.zeros(len(users)), np.eye(n_items), np.zeros(n_items), k,
                     exclude=exclude)
    rec = pd.DataFrame({"user": np.repeat(users, k), "item": items.ravel(),
                        "rank": np.tile(np.arange(1, k + 1), len(users))})
    rec = rec[rec["item"] >= 0]
    m = ranking_metrics(rec, heldout[["user", "item"]], k=k)
    return m[f"ndcg@{k}"], m[f"precision@{k}"]


def fit_ranker(params, n_epochs, U, I, train, heldout, n_users, n_items, every=5):  # noqa: E741
    """Fit, scoring ``heldout`` every ``every`` epochs; returns (model, [(epoch, ndcg, p)])."""
    curve = []

    def callback(est, epoch, logs):
        if (epoch + 1) % every == 0:
            ndcg, prec = evaluate(est.score_matrix(U, I), train, heldout, n_users, n_items)
            logs["val_ndcg@10"] = ndcg
            curve.append((epoch + 1, ndcg, prec))

    model = FMRanker(n_epochs=n_epochs, **params)
    model.fit(U, I, train["user"].to_numpy(), train["item"].to_numpy(), callbacks=[callback])
    return model, curve


def epoch_seconds(model):
    return float(np.median(model.history_["seconds"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a smaller grid")
    ap.add_argument("--implicit-path", default="/tmp/implicit_pkg")
    ap.add_argument("--max-epochs", type=int, default=100)
    ap.add_argument("--no-fm", action="store_true", help="only the baselines")
    ap.add_argument("--scaling", action="store_true",
                    help="only the 1 vs 2 thread epoch times on a larger synthetic problem")
    ap.add_argument("--only-recommender", action="store_true",
                    help="popularity and the Recommender rows only (log loss with sampled "
                    "negatives; BPR with side features)")
    args = ap.parse_args()
    if args.scaling:
        thread_scaling()
        return

    n_users, n_items, train, val, train_full, test = load()
    U, I = one_hot(n_users, n_items)  # noqa: E741
    print(f"MovieLens 100K, ratings >= 4: {len(train)} train / {len(val)} validation / "
          f"{len(test)} test positives; {n_users} users, {n_items} items")

    pop_val = np.bincount(train["item"], minlength=n_items).astype(float)
    pop_test = np.bincount(train_full["item"], minlength=n_items).astype(float)
    results = {}
    v = evaluate(np.tile(pop_val, (n_users, 1)), train, val, n_users, n_items)
    t = evaluate(np.tile(pop_test, (n_users, 1)), train_full, test, n_users, n_items)
    results["popularity"] = dict(val=v, test=t, params="-", epochs="-", sec="-")

    grid = {
        "n_factors": [32, 64],
        "learning_rate": [0.02, 0.05, 0.1],
        "reg": [0.001, 0.01, 0.05],
    }
    if args.quick:
        grid = {"n_factors": [32], "learning_rate": [0.05, 0.1], "reg": [0.001, 0.01]}
    variants = {} if args.no_fm or args.only_recommender else {
        "BPR uniform, n_candidates=1": dict(negative_sampling="uniform", n_candidates=1),
        "BPR popularity, n_candidates=1": dict(negative_sampling="popularity", n_candidates=1),
        "BPR uniform, n_candidates=5": dict(negative_sampling="uniform", n_candidates=5),
        "BPR popularity, n_candidates=5": dict(negative_sampling="popularity", n_candidates=5),
    }
    print(f"grid per variant: {grid}, epochs 5..{args.max_epochs} in steps of 5 "
          "(validation NDCG@10), init_std=0.01, AdaGrad, 1 thread")
    for name, variant in variants.items():
        best = None
        start = time.perf_counter()
        for f, lr, reg in itertools.product(*grid.values()):
            params = dict(n_factors=f, learning_rate=lr, reg_linear=reg, reg_factors=reg,
                          random_state=0, **variant)
            _, curve = fit_ranker(params, args.max_epochs, U, I, train, val, n_users, n_items)
            for epoch, ndcg, prec in curve:
                if best is None or ndcg > best[0]:
                    best = (ndcg, prec, params, epoch)
        search = time.perf_counter() - start
        ndcg_v, prec_v, params, epochs = best
        final, _ = fit_ranker(params, epochs, U, I, train_full, test, n_users, n_items,
                              every=epochs)
        t = evaluate(final.score_matrix(U, I), train_full, test, n_users, n_items)
        # Other seeds of the same configuration: how much of a difference is noise?
        seeds = [evaluate(fit_ranker({**params, "random_state": s}, epochs, U, I, train_full,
                                     test, n_users, n_items, every=epochs)[0]
                          .score_matrix(U, I), train_full, test, n_users, n_items)
                 for s in (1, 2)]
        two = fit_ranker({**params, "n_jobs": 2}, 3, U, I, train_full, test, n_users, n_items,
                         every=100)[0]
        shown = {key: params[key] for key in ("n_factors", "learning_rate", "reg_factors")}
        results[name] = dict(val=(ndcg_v, prec_v), test=t, params=shown, epochs=epochs,
                             sec=f"{epoch_seconds(final) * 1e3:.1f} ms "
                                 f"(2 threads {epoch_seconds(two) * 1e3:.1f} ms)",
                             seeds=[t, *seeds])
        print(f"  {name}: search {search:.0f} s, best {shown} at {epochs} epochs", flush=True)

    if not args.no_fm:
        recommender_results(results, load(frames=True), quick=args.quick)
    if not args.only_recommender:
        implicit_results(args.implicit_path, results, n_users, n_items, train, val,
                         train_full, test)

    print()
    print(f"{'model':34s} {'val NDCG@10':>11s} {'test NDCG@10':>12s} {'test P@10':>9s}  "
          "epochs  time/epoch  chosen")
    for name, r in results.items():
        print(f"{name:34s} {r['val'][0]:11.4f} {r['test'][0]:12.4f} {r['test'][1]:9.4f}  "
              f"{r['epochs']!s:>6s}  {r['sec']!s:>10s}  {r['params']}")
        if "seeds" in r:
            nd = [s[0] for s in r["seeds"]]
            print(f"{'':34s} test NDCG@10 over seeds 0,1,2: {np.mean(nd):.4f} ± "
                  f"{np.std(nd):.4f}")


def recommender_results(results, split, quick=False):
    """The same split through ``fmrec.Recommender`` (original ids; side features from the
    MovieLens tables): an FMClassifier on positives against sampled negatives (log loss),
    and FMRanker (BPR, hard negatives) with the users' age, gender, occupation and the
    items' genres. Each picks its settings on validation NDCG@10, then refits on train +
    validation."""
    data, train, val, train_full, test = split
    side = {"user_features": data.users[["user_id", "age", "gender", "occupation"]],
            "item_features": data.items[["item_id", "genres"]]}

    def score(rec, heldout):
        truth = heldout[["user_id", "item_id"]].rename(columns={"user_id": "user",
                                                               "item_id": "item"})
        recs = rec.recommend(truth["user"].unique(), n=10, unknown="popular")
        m = ranking_metrics(recs, truth[["user", "item"]], k=10)
        return m["ndcg@10"], m["precision@10"]

    specs = {
        "fmrec log loss, 4 sampled negatives": (
            {}, lambda p: FMClassifier(n_factors=p[0], reg_factors=p[1], n_epochs=p[2],
                                       random_state=0, n_jobs=1),
            list(itertools.product([16, 32], [0.5, 2.0], [10, 20, 40]))),
        "fmrec BPR + side features": (
            side, lambda p: FMRanker(n_factors=p[0], reg_linear=p[1], reg_factors=p[1],
                                     n_epochs=p[2], learning_rate=0.05, random_state=0),
            list(itertools.product([32, 64], [0.01, 0.05], [30, 65]))),
    }
    for name, (features, make, grid) in specs.items():
        if quick:
            grid = grid[:2]
        cols = ["user_id", "item_id"]
        best = max(((score(Recommender(model=make(p), random_state=0, **features)
                           .fit(train[cols]), val), p) for p in grid),
                   key=lambda r: r[0][0])
        start = time.perf_counter()
        final = Recommender(model=make(best[1]), random_state=0, **features).fit(
            train_full[cols])
        seconds = time.perf_counter() - start
        results[name] = dict(val=best[0], test=score(final, test), params=best[1],
                             epochs=best[1][2], sec=f"fit {seconds:.1f} s")
        print(f"  {name}: best (k, reg, epochs) = {best[1]}", flush=True)


def thread_scaling(n_users=50_000, n_items=20_000, n_pos=1_000_000, k=32):
    """Hogwild epoch times on one-hot ids with Zipf-distributed item popularity."""
    rng = np.random.default_rng(0)
    U, I = one_hot(n_users, n_items)  # noqa: E741
    users, items = rng.integers(0, n_users, n_pos), rng.zipf(1.3, n_pos) % n_items
    print(f"{n_pos} positives, {n_users} users, {n_items} items, k={k}")
    for params in (dict(n_jobs=1), dict(n_jobs=2), dict(n_jobs=1, lr_schedule="constant"),
                   dict(n_jobs=1, n_candidates=5)):
        model = FMRanker(k, n_epochs=3, random_state=0, **params).fit(U, I, users, items)
        print(f"  {params}: {epoch_seconds(model):.3f} s per epoch")


def implicit_results(path, results, n_users, n_items, train, val, train_full, test):
    if path:
        sys.path.insert(0, path)
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError as exc:
        print(f"implicit not importable ({exc}); skipped")
        return

    def run(cls, kw, train_part, heldout):
        model = cls(random_state=0, num_threads=1, **kw)
        start = time.perf_counter()
        model.fit(pattern(train_part, n_users, n_items).tocsr(), show_progress=False)
        sec = (time.perf_counter() - start) / model.iterations
        uf = np.asarray(model.user_factors)
        itf = np.asarray(model.item_factors)
        return evaluate(uf @ itf.T, train_part, heldout, n_users, n_items), sec

    specs = {
        "implicit BPR": (BayesianPersonalizedRanking,
                         dict(factors=[32, 64], learning_rate=[0.001, 0.003, 0.01, 0.03],
                              regularization=[0.001, 0.01],
                              iterations=[50, 100, 200, 400])),
        "implicit ALS": (AlternatingLeastSquares,
                         dict(factors=[32, 64], regularization=[1.0, 5.0, 20.0, 50.0, 100.0],
                              alpha=[1.0, 3.0, 10.0], iterations=[15])),
    }
    for name, (cls, space) in specs.items():
        best = None
        for combo in itertools.product(*space.values()):
            kw = dict(zip(space, combo, strict=True))
            (ndcg, prec), _ = run(cls, kw, train, val)
            if best is None or ndcg > best[0]:
                best = (ndcg, prec, kw)
        (t, sec) = run(cls, best[2], train_full, test)
        results[name] = dict(val=best[:2], test=t, params=best[2], epochs=best[2]["iterations"],
                             sec=f"{sec * 1e3:.1f} ms")
        print(f"  {name}: best {best[2]}", flush=True)


if __name__ == "__main__":
    main()
