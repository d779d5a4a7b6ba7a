"""DaskFMRegressor and DaskFMClassifier: the fmrec estimators, trained on a Dask cluster."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from fmrec import _validation as v
from fmrec._links import LOGISTIC, SQUARE
from fmrec.dask._collections import aligned_partitions, column_names, is_dask, n_columns
from fmrec.dask._training import (
    DistributedEval,
    DistributedSGD,
    distinct_labels,
    shard_futures,
    shard_summary,
)
from fmrec.models._base import check_warm
from fmrec.models.fm import FMClassifier, FMRegressor


def _client(client):
    """The given client, else the default one (``distributed.default_client``)."""
    if client is not None:
        return client
    from distributed import default_client

    try:
        return default_client()
    except ValueError as exc:
        raise ValueError("no Dask client: pass client=distributed.Client(...) or create one "
                         "first (it becomes the default)") from exc


class _DaskFM:
    """What DaskFMRegressor and DaskFMClassifier add to their in-memory bases.

    ``fit`` takes dask collections and runs data-parallel SGD (``fmrec.dask._training``);
    the fitted attributes are those of the base class, so the fitted estimator predicts
    in memory like any other, and on dask collections partition by partition.
    """

    _local_class: type

    def _get_client(self):
        return _client(self.client)

    def _check_dask_hyperparameters(self) -> None:
        if self.solver != "sgd":
            raise ValueError(f"Dask training runs SGD (data-parallel passes with averaging); "
                             f"solver must be 'sgd', got {self.solver!r}")
        v.check_interval("n_shards", self.n_shards, low=1, integer=True, allow_none=True)
        v.check_choice("combine", self.combine, {"sum", "average"})

    def fit(self, X, y, sample_weight=None, eval_set=None, callbacks=None):
        """Fit on a Dask cluster, starting afresh unless ``warm_start`` is set.

        Parameters
        ----------
        X : dask.array.Array or dask.dataframe.DataFrame
            Row partitions of the design matrix: array chunks may be dense or
            ``scipy.sparse`` (e.g. from :class:`fmrec.dask.DaskFeatureEncoder`); DataFrame
            columns must be numeric.
        y : dask.array.Array or dask.dataframe.Series
            Targets (labels for the classifier), partitioned like X.
        sample_weight : dask.array.Array or dask.dataframe.Series, optional
            Non-negative row weights, partitioned like X.
        eval_set : tuple (X_val, y_val) or (X_val, y_val, sample_weight_val), optional
            Dask collections; the validation metric (rmse, mae or logloss) is computed on the
            workers after every round and drives ``early_stopping_rounds``.
        callbacks : sequence of callables, optional
            As in the in-memory estimators: ``callback(estimator, epoch, logs)`` after every
            round, on the client; returning True stops.

        Returns
        -------
        self
        """
        warm = self.warm_start and hasattr(self, "V_")
        return self._fit(X, y, sample_weight, eval_set, callbacks, self.n_epochs,
                         reset=not warm)

    def partial_fit(self, X, y, sample_weight=None, **fit_params):
        """Run one round over (X, y) on the cluster, continuing from the current parameters."""
        return self._fit(X, y, sample_weight, fit_params.get("eval_set"),
                         fit_params.get("callbacks"), 1, reset=not hasattr(self, "V_"),
                         classes=fit_params.get("classes"))

    def _fit_unsafe(self, X, y, sample_weight, eval_set, callbacks, n_epochs, reset, classes,
                    partial=False):
        self._check_hyperparameters()
        self._check_dask_hyperparameters()
        if not (is_dask(X) and is_dask(y)):
            raise TypeError(f"{type(self).__name__}.fit takes dask collections (X "
                            f"{type(X).__name__}, y {type(y).__name__}); for data in memory "
                            f"use {self._local_class.__name__}")
        client = self._get_client()
        dtype = v.resolve_dtype(self.dtype)
        n_features = n_columns(X)
        v.check_model_size(n_features, self.n_factors, dtype)
        if not reset:
            check_warm(self, dtype, n_features)
        partitions = aligned_partitions(X, y, sample_weight)
        labels = self._dask_classes(client, partitions, reset, classes)
        shards = shard_futures(client, partitions, self.n_shards, n_features, dtype, labels)
        summaries = client.gather([client.submit(shard_summary, s, pure=False)
                                   for s in shards])
        counts = np.zeros(n_features)
        for summary in summaries:
            counts[summary["features"]] += summary["counts"]
        weight = sum(s["weight"] for s in summaries)
        if weight <= 0:
            raise ValueError("the training data has no rows with positive weight")
        n_threads = v.resolve_n_jobs(self.n_jobs)
        rng = check_random_state(self.random_state)
        # The intercept starts at the (weighted) mean target, as in memory: one row holding it.
        mean = np.array([sum(s["y_sum"] for s in summaries) / weight])
        state, accumulators = self._starting_state(counts, mean, np.ones(1), dtype, rng, reset)
        # The client keeps its own AdaGrad sums (copies when continuing): the rounds update
        # them in place.
        if accumulators is None:
            accumulators = (np.zeros(1, dtype), np.zeros_like(state.w), np.zeros_like(state.V))
        if reset:
            self.n_features_in_ = n_features
            names = column_names(X)
            if names is not None:
                self.feature_names_in_ = names
            else:
                self.__dict__.pop("feature_names_in_", None)
        if self._loss == SQUARE:
            self._widen_y_range(min(s["y_min"] for s in summaries),
                                max(s["y_max"] for s in summaries), reset)
        evaluation = self._dask_eval_set(client, eval_set, n_features, dtype)
        if evaluation is None and self.early_stopping_rounds is not None:
            warnings.warn("early_stopping_rounds needs an eval_set; every round will run",
                          UserWarning, stacklevel=4)
        hp = dict(self._solver_hyperparameters(), combine=self.combine)
        solver = DistributedSGD(client, shards, summaries, state, accumulators, counts,
                                hp, self._loss,
                                int(rng.randint(np.iinfo(np.int32).max)), self.n_jobs,
                                first_epoch=len(self.history_["train_loss"]))
        self._publish(state)
        self.n_shards_ = len(shards)
        self.sync_bytes_ = []
        with threadpool_limits(limits=1, user_api="blas"):
            try:
                self._run_epochs(solver, state, evaluation, callbacks or (), n_epochs,
                                 n_threads)
            finally:
                self.sync_bytes_ = list(solver.sync_bytes)
        self._accumulators = accumulators
        self.n_epochs_ = len(self.history_["train_loss"])

    def _dask_classes(self, client, partitions, reset: bool, classes):
        return None

    def _dask_eval_set(self, client, eval_set, n_features: int, dtype):
        eval_set = v.check_eval_set(eval_set)
        if eval_set is None:
            return None
        X_val, y_val, w_val = eval_set
        if not (is_dask(X_val) and is_dask(y_val)):
            raise TypeError("eval_set must hold dask collections, like X and y")
        if n_columns(X_val) != n_features:
            raise ValueError(f"eval_set X has {n_columns(X_val)} features, X has {n_features}")
        partitions = aligned_partitions(X_val, y_val, w_val)
        labels = getattr(self, "classes_", None) if self._loss == LOGISTIC else None
        shards = shard_futures(client, partitions, self.n_shards, n_features, dtype, labels)
        summaries = client.gather([client.submit(shard_summary, s, pure=False)
                                   for s in shards])
        link = "sigmoid" if self._loss == LOGISTIC else "identity"
        return DistributedEval(client, shards, summaries, self._metric_name(), link)

    def _score_eval_set(self, evaluation, metric, n_threads: int) -> float:
        y_range = None
        if self._loss == SQUARE and self.clip_predictions:
            y_range = self.y_range_
        return evaluation.score(self.w0_, self.w_, self.V_, y_range)

    # --------------------------------------------------------------------- in memory
    def to_local(self):
        """The fitted model as a plain ``FMRegressor``/``FMClassifier`` (no Dask needed).

        Returns
        -------
        FMRegressor or FMClassifier
            Same hyperparameters and fitted attributes; ``save`` and ``fmrec.load_model``
            treat it like any other fitted model.
        """
        check_is_fitted(self, "V_")
        params = {k: val for k, val in self.get_params().items()
                  if k not in ("client", "n_shards", "combine")}
        local = self._local_class(**params)
        for name, value in self.__dict__.items():
            if name.endswith("_") and not name.startswith("__") or name == "_accumulators":
                if name not in ("n_shards_", "sync_bytes_"):
                    setattr(local, name, value)
        return local

    def save(self, path) -> None:
        """Write the fitted model to ``path`` as its in-memory class (see ``to_local``)."""
        self.to_local().save(path)

    def _map_rows(self, X, method: str, width: int | None):
        """``method`` of the in-memory model applied to every partition of X, lazily."""
        model = dask.delayed(self.to_local(), pure=True)
        if isinstance(X, dd.DataFrame):
            meta = (pd.Series(dtype=np.float64) if width is None
                    else pd.DataFrame({i: pd.Series(dtype=np.float64) for i in range(width)}))
            if method == "predict" and self._loss == LOGISTIC:
                meta = pd.Series(self.classes_[:0])
            return X.map_partitions(_apply, model, method, meta=meta)
        if not isinstance(X, da.Array) or X.ndim != 2:
            raise TypeError(f"X must be a 2-D dask array or a dask DataFrame, got "
                            f"{type(X).__name__}")
        if len(X.chunks[1]) > 1:
            X = X.rechunk({1: -1})
        labels = method == "predict" and self._loss == LOGISTIC
        dtype = self.classes_.dtype if labels else np.float64
        blocks = []
        for part, rows in zip(X.to_delayed()[:, 0], X.chunks[0], strict=True):
            shape = (rows,) if width is None else (rows, width)
            blocks.append(da.from_delayed(dask.delayed(_apply)(part, model, method), shape,
                                          dtype=dtype, meta=np.empty((0,) * len(shape), dtype)))
        return da.concatenate(blocks, axis=0)


def _apply(part, model, method: str):
    out = getattr(model, method)(part)
    if isinstance(part, pd.DataFrame):
        return (pd.Series(out, index=part.index) if out.ndim == 1
                else pd.DataFrame(out, index=part.index))
    return out




class DaskFMRegressor(_DaskFM, FMRegressor):
    """:class:`fmrec.FMRegressor` trained by data-parallel SGD on a Dask cluster.

    Same parameters as FMRegressor (``solver`` must be ``"sgd"``, the default here), plus
    ``client``, ``n_shards`` and ``combine``. Each round (one of ``n_epochs``) runs the
    SGD/AdaGrad kernel over every worker's rows from the current parameters, then averages
    the rows of w and V each worker touched (weighted by how often its rows use them); only
    those rows travel, so a round moves O(touched features · n_factors) numbers, never the
    data.
    Early stopping reads a distributed ``eval_set``. A worker lost during a fit is replaced
    by Dask's recomputation of its shard, with the same result.

    The fitted estimator predicts in memory like an FMRegressor, and on dask collections
    (``predict`` returns a dask array, or a dask Series for a dask DataFrame) partition by
    partition on the workers. ``to_local()`` gives a plain FMRegressor.

    Parameters
    ----------
    n_factors, solver, n_epochs, learning_rate, ... : see FMRegressor
    client : distributed.Client, optional
        The cluster to train on; default: the current default client.
    n_shards : int, optional
        How many shards the training rows are split into (one per worker by default):
        shard s holds partitions s, s + n_shards, ... and runs on the s-th worker.
    combine : {"average", "sum"}, default="average"
        How a round folds the shards' parameters together (touched rows only). "average"
        is model averaging: a row becomes the average of the shards' values, weighted by how
        often each shard's rows use it (AdaGrad sums alike). It is right when a shard's pass
        settles a parameter, as it does for frequent features on large data: on 1M
        synthetic rows one averaged round scored 0.691 validation RMSE (one in-memory pass:
        0.711). "sum" adds every shard's change instead, what one pass over all the rows
        makes of them to first order. It keeps the in-memory progress per round when the
        shards see each parameter only a few times a round (MovieLens ids: 2 to 8 shards),
        but overshoots parameters that every shard settles: 0.885 after the same round.

    Attributes
    ----------
    As FMRegressor, plus ``n_shards_`` (shards used) and ``sync_bytes_`` (bytes of
    parameters sent and received per round).

    Examples
    --------
    >>> import dask.array as da, numpy as np, scipy.sparse as sp
    >>> from distributed import Client
    >>> from fmrec.dask import DaskFMRegressor
    >>> client = Client(processes=False, n_workers=2, threads_per_worker=1,
    ...                 dashboard_address=None)
    >>> X = sp.random(400, 30, density=0.1, format="csr", random_state=0)
    >>> y = np.asarray(X.sum(axis=1)).ravel()
    >>> dX = da.from_array(X, chunks=(100, 30), asarray=False)
    >>> dy = da.from_array(y, chunks=100)
    >>> model = DaskFMRegressor(n_factors=4, n_epochs=5, random_state=0).fit(dX, dy)
    >>> model.predict(dX).compute().shape
    (400,)
    >>> type(model.to_local()).__name__
    'FMRegressor'
    >>> client.close()
    """

    _local_class = FMRegressor

    def __init__(self, n_factors: int = 8, *, client=None, n_shards: int | None = None,
                 combine: str = "average", solver: str = "sgd", n_epochs: int = 50,
                 learning_rate: float = 0.05,
                 lr_schedule: str = "adagrad", reg_bias: float = 0.0, reg_linear: float = 0.5,
                 reg_factors: float = 1.0, reg_power: float = 0.5, init_std: float = 0.1,
                 fit_intercept: bool = True, fit_linear: bool = True,
                 eval_metric: str | None = None, early_stopping_rounds: int | None = None,
                 tol: float = 0.0, dtype: str = "float32", random_state=None,
                 n_jobs: int | None = 1, warm_start: bool = False, verbose: int = 0,
                 n_burn_in: int = 10, n_samples: int | None = None, groups=None,
                 clip_predictions: bool = True):
        super().__init__(
            n_factors, solver=solver, n_epochs=n_epochs, learning_rate=learning_rate,
            lr_schedule=lr_schedule, reg_bias=reg_bias, reg_linear=reg_linear,
            reg_factors=reg_factors, reg_power=reg_power, init_std=init_std,
            fit_intercept=fit_intercept, fit_linear=fit_linear, eval_metric=eval_metric,
            early_stopping_rounds=early_stopping_rounds, tol=tol, dtype=dtype,
            random_state=random_state, n_jobs=n_jobs, warm_start=warm_start, verbose=verbose,
            n_burn_in=n_burn_in, n_samples=n_samples, groups=groups,
            clip_predictions=clip_predictions)
        self.client = client
        self.n_shards = n_shards
        self.combine = combine

    def predict(self, X, return_std: bool = False):
        """Predicted targets; a dask collection of them for dask input (lazy)."""
        if is_dask(X):
            if return_std:
                raise ValueError("return_std=True needs a model fitted with solver='mcmc'")
            check_is_fitted(self, "V_")
            return self._map_rows(X, "predict", None)
        return super().predict(X, return_std=return_std)


class DaskFMClassifier(_DaskFM, FMClassifier):
    """:class:`fmrec.FMClassifier` trained by data-parallel SGD on a Dask cluster.

    Same parameters as FMClassifier (``solver`` must be ``"sgd"``, the default here;
    ``eval_metric`` "logloss", as AUC does not split into per-row sums), plus ``client``
    ``n_shards`` and ``combine``. Training, prediction and ``to_local`` work as in
    :class:`DaskFMRegressor`; the labels' distinct values are found on the cluster.

    Parameters
    ----------
    n_factors, solver, n_epochs, learning_rate, ... : see FMClassifier
    client : distributed.Client, optional
        The cluster to train on; default: the current default client.
    n_shards : int, optional
        How many shards the training rows are split into (one per worker by default):
        shard s holds partitions s, s + n_shards, ... and runs on the s-th worker.
    combine : {"average", "sum"}, default="average"
        How a round folds the shards' parameters together (touched rows only). "average"
        is model averaging: a row becomes the average of the shards' values, weighted by how
        often each shard's rows use it (AdaGrad sums alike). It is right when a shard's pass
        settles a parameter, as it does for frequent features on large data: on 1M
        synthetic rows one averaged round scored 0.691 validation RMSE (one in-memory pass:
        0.711). "sum" adds every shard's change instead, what one pass over all the rows
        makes of them to first order. It keeps the in-memory progress per round when the
        shards see each parameter only a few times a round (MovieLens ids: 2 to 8 shards),
        but overshoots parameters that every shard settles: 0.885 after the same round.
    """

    _local_class = FMClassifier

    def __init__(self, n_factors: int = 8, *, client=None, n_shards: int | None = None,
                 combine: str = "average", solver: str = "sgd", n_epochs: int = 50,
                 learning_rate: float = 0.05,
                 lr_schedule: str = "adagrad", reg_bias: float = 0.0, reg_linear: float = 0.5,
                 reg_factors: float = 1.0, reg_power: float = 0.5, init_std: float = 0.1,
                 fit_intercept: bool = True, fit_linear: bool = True,
                 eval_metric: str | None = None, early_stopping_rounds: int | None = None,
                 tol: float = 0.0, dtype: str = "float32", random_state=None,
                 n_jobs: int | None = 1, warm_start: bool = False, verbose: int = 0,
                 n_burn_in: int = 10, n_samples: int | None = None, groups=None):
        super().__init__(
            n_factors, solver=solver, n_epochs=n_epochs, learning_rate=learning_rate,
            lr_schedule=lr_schedule, reg_bias=reg_bias, reg_linear=reg_linear,
            reg_factors=reg_factors, reg_power=reg_power, init_std=init_std,
            fit_intercept=fit_intercept, fit_linear=fit_linear, eval_metric=eval_metric,
            early_stopping_rounds=early_stopping_rounds, tol=tol, dtype=dtype,
            random_state=random_state, n_jobs=n_jobs, warm_start=warm_start, verbose=verbose,
            n_burn_in=n_burn_in, n_samples=n_samples, groups=groups)
        self.client = client
        self.n_shards = n_shards
        self.combine = combine

    def _dask_classes(self, client, partitions, reset: bool, classes):
        if not reset:
            return self.classes_
        found = distinct_labels(client, partitions)
        labels = np.unique(classes) if classes is not None else found
        if len(labels) != 2:
            raise ValueError(f"Only binary classification is supported: y needs exactly 2 "
                             f"classes, got {len(labels)}: {labels[:10].tolist()}")
        if classes is not None and not np.isin(found, labels).all():
            raise ValueError(f"y has labels outside classes={labels.tolist()}")
        self.classes_ = labels
        return labels

    def predict(self, X):
        """The more likely class of each row; lazy for dask input."""
        if is_dask(X):
            check_is_fitted(self, "V_")
            return self._map_rows(X, "predict", None)
        return super().predict(X)

    def predict_proba(self, X):
        """Columns P(classes_[0]), P(classes_[1]); lazy for dask input."""
        if is_dask(X):
            check_is_fitted(self, "V_")
            return self._map_rows(X, "predict_proba", 2)
        return super().predict_proba(X)

    def decision_function(self, X):
        """The FM output ŷ (log-odds of ``classes_[1]``); lazy for dask input."""
        if is_dask(X):
            check_is_fitted(self, "V_")
            return self._map_rows(X, "decision_function", None)
        return super().decision_function(X)
