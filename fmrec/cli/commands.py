"""The subcommands of ``fmrec``: train, tune, predict, recommend, evaluate (demo is in
``fmrec.cli.demo``).

Every command is a thin layer over the public API (``Recommender``, ``FMRegressor``,
``FMClassifier``, ``load_model``, ``fmrec.metrics``); file formats live in ``fmrec.cli.io``,
the options in ``fmrec.cli.parser``. Results go to stdout or files, progress to stderr through
``fmrec.cli.console`` (``-q`` silences it); a problem the user can fix is raised as
one of ``fmrec.cli.app.USER_ERRORS`` and ``fmrec.cli.main`` reports it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fmrec.cli import io
from fmrec.cli.console import Console
from fmrec.metrics import auc, log_loss, mae, ranking_metrics, rmse
from fmrec.models.fm import FMClassifier, FMRegressor
from fmrec.models.ranker import FMRanker
from fmrec.persistence import load_model
from fmrec.recommend.defaults import default_model
from fmrec.recommend.recommender import Recommender

USAGE_ERROR = 2  # the exit code of a usage error or of input the command cannot use


# ------------------------------------------------------------------------------------ models
def _task(choice: str, y) -> str:
    """``auto`` is classification exactly when the target has two distinct values."""
    if choice != "auto":
        return choice
    return "classification" if len(pd.unique(np.asarray(y))) == 2 else "regression"


def _estimator(task: str, args: argparse.Namespace, verbose: int, base=None):
    """An unfitted FMRegressor/FMClassifier: ``base`` (by default the estimator with its
    own defaults) with the options that were given."""
    given = {"n_factors": args.factors, "solver": args.solver, "n_epochs": args.epochs,
             "reg_linear": args.reg_linear, "reg_factors": args.reg_factors,
             "learning_rate": args.learning_rate}
    params = {name: value for name, value in given.items() if value is not None}
    if base is None:
        base = FMClassifier() if task == "classification" else FMRegressor()
    model = base.set_params(**params, random_state=args.seed, n_jobs=args.n_jobs,
                            verbose=verbose)
    if model.solver == "mcmc" and model.n_epochs <= model.n_burn_in:
        # --epochs is the one length the command line sets: a short chain burns in half.
        model.set_params(n_burn_in=model.n_epochs // 2)
    return model


def _ranker(args: argparse.Namespace, verbose: int) -> FMRanker:
    """An unfitted FMRanker (BPR) for implicit feedback, from the same model options."""
    given = {"n_factors": args.factors, "n_epochs": args.epochs,
             "reg_linear": args.reg_linear, "reg_factors": args.reg_factors,
             "learning_rate": args.learning_rate}
    params = {name: value for name, value in given.items() if value is not None}
    return FMRanker(**params, negative_sampling=args.negative_sampling,
                    random_state=args.seed, n_jobs=args.n_jobs, verbose=verbose)


def _load(path: str, command: str):
    """The model in ``path``, refused when ``command`` cannot use its kind."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"model file {path!r} not found")
    model = load_model(path)
    if isinstance(model, FMRanker) and command != "recommend":
        raise ValueError(f"{path} is a plain FMRanker, which scores user and item rows "
                         f"(FMRanker.score in Python), not the rows fmrec {command} reads; "
                         "train a Recommender on a table instead")
    return model


def _side_table(path: str | None, id_col: str, what: str) -> pd.DataFrame | None:
    if path is None:
        return None
    frame = io.read_table(path, what)
    io.require_columns(frame, [id_col], what)
    return io.split_multi_valued(frame)


def _known_users(rec: Recommender) -> np.ndarray:
    return rec.users_


def _as_user_ids(rec: Recommender, raw: Sequence[str]) -> list:
    """Command-line ids (text) as the model's own ids, so "7" finds the integer user 7."""
    lookup = {str(key): key for key in _known_users(rec)}
    return [lookup.get(str(value), value) for value in raw]


# ---------------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace, console: Console) -> None:
    """Fit a Recommender on a table, or a plain FM on a libSVM file, and save it."""
    io.check_output(args.out, "--out")
    if io.is_libsvm(args.input, args.format):
        X, y = io.read_libsvm(args.input)
        task = _task(args.task, y)
        model = _estimator(task, args, console.verbose)
        console.note(f"{args.input}: {X.shape[0]} rows, {X.shape[1]} features; {task}")
        with console.training(type(model).__name__, model.n_epochs):
            model.fit(X, y)
        model.save(args.out)
    else:
        rec = _train_recommender(args, console)
        rec.save(args.out)
    console.note(f"model written to {args.out}")


