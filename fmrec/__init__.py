"""fmrec: Factorization Machines for recommenders.

The package in layers, each importing only the ones below it:

- ``fmrec.models``: the estimators (FMRegressor, FMClassifier, FMRanker) and their one
  training loop;
- ``fmrec.solvers``: one epoch of ALS, SGD, MCMC or BPR at a time, over ``fmrec._kernels``;
- ``fmrec.features``: pandas columns to sparse rows (FeatureEncoder);
- ``fmrec.recommend``: interactions to rows (InteractionDataset) and top-N lists
  (Recommender);
- ``fmrec.tuning``, ``fmrec.cli``, ``fmrec.dask``: built on the public API.
"""

# Submodules a user reaches as fmrec.<name> (plot imports matplotlib only when a figure is
# drawn).
from fmrec import datasets, inspect, metrics, plot, split
from fmrec._kernels._openmp import openmp_enabled
from fmrec._version import __version__ as __version__
from fmrec.design import DesignMatrix, RelationBlock
from fmrec.features import FeatureEncoder, UniqueColumnWarning
from fmrec.models.fm import FMClassifier, FMRegressor
from fmrec.models.ranker import FMRanker
from fmrec.persistence import load_model
from fmrec.recommend.dataset import InteractionDataset
from fmrec.recommend.defaults import default_model
from fmrec.recommend.recommender import Recommender

__all__ = ["DesignMatrix", "FMClassifier", "FMRanker", "FMRegressor", "FeatureEncoder",
           "InteractionDataset", "Recommender", "RelationBlock", "TuneResult",
           "UniqueColumnWarning", "datasets", "default_model", "inspect", "load_model",
           "metrics", "openmp_enabled", "plot", "split", "tune"]


def __getattr__(name: str):
    # fmrec.tune needs Optuna, an optional dependency: import it on first use only.
    if name in ("tune", "TuneResult"):
        try:
            from fmrec import tuning
        except ImportError as exc:
            raise ImportError(f"fmrec.{name} needs Optuna: pip install 'fmrec[tune]' "
                              f"({exc})") from exc
        return getattr(tuning, name)
    raise AttributeError(f"module 'fmrec' has no attribute {name!r}")
