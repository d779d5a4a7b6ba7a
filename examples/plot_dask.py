"""
Training on a Dask cluster
==========================

When the interactions outgrow one machine, `fmrec.dask` trains the same models on a
`Dask <https://distributed.dask.org>`_ cluster (``pip install "fmrec[dask]"`` on the client
and the workers). Each worker encodes and keeps its share of the partitions; one round of
training is one SGD epoch on every shard, after which the client combines the parameters
the shards touched. The fitted model is an ordinary fmrec model.

This example starts two in-process workers; against a real cluster only the ``Client``
line changes (``Client("tcp://scheduler-host:8786")``).
"""

# %%
import tempfile
from pathlib import Path

import dask.dataframe as dd
from distributed import Client

import fmrec
from fmrec.dask import DaskFeatureEncoder, DaskFMRegressor
from fmrec.datasets import make_recsys
from fmrec.metrics import rmse

client = Client(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)

# %%
# The data, as Parquet files on shared storage would be (a local folder stands in for
# ``s3://bucket/ratings/``):
folder = Path(tempfile.mkdtemp())
data = make_recsys(n_users=400, n_items=300, n_interactions=20_000, random_state=0)
data.interactions.to_parquet(folder / "ratings.parquet")
ratings = dd.read_parquet(folder / "ratings.parquet").repartition(npartitions=4)
train, valid = ratings.random_split([0.9, 0.1], random_state=0)

# %%
# Training
# --------
# The encoder's vocabularies are counted on the cluster; each partition is encoded where
# it lives. ``eval_set`` is scored after every round and drives early stopping.
encoder = DaskFeatureEncoder(categorical=["user_id", "item_id", "device"]).fit(train)
model = DaskFMRegressor(n_factors=8, n_epochs=40, early_stopping_rounds=3, random_state=0,
                        client=client)
model.fit(encoder.transform(train), train["rating"],
          eval_set=(encoder.transform(valid), valid["rating"]))
print(f"{len(model.history_['train_loss'])} rounds, "
      f"{sum(model.sync_bytes_) / 1e6:.1f} MB of parameters exchanged")

# %%
# Predictions are a dask array, computed partition by partition:
lazy = model.predict(encoder.transform(valid))
print(f"validation RMSE {rmse(valid['rating'].compute(), lazy.compute()):.4f}")

# %%
# ``to_local`` gives the plain `fmrec.FMRegressor`, saved and loaded without Dask:
local = model.to_local()
local.save(folder / "model.npz")
print(type(fmrec.load_model(folder / "model.npz")).__name__)
fig = fmrec.plot.training_curves(local)
client.close()
