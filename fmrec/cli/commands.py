"""The ``fmrec`` command (also ``python -m fmrec``): train, tune, predict, recommend, evaluate,
demo.

Every command is a thin layer over the public API (``Recommender``, ``FMRegressor``,
``FMClassifier``, ``load_model``, ``fmrec.metrics``); file formats live in ``fmrec.cli.io``.
Results go to stdout or files, progress to stderr (``-q`` silences it), and any error the
user can fix ends the run with exit code 2 and one ``fmrec: error: ...`` line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fmrec import __version__
from fmrec.cli import io
from fmrec.cli.demo import run_demo
from fmrec.metrics import auc, log_loss, mae, ranking_metrics, rmse
from fmrec.models.fm import FMClassifier, FMRegressor
from fmrec.models.ranker import FMRanker
from fmrec.persistence import load_model
from fmrec.recommend.recommender import Recommender

USAGE_ERROR = 2
_EPOCH_FORMAT = "epoch %d %s"  # what estimators log per epoch with verbose=1


# ----------------------------------------------------------------------------------- progress
class _EpochLines(logging.Handler):
    """Turns the estimators' per-epoch log records into a few progress lines on stderr."""

    def __init__(self, label: str, n_epochs: int):
        super().__init__(logging.INFO)
        self.label, self.n_epochs = label, n_epochs
        # About five lines per fit: enough to see it move, few enough to read.
        self.every = max(1, n_epochs // 5)

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg != _EPOCH_FORMAT or len(args) != 2:
            print(f"{self.label}: {record.getMessage()}", file=sys.stderr)
            return
        epoch = int(args[0]) + 1
        if epoch == 1 or epoch % self.every == 0 or epoch == self.n_epochs:
            print(f"{self.label}: epoch {epoch}/{self.n_epochs} {args[1]}", file=sys.stderr)


class Console:
    """What the user sees besides results: notes and per-epoch lines, unless quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    @property
    def verbose(self) -> int:
        """The ``verbose`` to give estimators: they log epochs only when someone listens."""
        return 0 if self.quiet else 1

    def note(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr)

    @contextlib.contextmanager
    def training(self, label: str, n_epochs: int):
        """Show the epochs of the fit run inside, then its duration; yields a timer."""
        logger = logging.getLogger("fmrec")
        handler = _EpochLines(label, n_epochs)
        saved = logger.level, logger.propagate
        if not self.quiet:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False  # an application's root handler would print them twice
        timer = {"start": time.perf_counter()}
        try:
            yield timer
        finally:
            logger.removeHandler(handler)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]
            timer["seconds"] = time.perf_counter() - timer["start"]
        self.note(f"{label}: trained in {timer['seconds']:.1f} s")


# ------------------------------------------------------------------------------------ models
def _task(choice: str, y) -> str:
    """``auto`` is classification exactly when the target has two distinct values."""
    if choice != "auto":
        return choice
    return "classification" if len(pd.unique(np.asarray(y))) == 2 else "regression"


def _estimator(task: str, args: argparse.Namespace, verbose: int):
    """An unfitted FMRegressor/FMClassifier; options left unset keep the estimator's defaults."""
    given = {"n_factors": args.factors, "solver": args.solver, "n_epochs": args.epochs,
             "reg_linear": args.reg_linear, "reg_factors": args.reg_factors,
             "learning_rate": args.learning_rate}
    params = {name: value for name, value in given.items() if value is not None}
    cls = FMClassifier if task == "classification" else FMRegressor
    return cls(**params, random_state=args.seed, n_jobs=args.n_jobs, verbose=verbose)


def _ranker(args: argparse.Namespace, verbose: int) -> FMRanker:
    """An unfitted FMRanker (BPR) for implicit feedback, from the same model options."""
    given = {"n_factors": args.factors, "n_epochs": args.epochs,
             "reg_linear": args.reg_linear, "reg_factors": args.reg_factors,
             "learning_rate": args.learning_rate}
    params = {name: value for name, value in given.items() if value is not None}
    return FMRanker(**params, negative_sampling=args.negative_sampling,
                    random_state=args.seed, n_jobs=args.n_jobs, verbose=verbose)


def _load(path: str):
    if not Path(path).is_file():
        raise FileNotFoundError(f"model file {path!r} not found")
    return load_model(path)


def _side_table(path: str | None, id_col: str, what: str) -> pd.DataFrame | None:
    if path is None:
        return None
    frame = io.read_table(path, what)
    io.require_columns(frame, [id_col], what)
    return io.split_multi_valued(frame)


def _context_cols(rec: Recommender) -> list:
    context = rec.context
    return [] if context is None else [context] if isinstance(context, str) else list(context)


def _known_users(rec: Recommender) -> np.ndarray:
    return rec.users_


def _as_user_ids(rec: Recommender, raw: Sequence[str]) -> list:
    """Command-line ids (text) as the model's own ids, so "7" finds the integer user 7."""
    lookup = {str(key): key for key in _known_users(rec)}
    return [lookup.get(str(value), value) for value in raw]


# ---------------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace, console: Console) -> None:
    """Fit a Recommender on a table, or a plain FM on a libSVM file, and save it."""
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


def _recommender_from_args(args: argparse.Namespace, console: Console, verbose: int):
    """The unfitted Recommender the data options describe, and the interactions table."""
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
    rec = Recommender(
        user_col=args.user_col, item_col=args.item_col, target=target,
        model=_ranker(args, verbose) if ranking else _estimator(task, args, verbose),
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
    model = _load(args.model)
    if isinstance(model, Recommender):
        if io.is_libsvm(args.input, args.format):
            raise ValueError(f"{args.model} is a Recommender: give it a CSV or Parquet table "
                             "of (user, item) pairs, not libSVM")
        df = io.read_table(args.input, "input file", args.format)
        io.require_columns(df, [model.user_col, model.item_col, *_context_cols(model)],
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
    rec = _load(args.model)
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
    model = _load(args.model)
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
    io.require_columns(test, [rec.user_col, rec.item_col, *_context_cols(rec)], "test file")
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
    except ImportError:
        raise ValueError("fmrec tune needs Optuna: pip install 'fmrec[tune]'") from None
    if (args.storage is None) != (args.study_name is None):
        raise ValueError("--storage and --study-name go together (a study is resumed by name)")
    if io.is_libsvm(args.input, args.format):
        X, y = io.read_libsvm(args.input)
        target, data = _estimator(_task(args.task, y), args, 0), (X, y)
        console.note(f"{args.input}: {X.shape[0]} rows, {X.shape[1]} features")
    else:
        target, data = _recommender_from_args(args, console, 0)
    client = None if args.scheduler is None else _dask_client(args.scheduler, console)
    saved = optuna.logging.get_verbosity()
    # Optuna's own per-trial log lines would repeat ours; its warnings still show.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        result = tune(target, data, n_trials=args.trials, timeout=args.timeout,
                      metric=args.metric, validation=args.validation, cv=args.cv,
                      storage=args.storage,
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


def _add_tune_command(sub, common: argparse.ArgumentParser, fmt: dict) -> None:
    p = sub.add_parser("tune", parents=[common], help="search hyperparameters with Optuna "
                       "and save the best model",
                       description="Tune n_factors, the penalties, init_std (and the SGD "
                       "learning rate) on a validation split with Optuna, pruning poor trials "
                       "epoch by epoch; print the best trials and save the best model refitted "
                       "on all the data. Needs 'pip install fmrec[tune]'.")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.npz)")
    p.add_argument("--format", **fmt)
    search = p.add_argument_group("search")
    search.add_argument("--trials", type=_positive_int, default=20, metavar="N",
                        help="trials the study should hold, resumed ones included (default: 20)")
    search.add_argument("--timeout", type=float, metavar="S",
                        help="start no new trial after S seconds")
    search.add_argument("--metric", metavar="M", help="rmse (default for ratings), mae, "
                        "logloss (default for labels), auc, or for tables ndcg@K, precision@K, "
                        "recall@K, map@K, hit_rate@K (ndcg@10: default without a target)")
    search.add_argument("--validation", type=float, default=0.1, metavar="F",
                        help="fraction held out for validation (default: 0.1)")
    search.add_argument("--cv", type=_positive_int, metavar="K",
                        help="cross-validate over K folds instead of one validation split")
    search.add_argument("--storage", metavar="URL", help="Optuna storage, e.g. "
                        "sqlite:///tune.db, to resume an interrupted search")
    search.add_argument("--study-name", metavar="NAME", help="study to create or resume")
    search.add_argument("--parallel", type=int, metavar="N",
                        help="trials at once; each model gets cores/N threads (default: 1; "
                        "with --scheduler one per worker thread)")
    search.add_argument("--scheduler", metavar="ADDRESS", help="run the trials on the "
                        "workers of this Dask scheduler, e.g. tcp://10.0.0.5:8786 (needs "
                        "'pip install fmrec[dask]'); the scheduler opens --storage, the best "
                        "model is refitted here")
    _interaction_options(p)
    model = p.add_argument_group("model (the searched parameters are not options)")
    model.add_argument("--task", choices=("auto", "regression", "classification"),
                       default="auto", help="as train (default: auto)")
    model.add_argument("--solver", choices=("als", "sgd", "mcmc"), default="als",
                       help="SGD also tunes the learning rate, MCMC only the rank "
                       "(default: als)")
    model.add_argument("--epochs", type=_positive_int, metavar="N",
                       help="most epochs of a trial; early stopping picks fewer (50)")
    model.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    model.add_argument("--n-jobs", type=int, default=-1, metavar="N",
                       help="threads of the final refit (default: -1, every core)")
    # _estimator reads these; tune searches them instead.
    p.set_defaults(run=cmd_tune, factors=None, reg_linear=None, reg_factors=None,
                   learning_rate=None)


# ------------------------------------------------------------------------------------ parser
def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1, so ``--factors 0`` fails as a usage error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _interaction_options(parser: argparse.ArgumentParser) -> None:
    """The options that describe a table of interactions (``train`` and ``tune``)."""
    data = parser.add_argument_group("interactions (tables only)")
    data.add_argument("--user-col", default="user_id", help="default: user_id")
    data.add_argument("--item-col", default="item_id", help="default: item_id")
    data.add_argument("--target", metavar="COL", help="target column (default: 'rating' if "
                      "there is one; without a target every row is a positive and negatives "
                      "are sampled)")
    data.add_argument("--no-target", action="store_true",
                      help="implicit feedback even if there is a 'rating' column")
    data.add_argument("--context", nargs="+", action="extend", metavar="COL",
                      help="context columns of the interactions (e.g. device)")
    data.add_argument("--user-features", metavar="FILE", help="table: user id column plus "
                      "side columns; text with '|' (Action|Comedy) is list-valued")
    data.add_argument("--item-features", metavar="FILE", help="same, for items")
    data.add_argument("--implicit", nargs="?", const="users", default=False,
                      choices=("users", "items", "both"),
                      help="implicit features from the training interactions: each user's "
                      "items (users, the default of a bare --implicit), each item's users "
                      "(items), or both (SVD++-style)")
    data.add_argument("--implicit-weight", type=float, default=1.0, metavar="W",
                      help="value of an implicit feature is W/sqrt(n) (default: 1)")
    data.add_argument("--loss", choices=("bpr", "logloss"), default="bpr",
                      help="without a target: rank by BPR (FMRanker; the default) or "
                      "classify positives against sampled negatives (log loss; also takes "
                      "--context)")
    data.add_argument("--negatives", type=_positive_int, default=4, metavar="N",
                      help="negatives per positive with --loss logloss (default: 4)")
    data.add_argument("--negative-sampling", choices=("uniform", "popularity"),
                      default="uniform", help="default: uniform")


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (unset options keep the estimator's defaults)")
    group.add_argument("--task", choices=("auto", "regression", "classification"),
                       default="auto", help="auto: classification when the target has "
                       "exactly two distinct values (default: auto)")
    group.add_argument("--solver", choices=("als", "sgd", "mcmc"), default="als",
                       help="coordinate descent (no learning rate), SGD, or Bayesian FM by "
                       "Gibbs sampling (no penalties to set; --epochs sweeps, 10 of burn-in; "
                       "default: als)")
    group.add_argument("--factors", type=_positive_int, metavar="K",
                       help="rank of the interactions (8)")
    group.add_argument("--epochs", type=_positive_int, metavar="N", help="sweeps or passes (50)")
    group.add_argument("--reg-linear", type=float, metavar="L", help="penalty of w (0.5)")
    group.add_argument("--reg-factors", type=float, metavar="L", help="penalty of V (1.0)")
    group.add_argument("--learning-rate", type=float, metavar="R", help="SGD step (0.05)")
    group.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    group.add_argument("--n-jobs", type=int, default=-1, metavar="N",
                       help="threads, -1 for every core (default); SGD on several threads is "
                       "not bit-reproducible, ALS is")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fmrec`` command."""
    parser = argparse.ArgumentParser(
        prog="fmrec", description="Factorization Machine recommenders from the command line.",
        epilog="Run 'fmrec COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    # Accept -q after the command too; SUPPRESS keeps an absent one from resetting the flag.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress on stderr")
    fmt = {"choices": ("csv", "parquet", "libsvm"),
           "help": "input format (default: from the suffix; .libfm/.libsvm/.svm are libSVM, "
                   ".parquet/.pq Parquet, anything else CSV)"}
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", parents=[common], help="train and compare models on MovieLens "
                       "100K (or synthetic data) and write recommendations")
    p.add_argument("--data-home", metavar="DIR", help="folder that contains ml-100k/ "
                   "(default: $FMREC_DATA_HOME, else ~/fmrec_data); nothing is downloaded")
    p.add_argument("--out", metavar="DIR", default="fmrec_demo_output",
                   help="output folder (default: ./fmrec_demo_output)")
    p.set_defaults(run=run_demo)

    p = sub.add_parser("train", parents=[common], help="fit a model and save it",
                       description="Fit a Recommender on a CSV/Parquet table of interactions, "
                       "or a plain FM on a libSVM/libFM text file ('label idx:val ...', "
                       "zero-based), and save it as .npz.")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.npz)")
    p.add_argument("--format", **fmt)
    _interaction_options(p)
    _model_options(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("predict", parents=[common], help="score rows with a saved model",
                       description="Add a 'prediction' column to a table of (user, item) "
                       "pairs, or write one prediction per line for a libSVM file "
                       "(classifiers: the probability of the positive class).")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("--out", metavar="FILE", help="output file (default: stdout)")
    p.add_argument("--format", **fmt)
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("recommend", parents=[common], help="top-N items per user as CSV",
                       description="Write user,item,score,rank rows: the best unseen items of "
                       "every user of the model, or of the users given.")
    p.add_argument("model", metavar="MODEL")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--users", nargs="+", metavar="ID", help="user ids (default: all)")
    who.add_argument("--users-file", metavar="FILE", help="one user id per line, or a "
                     "CSV with the model's user column")
    p.add_argument("-n", type=_positive_int, default=10, help="items per user (default: 10)")
    p.add_argument("--include-seen", action="store_true",
                   help="allow items the user interacted with in training")
    p.add_argument("--unknown", choices=("error", "popular"), default="error",
                   help="unknown users: fail (default) or give them the most popular items")
    p.add_argument("--out", metavar="FILE", help="output file (default: stdout)")
    p.set_defaults(run=cmd_recommend)

    p = sub.add_parser("evaluate", parents=[common], help="accuracy and ranking metrics on "
                       "a test file", description="Print RMSE/MAE (regressors) or AUC/log loss "
                       "(classifiers) and, for a Recommender, precision, recall, NDCG, MAP and "
                       "hit rate at k against the test items with target >= threshold.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("test", metavar="TEST")
    p.add_argument("--k", type=_positive_int, default=10, help="list length (default: 10)")
    p.add_argument("--threshold", type=float, default=4.0,
                   help="relevant: target >= this (default: 4)")
    p.add_argument("--format", **fmt)
    p.set_defaults(run=cmd_evaluate)

    _add_tune_command(sub, common, fmt)
    return parser


def _message(exc: BaseException) -> str:
    """One line for the user: the message itself, whitespace (and tracebacks) folded."""
    if isinstance(exc, FileNotFoundError) and exc.filename is not None:
        text = f"file {exc.filename!r} not found"
    elif isinstance(exc, KeyError) and len(exc.args) == 1:
        text = f"not found: {exc.args[0]}"  # str(KeyError) would show it in extra quotes
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fmrec`` command (the console script and ``python -m fmrec``).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit code: 0, or 2 after a usage error or input the command cannot use (the
        reason is one ``fmrec: error: ...`` line on stderr). ``--help`` and ``--version``
        exit through ``SystemExit`` as argparse does.

    Examples
    --------
    >>> main(["predict", "no-such-model.npz", "pairs.csv"])  # message on stderr
    2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    try:
        args.run(args, Console(quiet=args.quiet))
    except (ValueError, TypeError, FileNotFoundError, KeyError) as exc:
        print(f"{parser.prog}: error: {_message(exc)}", file=sys.stderr)
        return USAGE_ERROR
    except BrokenPipeError:
        # The reader of stdout went away (fmrec predict ... | head): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0