def _train_recommender(args: argparse.Namespace, console: Console) -> Recommender:
    rec, df = _recommender_from_args(args, console, console.verbose)
    with console.training(f"Recommender ({type(rec.model).__name__})", rec.model.n_epochs):
        rec.fit(df)
    return rec


def _recommender_from_args(args: argparse.Namespace, console: Console, verbose: int,
                           tuning: bool = False):
    """The unfitted Recommender the data options describe, and the interactions table; its
    model starts from the Recommender's default unless ``tuning`` (a search starts from the
    estimators' own defaults, the solver ``--solver`` names)."""
    df = io.read_table(args.input, "input file", args.format)
    target = None if args.no_target else args.target
    if target is None and not args.no_target and "rating" in df.columns:
        target = "rating"
    context = args.context or None
    io.require_columns(df, [args.user_col, args.item_col, target, *(context or [])],
                       "input file")
    if target is None:
        task = "classification"  # implicit feedback: rows are positives, negatives sampled
    else:
        task = _task(args.task, df[target].dropna())
    ranking = target is None and args.loss == "bpr"
    base = None  # a search starts from the estimators' defaults, on the solver it names
    if not tuning:  # the model a Recommender trains when given none, options on top
        kind = "implicit" if target is None else "label" if task == "classification" \
            else "rating"
        base = default_model(kind, has_context=True)  # implicit here: against negatives
    rec = Recommender(
        user_col=args.user_col, item_col=args.item_col, target=target,
        model=_ranker(args, verbose) if ranking else _estimator(task, args, verbose, base),
        user_features=_side_table(args.user_features, args.user_col, "user features file"),
        item_features=_side_table(args.item_features, args.item_col, "item features file"),
        context=context, implicit=args.implicit, implicit_weight=args.implicit_weight,
        negatives=args.negatives, negative_sampling=args.negative_sampling,
        random_state=args.seed)
    what = (f"target {target!r}, {task}" if target else
            f"implicit feedback (no target), {'BPR' if ranking else 'log loss'}")
    console.note(f"{args.input}: {len(df)} interactions; {what}")
    return rec, df


def cmd_predict(args: argparse.Namespace, console: Console) -> None:
    """Score the rows of INPUT with MODEL."""
    model = _load(args.model, "predict")
    if isinstance(model, Recommender):
        if io.is_libsvm(args.input, args.format):
            raise ValueError(f"{args.model} is a Recommender: give it a CSV or Parquet table "
                             "of (user, item) pairs, not libSVM")
        df = io.read_table(args.input, "input file", args.format)
        io.require_columns(df, [model.user_col, model.item_col, *model.dataset_.context_cols],
                           "input file")
        io.write_table(df.assign(prediction=model.predict(df)), args.out)
    else:
        if not io.is_libsvm(args.input, args.format):
            raise ValueError(f"{args.model} is a plain {type(model).__name__}: give it a "
                             "libSVM file (.libfm/.libsvm/.svm, or --format libsvm)")
        X, _ = io.read_libsvm(args.input, n_features=model.n_features_in_)
        io.write_lines(_scores(model, X), args.out)
    if args.out is not None:
        console.note(f"predictions written to {args.out}")


def _scores(model, X) -> np.ndarray:
    """Predicted values, or the probability of the positive class for a classifier."""
    if isinstance(model, FMClassifier):
        return model.predict_proba(X)[:, 1]
    return model.predict(X)


