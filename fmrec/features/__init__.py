"""From pandas columns to the sparse one-hot rows an FM reads, and back to readable names."""

from fmrec.features._columns import UniqueColumnWarning
from fmrec.features.encoder import FeatureEncoder

__all__ = ["FeatureEncoder", "UniqueColumnWarning"]
