"""The argument parser of the ``fmrec`` command: its subcommands and their options.

Each subcommand's ``run`` default is the function of ``fmrec.cli.commands`` (or
``fmrec.cli.demo``) that carries it out.
"""

from __future__ import annotations

import argparse

from fmrec import __version__
from fmrec import _validation as v
from fmrec.cli.commands import cmd_evaluate, cmd_predict, cmd_recommend, cmd_train, cmd_tune
from fmrec.cli.demo import run_demo


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1, so ``--factors 0`` fails as a usage error."""
    try:
        value = int(text)
        v.check_interval("value", value, low=1, integer=True)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
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
    group = parser.add_argument_group(
        "model (unset options keep the defaults: on a table, those of the model a Recommender "
        "trains when given none, fmrec.default_model: for a target the Bayesian FM, MCMC "
        "with 8 factors and 200 sweeps, and for implicit feedback FMRanker, 64 factors and "
        "30 epochs; on a libSVM file, the estimators' own: ALS, 8 factors, 50 sweeps)")
    group.add_argument("--task", choices=("auto", "regression", "classification"),
                       default="auto", help="auto: classification when the target has "
                       "exactly two distinct values (default: auto)")
    group.add_argument("--solver", choices=("als", "sgd", "mcmc"),
                       help="coordinate descent (no learning rate), SGD, or Bayesian FM by "
                       "Gibbs sampling (no penalties to set; --epochs sweeps, 10 of burn-in)")
    group.add_argument("--factors", type=_positive_int, metavar="K",
                       help="rank of the interactions")
    group.add_argument("--epochs", type=_positive_int, metavar="N",
                       help="sweeps or passes (MCMC: 10 of them burn-in, half when fewer "
                       "than 11)")
    group.add_argument("--reg-linear", type=float, metavar="L",
                       help="penalty of w (FM: 0.5; FMRanker: 0.05)")
    group.add_argument("--reg-factors", type=float, metavar="L",
                       help="penalty of V (FM: 1.0; FMRanker: 0.05)")
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
                   "(default: $FMREC_DATA_HOME, else ~/fmrec_data)")
    p.add_argument("--download", action="store_true", help="fetch MovieLens 100K from "
                   "GroupLens into the data home if it is not there (about 5 MB, checked "
                   "against its SHA-256); without it, a missing ml-100k/ means synthetic data")
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
