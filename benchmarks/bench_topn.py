"""Top-N lists from rating data, and fold-in of new users, on MovieLens 100K.

``blend``: the rating Recommender's ``target_weight`` (weight of the rating model's
standardized score against the FMRanker's in ``recommend``'s order) on a validation split
carved from a split's base file (10% of its rows, seed 0; relevant = validation rows rated
>= 4, training items excluded), for u1 and u2.

With ``--labels`` the target is ``liked`` (rating >= 4) and the model an
``FMClassifier(n_factors=16, n_epochs=20)``, on u1 only, scored on validation and on
u1.test.

``table``: on a split's test file (relevant = rated >= 4, training items excluded), NDCG@10
and precision@10 of popularity, the implicit-feedback ``Recommender()`` fitted on the same
rows' (user_id, item_id), the rating model's own order (``target_weight=1``) and the default
rating ``Recommender(target="rating")``; and the test RMSE of ``predict`` for both.

``foldin``: 100 users (seed 0) held out of u1.base + u1.test; each is folded in from their
first 5 interactions by timestamp (``recommend(..., history=)``) and scored on the rest of
their interactions rated >= 4, against popularity and the bias-only order (items by the
model's t_i alone, the user's 5 items left out). ``--seed 1`` draws validation users instead
(the seed-0 users left out of the data entirely): where ``foldin.RANKER_PRIOR`` was chosen.
Last, the implicit-feedback Recommender() trained on the 5 interactions with everyone
else's (no fold-in), for comparison.

    python benchmarks/bench_topn.py blend [--labels]
    python benchmarks/bench_topn.py table --split u1
    python benchmarks/bench_topn.py foldin [--seed 0] [--prior 1.0] [--implicit]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from fmrec import FMClassifier, Recommender
from fmrec.datasets import load_ml100k_split
from fmrec.metrics import ranking_metrics, rmse
from fmrec.recommend import foldin

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)


def relevant_of(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["rating"] >= 4].rename(columns={"user_id": "user", "item_id": "item"})


def popularity_lists(rec: Recommender, users, known: pd.DataFrame | None = None, n: int = 10):
    """The most popular training items, leaving out each user's training (or ``known``)
    items."""
    order = rec.items_[np.argsort(-rec.popularity_, kind="stable")]
    seen = (known if known is not None else pd.DataFrame(
        {"user_id": rec.users_[rec.seen_.nonzero()[0]],
         "item_id": rec.items_[rec.seen_.nonzero()[1]]}))
    mine = seen.groupby("user_id")["item_id"].agg(set)
    rows = []
    for u in users:
        skip = mine.get(u, set())
        top = [i for i in order[:n + len(skip)] if i not in skip][:n]
        rows += [(u, i, r + 1) for r, i in enumerate(top)]
    return pd.DataFrame(rows, columns=["user", "item", "rank"])


def metrics(recs: pd.DataFrame, relevant: pd.DataFrame) -> str:
    m = ranking_metrics(recs, relevant, k=10)
    return f"NDCG@10 {m['ndcg@10']:.4f}  precision@10 {m['precision@10']:.4f}"


def blend(args) -> None:
    kw = {"target": "rating"}
    if args.labels:
        kw = {"target": "liked", "model": FMClassifier(n_factors=16, n_epochs=20)}
    for split in ("u1",) if args.labels else ("u1", "u2"):
        base, test = load_ml100k_split(split)
        base, test = (f.assign(liked=(f["rating"] >= 4).astype(int)) for f in (base, test))
        val = np.random.default_rng(0).random(len(base)) < 0.1
        parts = [("validation", base[~val], base[val])]
        if args.labels:
            parts.append(("test", base, test))
        for part, train, valid in parts:
            relevant = relevant_of(valid)
            users = relevant["user"].unique()
            rec = Recommender(random_state=0, **kw).fit(train)
            for weight in WEIGHTS:
                rec.set_params(target_weight=weight)  # the order only; both are fitted
                print(f"{split} {part} {kw['target']}, target_weight={weight}: "
                      f"{metrics(rec.recommend(users, n=10), relevant)}", flush=True)


def table(args) -> None:
    train, test = load_ml100k_split(args.split)
    relevant = relevant_of(test)
    users = relevant["user"].unique()
    rating_only = Recommender(target="rating", target_weight=1.0, random_state=0).fit(train)
    default = Recommender(target="rating", random_state=0).fit(train)
    implicit = Recommender(random_state=0).fit(train[["user_id", "item_id"]])
    print(f"{args.split}.test popularity: {metrics(popularity_lists(default, users), relevant)}")
    for name, rec in (("implicit-feedback Recommender()", implicit),
                      ("rating model alone (target_weight=1)", rating_only),
                      ("Recommender(target='rating') default", default)):
        print(f"{args.split}.test {name}: {metrics(rec.recommend(users, n=10), relevant)}")
    for name, rec in (("target_weight=1", rating_only), ("default", default)):
        print(f"{args.split}.test RMSE of predict, {name}: "
              f"{rmse(test['rating'], rec.predict(test)):.6f}")


def foldin_protocol(seed: int):
    """(train, held users, their first 5 interactions, relevant) of the fold-in protocol."""
    base, test = load_ml100k_split("u1")
    ml = pd.concat([base, test], ignore_index=True)
    held = np.random.default_rng(0).choice(ml["user_id"].unique(), 100, replace=False)
    if seed != 0:  # validation users; the test users are not in the data at all
        ml = ml[~ml["user_id"].isin(held)]
        held = np.random.default_rng(seed).choice(ml["user_id"].unique(), 100, replace=False)
    held_out = ml[ml["user_id"].isin(held)].sort_values(["user_id", "timestamp"],
                                                        kind="stable")
    first = held_out.groupby("user_id").head(5)
    relevant = relevant_of(held_out.drop(first.index))
    return ml[~ml["user_id"].isin(held)], held, first, relevant


def bias_only_lists(rec: Recommender, users, first: pd.DataFrame, n: int = 10):
    """Items by the recommend score's item part t_i alone (no user vector), each user's
    history left out: what the model knows before it knows anything of the user."""
    terms = rec._terms(users[:1], rec.items_, None, np.zeros(1, bool), None)
    order = rec.items_[np.argsort(-terms[3], kind="stable")]
    known = first.groupby("user_id")["item_id"].agg(set)
    rows = []
    for u in users:
        top = [i for i in order[:n + 5] if i not in known.get(u, set())][:n]
        rows += [(u, i, r + 1) for r, i in enumerate(top)]
    return pd.DataFrame(rows, columns=["user", "item", "rank"])


def fold(args) -> None:
    foldin.RANKER_PRIOR = args.prior
    train, held, first, relevant = foldin_protocol(args.seed)
    for name, rec, hist in (
            ("implicit-feedback Recommender()", Recommender(random_state=0),
             first[["user_id", "item_id"]]),
            ("Recommender(target='rating')", Recommender(target="rating", random_state=0),
             first[["user_id", "item_id", "rating"]]),
            *([("Recommender(implicit='users')", Recommender(implicit="users", random_state=0),
                first[["user_id", "item_id"]])] if args.implicit else [])):
        rec.fit(train if rec.target else train[["user_id", "item_id"]])
        out = rec.recommend(held, n=10, history=hist)
        print(f"seed {args.seed}, prior {args.prior}, {name}: fold-in {metrics(out, relevant)}; "
              f"bias-only {metrics(bias_only_lists(rec, held, first), relevant)}", flush=True)
    print(f"seed {args.seed}: popularity "
          f"{metrics(popularity_lists(rec, held, first), relevant)}")
    # No fold-in: the 5 interactions trained on with everyone else's.
    trained = Recommender(random_state=0).fit(pd.concat([train, first])[["user_id", "item_id"]])
    print(f"seed {args.seed}: Recommender() trained with the 5 interactions "
          f"{metrics(trained.recommend(held, n=10), relevant)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["blend", "table", "foldin"])
    parser.add_argument("--split", default="u1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior", type=float, default=foldin.RANKER_PRIOR)
    parser.add_argument("--labels", action="store_true")
    parser.add_argument("--implicit", action="store_true",
                        help="foldin: also the implicit-feedback Recommender with implicit "
                             "user features (its BPR fit takes about a minute)")
    args = parser.parse_args()
    {"blend": blend, "table": table, "foldin": fold}[args.what](args)


if __name__ == "__main__":
    main()