def cmd_recommend(args: argparse.Namespace, console: Console) -> None:
    """Top-N lists for some or all of the model's users."""
    rec = _load(args.model, "recommend")
    if not isinstance(rec, Recommender):
        raise ValueError(f"{args.model} is a plain {type(rec).__name__}, not a Recommender: "
                         "train it on a CSV or Parquet table to recommend")
    if args.users_file is not None:
        users = _as_user_ids(rec, io.read_ids(args.users_file, rec.user_col))
    elif args.users:
        users = _as_user_ids(rec, args.users)
    else:
        users = _known_users(rec)
    unknown = ~pd.Index(users).isin(_known_users(rec))
    if args.unknown == "error" and unknown.any():
        shown = ", ".join(map(str, np.asarray(users, dtype=object)[unknown][:5]))
        raise ValueError(f"unknown user(s) {shown}: not in the model's training data or user "
                         "features (--unknown popular gives them the most popular items)")
    recs = rec.recommend(users, n=args.n, exclude_seen=not args.include_seen,
                         unknown=args.unknown)
    io.write_table(recs, args.out)
    if args.out is not None:
        console.note(f"{len(recs)} recommendations for {recs['user'].nunique()} users "
                     f"written to {args.out}")


def cmd_evaluate(args: argparse.Namespace, console: Console) -> None:
    """Print accuracy and ranking metrics of MODEL on TEST."""
    model = _load(args.model, "evaluate")
    if isinstance(model, Recommender):
        metrics = _evaluate_recommender(model, args, console)
    else:
        if not io.is_libsvm(args.test, args.format):
            raise ValueError(f"{args.model} is a plain {type(model).__name__}: give it a "
                             "libSVM test file (.libfm/.libsvm/.svm, or --format libsvm)")
        X, y = io.read_libsvm(args.test, n_features=model.n_features_in_, what="test file")
        metrics = _pointwise(model, X, y)
    for name, value in metrics.items():
        print(f"{name:<14} {value:.4f}")


def _pointwise(model, X, y) -> dict:
    """RMSE/MAE for a regressor; AUC and log loss for a classifier (X may be a DataFrame)."""
    score = model.predict(X) if isinstance(model, Recommender) else _scores(model, X)
    classifier = isinstance(getattr(model, "model_", model), FMClassifier)
    if not classifier:
        return {"rmse": rmse(y, score), "mae": mae(y, score)}
    classes = getattr(model, "model_", model).classes_
    unknown = ~np.isin(y, classes)
    if unknown.any():
        raise ValueError(f"test labels {np.unique(y[unknown])[:5].tolist()} are not among the "
                         f"model's classes {classes.tolist()}")
    positive = (np.asarray(y) == classes[1]).astype(float)
    if len(np.unique(positive)) < 2:
        raise ValueError("the test labels are all one class, so AUC is undefined")
    return {"auc": auc(positive, score), "log_loss": log_loss(positive, score)}


def _evaluate_recommender(rec: Recommender, args, console: Console) -> dict:
    test = io.read_table(args.test, "test file", args.format)
    io.require_columns(test, [rec.user_col, rec.item_col, *rec.dataset_.context_cols], "test file")
    metrics, relevant = {}, test
    if rec.target is not None and rec.target in test.columns:
        metrics = _pointwise(rec, test, test[rec.target].to_numpy())
        if isinstance(rec.model_, FMClassifier):
            relevant = test[test[rec.target] == rec.model_.classes_[1]]
        else:
            relevant = test[test[rec.target] >= args.threshold]
    elif rec.target is not None:
        console.note(f"test file has no {rec.target!r} column: ranking metrics only, "
                     "every test row counts as relevant")
    else:
        console.note("implicit-feedback model: every test row counts as relevant")
    if relevant.empty:
        raise ValueError(f"no test row is relevant ({rec.target} >= {args.threshold:g}, or the "
                         "positive label for a classifier): nothing to rank")
    metrics.update(_ranking(rec, relevant, args.k, console))
    return metrics


def _ranking(rec: Recommender, relevant: pd.DataFrame, k: int, console: Console) -> dict:
    """Ranking metrics at k of ``rec``'s lists for the users of ``relevant``."""
    users = pd.unique(relevant[rec.user_col])
    n_cold = int((~pd.Index(users).isin(_known_users(rec))).sum())
    if n_cold:
        console.note(f"{n_cold} test user(s) unknown to the model get the most popular items")
    recs = rec.recommend(users, n=k, unknown="popular")
    return ranking_metrics(recs, io.truth_pairs(relevant, rec.user_col, rec.item_col), k=k)


# -------------------------------------------------------------------------------------- tune
_TUNE_TABLE_ROWS = 5
_SCHEDULER_TIMEOUT = 10  # seconds to reach a --scheduler before giving up


