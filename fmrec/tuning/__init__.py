"""Hyperparameter search with Optuna (``pip install 'fmrec[tune]'``): ``tune`` and its result.

``search`` runs a study on this machine, ``space`` holds the default search spaces and
``cluster`` spreads the trials over a Dask cluster.
"""

from fmrec.tuning.search import TuneResult, tune

__all__ = ["TuneResult", "tune"]
