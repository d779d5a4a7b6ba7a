"""DaskRecommender: a Recommender whose interactions are a Dask DataFrame."""

from __future__ import annotations

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import clone, is_classifier
from sklearn.utils.validation import check_is_fitted

from fmrec._validation import resolve_dtype
from fmrec.dask._reduce import tree_reduce
from fmrec.dask.encoder import DaskFeatureEncoder
from fmrec.dask.estimators import DaskFMClassifier, DaskFMRegressor, _client
from fmrec.models._base import restore_on_failure
from fmrec.models.fm import FMClassifier, FMRegressor
from fmrec.recommend._entities import SEP, as_keys, check_keys, column_kinds
from fmrec.recommend.dataset import InteractionDataset, context_columns
from fmrec.recommend.recommender import Recommender

_DASK_PARAMS = ("client", "n_shards", "combine")


class DaskRecommender(Recommender):
    """:class:`fmrec.Recommender` fitted from a Dask DataFrame of interactions.

    Everything the Recommender learns is built on the cluster: the users and items (distinct
    ids reduced over partitions), the context encoder (a
    :class:`~fmrec.dask.DaskFeatureEncoder`), the seen matrix (per-partition counts summed in
    a reduction tree) and the model (:class:`~fmrec.dask.DaskFMRegressor` or
    :class:`~fmrec.dask.DaskFMClassifier`, data-parallel SGD over rows that each worker
    encodes from its own partitions). The fitted object is an ordinary Recommender:
    ``recommend``, ``predict`` and ``similar_items`` work in memory, ``to_local()`` drops
    the Dask settings, and ``save`` writes a file ``fmrec.load_model`` reads without Dask.
    ``predict`` and ``recommend`` also take dask collections and run per partition.

    Parameters
    ----------
    user_col, item_col, target, user_features, item_features, context, implicit, \
implicit_weight, random_state
        As in Recommender. ``target`` is required: implicit feedback (BPR or sampled
        negatives) is not trained on Dask. Side-feature tables are pandas DataFrames (one row
        per user or item).
    model : FMRegressor or FMClassifier, optional
        Template with ``solver="sgd"``; default ``FMRegressor(n_factors=16, solver="sgd",
        n_epochs=20)``.
    negatives, negative_sampling
        Kept for the Recommender's interface; unused (there are no sampled negatives).
    client, n_shards, combine
        As in :class:`~fmrec.dask.DaskFMRegressor`.

    Notes
    -----
    ``recommend`` ranks by the model alone (``target_weight=1``): the FMRanker that a
    Recommender blends in is not trained on Dask.

    The client holds what a fitted Recommender holds: the model, the encoders and the seen
    matrix (one entry per distinct (user, item) pair, so it grows with the interactions).
    """

    def __init__(self, user_col="user_id", item_col="item_id", target=None, model=None,
                 user_features=None, item_features=None, context=None, implicit=False,
                 implicit_weight=1.0, negatives=4, negative_sampling="uniform",
                 random_state=None, client=None, n_shards=None, combine="average"):
        super().__init__(user_col=user_col, item_col=item_col, target=target, model=model,
                         user_features=user_features, item_features=item_features,
                         context=context, implicit=implicit, implicit_weight=implicit_weight,
                         negatives=negatives, negative_sampling=negative_sampling,
                         random_state=random_state, target_weight=1.0)
        self.client = client
        self.n_shards = n_shards
        self.combine = combine

    def _default_model(self):
        cls = FMClassifier if self.model is not None and is_classifier(self.model) \
            else FMRegressor
        return cls(n_factors=16, solver="sgd", n_epochs=20)

    def _dask_model(self):
        if self.target is None:
            raise ValueError("DaskRecommender needs a target column (ratings or two-valued "
                             "labels): implicit feedback is not trained on Dask")
        template = self.model if self.model is not None else self._default_model()
        if not isinstance(template, FMRegressor | FMClassifier):
            raise TypeError(f"model must be an FMRegressor or FMClassifier, got "
                            f"{type(template).__name__}")
        if template.solver != "sgd":
            raise ValueError(f"Dask training runs SGD: the model's solver must be 'sgd', got "
                             f"{template.solver!r}")
        params = clone(template).get_params()
        if params["random_state"] is None and isinstance(self.random_state, int):
            params["random_state"] = self.random_state
        cls = DaskFMClassifier if is_classifier(template) else DaskFMRegressor
        return cls(**params, client=self.client, n_shards=self.n_shards, combine=self.combine)

    def fit(self, interactions) -> DaskRecommender:
        """Fit the encoders and the model on the cluster.

        Parameters
        ----------
        interactions : dask.dataframe.DataFrame
            ``user_col``, ``item_col``, ``target`` and the ``context`` columns.

        Returns
        -------
        self : DaskRecommender
        """
        if not isinstance(interactions, dd.DataFrame):
            raise TypeError(f"DaskRecommender.fit takes a dask DataFrame, got "
                            f"{type(interactions).__name__}; use Recommender for pandas")
        self._check_params()
        model = self._dask_model()
        client = _client(self.client)
        cols = context_columns(self.context)
        needed = [self.user_col, self.item_col, self.target, *cols]
        missing = [c for c in needed if c not in interactions.columns]
        if missing:
            raise ValueError(f"interactions has no column(s) {missing}; it has "
                             f"{list(interactions.columns)}")
        with restore_on_failure(self):
            self._fit_on(client, interactions[needed], model, cols)
        return self

    def _fit_on(self, client, ddf: dd.DataFrame, model, cols: list) -> None:
        self.__dict__.pop("model_", None)
        parts = ddf.to_delayed()
        checked = [dask.delayed(_check_partition, pure=True)(p, i, self.user_col, self.item_col,
                                                             self.target)
                   for i, p in enumerate(parts)]
        users, items = client.compute(tree_reduce(checked, _union_in_order)).result()
        if not len(users):
            raise ValueError("interactions is empty: nothing to fit")
        context_encoder = None
        if cols:
            sample = ddf[cols].head(1000, npartitions=-1)
            context_encoder = DaskFeatureEncoder(**column_kinds(sample, cols), standardize=True,
                                                 delimiter=SEP, drop_unique=True
                                                 ).fit(ddf[cols]).to_local()
        dataset = self.make_dataset().fit_entities(users, items, context_encoder)
        vocabularies = dask.delayed((dataset.user_vocab_, dataset.item_vocab_), pure=True)
        seen = [dask.delayed(_seen_counts, pure=True)(p, vocabularies, self.user_col,
                                                      self.item_col) for p in parts]
        dataset.add_seen(client.compute(tree_reduce(seen, _sum_sparse)).result())
        self.dataset_ = dataset
        # Workers build the training rows from their own partitions with the dataset.
        shared = dask.delayed(dataset, pure=True)
        dtype = resolve_dtype(model.dtype)
        width = dataset.n_features
        rows = [dask.delayed(_training_rows, pure=True, nout=2)(p, shared, dtype)
                for p in parts]
        meta = sp.csr_matrix((0, width), dtype=dtype)
        X = da.concatenate([da.from_delayed(r[0], (np.nan, width), dtype=dtype, meta=meta)
                            for r in rows])
        y = da.concatenate([da.from_delayed(r[1], (np.nan,), dtype=object if
                                            is_classifier(model) else np.float64)
                            for r in rows])
        model.fit(X, y)
        self.model_ = model.to_local()
        if dataset.classifier:
            dataset.classes_ = self.model_.classes_  # what later targets are checked against

    def _skeleton(self) -> Recommender:
        """A plain Recommender with this one's encoders and seen matrix (and model, once
        fitted): what a worker needs to encode or score a partition."""
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in _DASK_PARAMS}
        local = Recommender(**params, target_weight=1.0)  # no ranker is trained on Dask
        local.__dict__.update({k: v for k, v in self.__dict__.items() if k not in params
                               and k not in _DASK_PARAMS})
        return local

    def to_local(self) -> Recommender:
        """The fitted recommender as a plain :class:`fmrec.Recommender` (no Dask needed)."""
        check_is_fitted(self, "model_")
        return self._skeleton()

    def save(self, path) -> None:
        """Write the fitted recommender to ``path`` as a plain Recommender (see ``to_local``)."""
        self.to_local().save(path)

    def predict(self, df):
        """Scores of (user, item[, context]) rows; a dask Series for a dask DataFrame."""
        if isinstance(df, dd.DataFrame):
            check_is_fitted(self, "model_")
            local = dask.delayed(self.to_local(), pure=True)
            return df.map_partitions(_predict_partition, local,
                                     meta=pd.Series(dtype=np.float64))
        return super().predict(df)

    def recommend(self, user_ids, n: int = 10, exclude_seen: bool = True, items=None,
                  context=None, history=None, unknown: str = "error"):
        """Top-``n`` lists as in Recommender; for a dask Series of user ids, a dask DataFrame
        computed per partition on the workers."""
        if isinstance(user_ids, dd.Series):
            check_is_fitted(self, "model_")
            local = dask.delayed(self.to_local(), pure=True)
            meta = self.to_local().recommend(self.users_[:1], n=1).iloc[:0]
            return user_ids.map_partitions(
                _recommend_partition, local, n, exclude_seen, items, context, history, unknown,
                meta=meta)
        return super().recommend(user_ids, n=n, exclude_seen=exclude_seen, items=items,
                                 context=context, history=history, unknown=unknown)


