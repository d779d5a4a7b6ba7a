"""fmrec: Factorization Machines for recommenders."""

from fmrec import inspect, plot  # plot imports matplotlib only when a figure is drawn
from fmrec._kernels._openmp import openmp_enabled
from fmrec.encoder import FeatureEncoder
from fmrec.estimators import FMClassifier, FMRegressor
from fmrec.persistence import load_model
from fmrec.recommender import Recommender

__all__ = ["FMClassifier", "FMRegressor", "FeatureEncoder", "Recommender", "inspect",
           "load_model", "openmp_enabled", "plot"]
__version__ = "0.1.0"
