"""Does ``fmrec.tune`` never hurt? Untuned defaults against tuned-and-refitted models on
MovieLens 100K, for three workflows and several trial budgets.

Run by hand (not in CI; tens of minutes on one core):

    FMREC_DATA_HOME=/path/to/datasets python benchmarks/bench_tune.py --trials 10
    FMREC_DATA_HOME=/path/to/datasets python benchmarks/bench_tune.py --trials 10 20 40
    python benchmarks/bench_tune.py --settings implicit --trials 20 --show-trials

The settings:

* ``ids``: ``FMRegressor()`` on one-hot user and item ids (``one_hot_user_item``), trained
  on u1.base, RMSE on u1.test;
* ``side``: ``Recommender(target="rating")`` with the users' age, gender, occupation and the
  items' genres, trained on u1.base, RMSE on u1.test;
* ``implicit``: ``Recommender()`` (no target: implicit feedback) with the same side
  features, on the protocol of ``tests/test_movielens_ranking.py``: the positives are the
  ratings >= 4 of all of MovieLens 100K, a per-user random 20% of them is the test part
  (seed 0), NDCG@10 of the top-10 over unseen items (``unknown="popular"``). ``implicit``
  0.7.3's best tuned model (ALS) scores 0.3120 there (``benchmarks/bench_ranker.py``).

"defaults" is the template fitted as it is, with the hyperparameters its class gives it
today (nothing here names a value, so the bench follows the library's defaults). "tuned" is
``tune(template, train, n_trials=N, random_state=0, n_jobs=1)``: the default search space,
pruner and validation split (10% of the training part, random rows or per user), then the
refit on the whole training part; its ``best_model`` is scored on the test part. Only the
test score of each is printed, never used to choose anything.

Measured (``--trials 10 20 40``, seed 0; then ``--seed 1``), defaults -> tuned:

    setting   metric    defaults  10 trials  20 trials  40 trials  (seed 1: 10 / 20 / 40)
    ids       RMSE      0.9218    0.9218     0.9218     0.9198     0.9218 / 0.9218 / 0.9205
    side      RMSE      0.9253    0.9222     0.9222     0.9188     0.9253 / 0.9206 / 0.9186
    implicit  NDCG@10   0.3041    0.3082     0.3208     0.3201     0.3041 / 0.3188 / 0.3201

A tuned figure equal to the defaults' is the untuned model itself: no trial beat trial 0 (the
template as given) on validation by more than its noise.

The process keeps to ``--cores`` CPUs (default 1): ``tune`` gives each model every core the
process may use, and Hogwild SGD (BPR) on more than one thread is not reproducible.
"""

from __future__ import annotations

import argparse
import os
import time

import optuna

from fmrec import FMRegressor, Recommender, tune
from fmrec.datasets import load_movielens, one_hot_user_item
from fmrec.metrics import ranking_metrics, rmse
from fmrec.split import train_test_split

SETTINGS = ("ids", "side", "implicit")


def side_features(data) -> dict:
    return {"user_features": data.users[["user_id", "age", "gender", "occupation"]],
            "item_features": data.items[["item_id", "genres"]]}


def setting(name: str, data):
    """(template, training data, score(model) -> test figure, greater_is_better, metric)."""
    if name == "ids":
        train, test = data.splits["u1"]
        X, X_test = one_hot_user_item(train), one_hot_user_item(test)
        y, y_test = train["rating"].to_numpy(float), test["rating"].to_numpy(float)
        return (FMRegressor(random_state=0), (X, y),
                lambda m: rmse(y_test, m.predict(X_test)), False, "rmse")
    if name == "side":
        train, test = data.splits["u1"]
        return (Recommender(target="rating", random_state=0, **side_features(data)), train,
                lambda rec: rmse(test["rating"], rec.predict(test)), False, "rmse")
    positives = data.ratings.loc[data.ratings["rating"] >= 4, ["user_id", "item_id"]]
    train, test = train_test_split(positives, method="per_user", test_size=0.2,
                                   random_state=0)
    truth = test.rename(columns={"user_id": "user", "item_id": "item"})
    users = truth["user"].unique()

    def ndcg(rec):
        recs = rec.recommend(users, n=10, unknown="popular")
        return ranking_metrics(recs, truth, k=10)["ndcg@10"]

    return (Recommender(random_state=0, **side_features(data)), train, ndcg, True, "ndcg@10")


def fit_defaults(template, train):
    if isinstance(template, Recommender):
        return template.fit(train)
    return template.fit(*train)


def describe(model) -> str:
    """The tuned model's settings, short."""
    est = model.model_ if isinstance(model, Recommender) else model
    keys = ("n_factors", "n_epochs", "reg_linear", "reg_factors", "init_std", "learning_rate")
    params = est.get_params()
    return ", ".join(f"{k}={params[k]:.3g}" for k in keys if k in params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    ap.add_argument("--trials", nargs="+", type=int, default=[10, 20, 40])
    ap.add_argument("--seed", type=int, default=0, help="tune's random_state")
    ap.add_argument("--show-trials", action="store_true",
                    help="print every trial (state, validation score, epochs)")
    ap.add_argument("--cores", type=int, default=1, help="CPUs this process may use")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_movielens("100k", download=False)

    rows = []
    for name in args.settings:
        template, train, score, greater, metric = setting(name, data)
        start = time.perf_counter()
        default = score(fit_defaults(template, train))
        print(f"{name}: defaults {metric} {default:.4f} ({time.perf_counter() - start:.1f} s)",
              flush=True)
        for n_trials in args.trials:
            start = time.perf_counter()
            result = tune(template, train, n_trials=n_trials, random_state=args.seed, n_jobs=1)
            seconds = time.perf_counter() - start
            tuned = score(result.best_model)
            trial0 = result.study.trials[0].value
            ok = tuned >= default if greater else tuned <= default
            rows.append((name, metric, n_trials, default, tuned, ok, result.best_score,
                         trial0, seconds, describe(result.best_model)))
            print(f"  {n_trials} trials: tuned {metric} {tuned:.4f} "
                  f"({'not worse' if ok else 'WORSE'}); validation: best {result.best_score:.4f}"
                  f", trial 0 (defaults) {trial0:.4f}; {seconds:.0f} s; "
                  f"{describe(result.best_model)}", flush=True)
            if args.show_trials:
                for t in result.study.trials:
                    params = {k: round(v, 4) if isinstance(v, float) else v
                              for k, v in t.params.items()}
                    print(f"    #{t.number:2d} {t.state.name:8s} value={t.value!s:.8s} "
                          f"epochs_run={t.user_attrs.get('epochs_run')} "
                          f"n_epochs={t.user_attrs.get('n_epochs')} {params}")

    print()
    print(f"{'setting':9s} {'metric':8s} {'trials':>6s} {'defaults':>9s} {'tuned':>8s}  "
          f"{'ok':3s} {'val best':>8s} {'val trial0':>10s} {'time':>6s}  tuned model")
    for name, metric, n, default, tuned, ok, best, trial0, sec, desc in rows:
        print(f"{name:9s} {metric:8s} {n:6d} {default:9.4f} {tuned:8.4f}  "
              f"{'yes' if ok else 'NO':3s} {best:8.4f} {trial0:10.4f} {sec:5.0f}s  {desc}")


if __name__ == "__main__":
    main()
