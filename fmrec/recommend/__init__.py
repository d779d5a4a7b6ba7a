"""From interaction tables to FM rows, and from a fitted FM to top-N lists."""

from fmrec.recommend.dataset import InteractionDataset
from fmrec.recommend.recommender import Recommender

__all__ = ["InteractionDataset", "Recommender"]
