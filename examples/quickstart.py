"""fmrec quick start: both solvers on MovieLens 100K (u1 split), or on synthetic FM data.

    python examples/quickstart.py [--data-home FOLDER]

MovieLens is read from FOLDER/ml-100k (FOLDER: --data-home, else $FMREC_DATA_HOME, else
../shared/datasets beside the repository). When it is not there, a synthetic dataset drawn
from a known FM (fmrec.datasets.make_fm_regression) is used instead.

For each solver it prints the test RMSE and the fit time, then the test AUC of an
FMClassifier (MovieLens: rating >= 4 is the positive class).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import fmrec
from fmrec.datasets import (
    load_ml100k_split,
    make_fm_classification,
    make_fm_regression,
    one_hot_user_item,
)
from fmrec.metrics import auc, rmse

# Hyperparameters chosen on a validation split carved from u1.base (never on u1.test); see
# tests/test_movielens.py. Penalties grow with sqrt(feature frequency) (reg_power=0.5, the
# default).
RANDOM_STATE = 0
N_JOBS = 1  # kernel threads; -1 uses every core (SGD is then Hogwild, not bit-reproducible)
ALS_PARAMS = {"n_factors": 8, "n_epochs": 50, "reg_linear": 0.57, "reg_factors": 1.3}
SGD_PARAMS = {"n_factors": 8, "n_epochs": 180, "learning_rate": 0.02, "reg_linear": 0.1,
              "reg_factors": 1.0, "init_std": 0.01}
CLF_PARAMS = {"solver": "als", "n_factors": 8, "n_epochs": 19, "reg_linear": 1.5,
              "reg_factors": 0.8, "init_std": 0.01}
SYNTHETIC_SAMPLES = 20_000
TEST_FRACTION = 0.2  # synthetic data only; MovieLens uses its own u1.base / u1.test

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_HOME = REPO_ROOT.parent / "shared" / "datasets"  # ../shared/datasets


def find_data_home(arg: str | None) -> Path | None:
    """The folder holding ml-100k/, or None when MovieLens cannot be found."""
    if arg is not None:
        return Path(arg)
    home = Path(os.environ.get("FMREC_DATA_HOME", DEFAULT_DATA_HOME))
    return home if (home / "ml-100k" / "u1.base").is_file() else None


def split(X, y):
    """Last rows for training, first TEST_FRACTION for testing (the rows are i.i.d.)."""
    n_test = int(len(y) * TEST_FRACTION)
    return X[n_test:], y[n_test:], X[:n_test], y[:n_test]


def load_data(data_home: Path | None):
    """Regression and classification data, each as (X_train, y_train, X_test, y_test)."""
    if data_home is not None:
        print(f"MovieLens 100K u1 split from {data_home / 'ml-100k'}")
        train, test = load_ml100k_split("u1", data_home)
        X_train, X_test = one_hot_user_item(train), one_hot_user_item(test)
        y_train = train["rating"].to_numpy(np.float64)
        y_test = test["rating"].to_numpy(np.float64)
        return ((X_train, y_train, X_test, y_test),
                (X_train, y_train >= 4, X_test, y_test >= 4))
    print(f"MovieLens 100K not found: synthetic data from a known FM ({SYNTHETIC_SAMPLES} "
          "rows); pass --data-home or set FMREC_DATA_HOME to use MovieLens")
    X, y, _ = make_fm_regression(n_samples=SYNTHETIC_SAMPLES, random_state=RANDOM_STATE)
    Xc, yc, _ = make_fm_classification(n_samples=SYNTHETIC_SAMPLES, random_state=RANDOM_STATE)
    return split(X, y), split(Xc, yc)


def fit_timed(model, X, y):
    start = time.perf_counter()
    model.fit(X, y)
    return model, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", help="folder containing ml-100k/ "
                        "(default: $FMREC_DATA_HOME, else ../shared/datasets)")
    args = parser.parse_args(argv)

    data_home = find_data_home(args.data_home)
    regression, classification = load_data(data_home)
    X_train, y_train, X_test, y_test = regression
    print(f"train {X_train.shape[0]} rows, test {X_test.shape[0]} rows, "
          f"{X_train.shape[1]} features; OpenMP: {fmrec.openmp_enabled()}")

    models = {}
    for solver, params in (("als", ALS_PARAMS), ("sgd", SGD_PARAMS)):
        model = fmrec.FMRegressor(solver=solver, random_state=RANDOM_STATE, n_jobs=N_JOBS,
                                  **params)
        model, seconds = fit_timed(model, X_train, y_train)
        models[solver] = model
        print(f"FMRegressor solver={solver}: test RMSE {rmse(y_test, model.predict(X_test)):.4f}"
              f"  fit {seconds:.2f} s")

    Xc_train, label_train, Xc_test, label_test = classification
    clf = fmrec.FMClassifier(random_state=RANDOM_STATE, n_jobs=N_JOBS, **CLF_PARAMS)
    clf, seconds = fit_timed(clf, Xc_train, label_train)
    score = auc(label_test, clf.decision_function(Xc_test))
    target = "rating >= 4" if data_home is not None else "synthetic labels"
    print(f"FMClassifier solver={CLF_PARAMS['solver']} ({target}): test AUC {score:.4f}"
          f"  fit {seconds:.2f} s")

    # Models are saved as one .npz file (no pickle) and read back with fmrec.load_model.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.npz"
        models["sgd"].save(path)
        same = np.array_equal(fmrec.load_model(path).predict(X_test),
                              models["sgd"].predict(X_test))
    print(f"save/load_model round trip gives identical predictions: {same}")


if __name__ == "__main__":
    main()