def _check_partition(df: pd.DataFrame, index: int, user_col, item_col, target) -> tuple:
    """(distinct users, distinct items) of a partition, in order of first appearance."""
    for col in (user_col, item_col, target):
        check_keys(df, col, f"interactions partition {index}:")
    return as_keys(pd.unique(df[user_col])), as_keys(pd.unique(df[item_col]))


def _union_in_order(pieces: list[tuple]) -> tuple:
    return tuple(as_keys(pd.unique(np.concatenate([p[i].astype(object) for p in pieces])))
                 for i in range(2))


def _seen_counts(df: pd.DataFrame, vocabularies, user_col, item_col) -> sp.csr_matrix:
    users, items = vocabularies
    u, i = users.index(df[user_col]), items.index(df[item_col])
    shape = (users.widths[0], items.widths[0])
    return sp.coo_matrix((np.ones(len(u)), (u, i)), shape=shape).tocsr()


def _sum_sparse(pieces: list) -> sp.csr_matrix:
    total = pieces[0].tocsr()
    for piece in pieces[1:]:
        total = total + piece
    return total


def _training_rows(df: pd.DataFrame, dataset: InteractionDataset, dtype) -> tuple:
    df = df.reset_index(drop=True)
    cols = dataset.context_cols
    X = dataset.design(df[dataset.user_col].to_numpy(), df[dataset.item_col].to_numpy(),
                       df[cols] if cols else None)
    return X.to_csr(dtype), df[dataset.target].to_numpy()


def _predict_partition(df: pd.DataFrame, rec: Recommender) -> pd.Series:
    return pd.Series(rec.predict(df), index=df.index, dtype=np.float64)


def _recommend_partition(users: pd.Series, rec: Recommender, *args) -> pd.DataFrame:
    n, exclude_seen, items, context, history, unknown = args
    if not len(users):
        return rec.recommend(rec.users_[:1], n=1).iloc[:0]
    return rec.recommend(users.to_numpy(), n=n, exclude_seen=exclude_seen, items=items,
                         context=context, history=history, unknown=unknown)