def cmd_tune(args: argparse.Namespace, console: Console) -> None:
    """Search hyperparameters with Optuna, print the best trials and save the best model."""
    try:
        import optuna

        from fmrec.tuning.search import tune
        from fmrec.tuning.trials import open_storage
    except ImportError:
        raise ValueError("fmrec tune needs Optuna: pip install 'fmrec[tune]'") from None
    if (args.storage is None) != (args.study_name is None):
        raise ValueError("--storage and --study-name go together (a study is resumed by name)")
    io.check_output(args.out, "--out")
    # Opened before the data is read, so a storage that cannot be opened fails at once.
    storage = open_storage(args.storage) if args.scheduler is None else args.storage
    if io.is_libsvm(args.input, args.format):
        X, y = io.read_libsvm(args.input)
        target, data = _estimator(_task(args.task, y), args, 0), (X, y)
        console.note(f"{args.input}: {X.shape[0]} rows, {X.shape[1]} features")
    else:
        target, data = _recommender_from_args(args, console, 0, tuning=True)
    client = None if args.scheduler is None else _dask_client(args.scheduler, console)
    saved = optuna.logging.get_verbosity()
    # Optuna's own per-trial log lines would repeat ours; its warnings still show.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        result = tune(target, data, n_trials=args.trials, timeout=args.timeout,
                      metric=args.metric, validation=args.validation, cv=args.cv,
                      storage=storage,
                      study_name=args.study_name, random_state=args.seed,
                      n_jobs=args.parallel, callbacks=[_trial_line(console, args.trials)],
                      client=client)
    except RuntimeError as exc:  # no trial completed: a fixable setting, not a crash
        raise ValueError(str(exc)) from None
    finally:
        optuna.logging.set_verbosity(saved)
        if client is not None:
            client.close()
    _print_best_trials(result)
    result.best_model.save(args.out)
    console.note(f"best model ({result.metric} {result.best_score:.4f}) written to {args.out}")


def _dask_client(address: str, console: Console):
    """A client of the Dask scheduler at ``address``, or a usage error saying why not."""
    try:
        import distributed
    except ImportError:
        raise ValueError("--scheduler needs Dask: pip install 'fmrec[dask]'") from None
    try:
        client = distributed.Client(address, timeout=_SCHEDULER_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"could not reach the Dask scheduler at {address} ({exc})") from None
    threads = sum(client.nthreads().values())
    console.note(f"Dask scheduler {address}: {len(client.nthreads())} workers, "
                 f"{threads} threads")
    return client


def _trial_line(console: Console, n_trials: int):
    """An Optuna study callback that notes each finished trial on one line, with the count
    of finished trials against the study's target and the best value so far."""

    def note(study, trial) -> None:
        # Counted up to this trial's end, not from the whole study: with --scheduler the
        # callbacks of trials that ended together run after the study holds all of them.
        end = trial.datetime_complete
        before = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")
                  and (end is None or t.datetime_complete is None
                       or t.datetime_complete <= end)]
        values = [t.value for t in before if t.state.name == "COMPLETE"]
        pick = max if study.direction.name == "MAXIMIZE" else min
        best = f" (best {pick(values):.4f})" if values else ""
        done = len(before)
        metric = study.user_attrs.get("fmrec_metric", "value")
        params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        epochs = trial.user_attrs.get("epochs_run")
        if trial.value is not None:
            state = f"{metric}={trial.value:.4f} best_epochs={trial.user_attrs['n_epochs']}"
        else:
            state = trial.state.name.lower() + (f" after epoch {epochs}" if epochs else "")
        console.note(f"[{done}/{n_trials}]{best} trial {trial.number}: {state} {params}")

    return note


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _print_best_trials(result) -> None:
    done = [t for t in result.study.trials if t.value is not None
            and t.state.name == "COMPLETE"]
    greater = result.study.direction.name == "MAXIMIZE"
    done.sort(key=lambda t: -t.value if greater else t.value)
    names = list(result.best_params)
    header = ["trial", result.metric, "epochs", *names]
    rows = [[str(t.number), f"{t.value:.4f}", str(t.user_attrs.get("n_epochs", "")),
             *(_short(t.params.get(n, "")) for n in names)] for t in done[:_TUNE_TABLE_ROWS]]
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
