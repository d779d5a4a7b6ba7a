"""fmrec: Factorization Machines for recommenders."""

from fmrec import inspect, plot  # plot imports matplotlib only when a figure is drawn
from fmrec._kernels._openmp import openmp_enabled
from fmrec.encoder import FeatureEncoder
from fmrec.estimators import FMClassifier, FMRegressor
from fmrec.persistence import load_model
from fmrec.ranker import FMRanker
from fmrec.recommender import Recommender

__all__ = ["FMClassifier", "FMRanker", "FMRegressor", "FeatureEncoder", "Recommender",
           "TuneResult",
           "inspect", "load_model", "openmp_enabled", "plot", "tune"]
__version__ = "0.1.0"


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
