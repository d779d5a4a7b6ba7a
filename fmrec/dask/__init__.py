"""Training and encoding on a Dask cluster (``pip install 'fmrec[dask]'``).

The models these classes fit are ordinary fmrec models: ``to_local()`` returns an
``FMRegressor``/``FMClassifier``/``Recommender`` that is saved, loaded and used without Dask.
"""

try:
    import dask  # noqa: F401
    import distributed  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"fmrec.dask needs dask and distributed: pip install 'fmrec[dask]' "
                      f"({exc})") from exc

from fmrec.dask.encoder import DaskFeatureEncoder  # noqa: E402
from fmrec.dask.estimators import DaskFMClassifier, DaskFMRegressor  # noqa: E402
from fmrec.dask.recommender import DaskRecommender  # noqa: E402

__all__ = ["DaskFMClassifier", "DaskFMRegressor", "DaskFeatureEncoder", "DaskRecommender"]
