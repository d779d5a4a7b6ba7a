"""The estimators: FMRegressor and FMClassifier (pointwise) and FMRanker (BPR)."""

from fmrec.models.fm import FMClassifier, FMRegressor
from fmrec.models.ranker import FMRanker

__all__ = ["FMClassifier", "FMRanker", "FMRegressor"]
