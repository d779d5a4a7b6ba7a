"""fmrec: Factorization Machines for recommenders."""

from fmrec._kernels._openmp import openmp_enabled
from fmrec.encoder import FeatureEncoder
from fmrec.estimators import FMClassifier, FMRegressor
from fmrec.persistence import load_model
from fmrec.recommender import Recommender

__all__ = ["FMClassifier", "FMRegressor", "FeatureEncoder", "Recommender", "load_model",
           "openmp_enabled"]
__version__ = "0.1.0"
