"""fmrec.dask: data-parallel SGD on a LocalCluster of worker processes.

The round is checked against the NumPy SGD reference (each shard's pass, then the combining
rule), the fit against the in-memory SGD model on MovieLens 100K, and the cluster behaviour
(no training data on the client, a worker killed mid-fit) on synthetic data.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp

da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import pandas as pd  # noqa: E402
import reference as R  # noqa: E402

from fmrec import FMClassifier, FMRegressor, load_model  # noqa: E402
from fmrec.dask import DaskFMClassifier, DaskFMRegressor  # noqa: E402
from fmrec.dask._training import (  # noqa: E402
    DistributedSGD,
    build_shard,
    shard_futures,
    shard_summary,
)
from fmrec.datasets import load_ml100k_split, make_fm_regression, one_hot_user_item  # noqa: E402
from fmrec.metrics import rmse  # noqa: E402

HP = {"learning_rate": 0.05, "lr_schedule": "adagrad", "reg_bias": 0.01, "reg_linear": 0.2,
      "reg_factors": 0.3, "reg_power": 0.5, "fit_intercept": True, "fit_linear": True}


@pytest.fixture(scope="module")
def client(dask_client):
    return dask_client


def dask_rows(X, y=None, chunk=100):
    dX = da.from_array(sp.csr_matrix(X), chunks=(chunk, X.shape[1]), asarray=False)
    return dX if y is None else (dX, da.from_array(np.asarray(y), chunks=chunk))


def synthetic(n=600, d=40, seed=0):
    X, y, _ = make_fm_regression(n_samples=n, n_features=d, n_factors=3, noise=0.1,
                                 random_state=seed)
    return sp.csr_matrix(X, dtype=np.float64), y


# ------------------------------------------------------------------ one round, exactly
def reference_round(X, y, parts, shards, seeds, params, counts, total, combine):
    """Each shard's pass by the NumPy reference over its rows (in the order the kernel's
    seeded generator gives them), then the combining rule written out row by row."""
    w0, w, V, acc = params
    p = HP["reg_power"]
    reg_scale = np.where(counts > 0, np.maximum(counts, 1e-300) ** (p - 1.0), 0.0)
    results = []
    for shard_parts, seed in zip(shards, seeds, strict=True):
        rng = np.random.RandomState(seed)
        state = (w0, w, V, acc)
        for j in rng.permutation(len(shard_parts)):
            lo, hi = parts[shard_parts[j]]
            order = lo + rng.permutation(hi - lo)
            s = np.ones(X.shape[0])
            out = R.sgd_epoch(X, y, s, order, *state[:3], loss=R.SQUARE,
                              learning_rate=HP["learning_rate"], adagrad=True,
                              reg_bias=HP["reg_bias"] * total ** (p - 1.0),
                              reg_linear=HP["reg_linear"], reg_factors=HP["reg_factors"],
                              reg_scale=reg_scale, acc=state[3])
            state = out[:4]
        results.append((state, np.unique(X[np.concatenate(
            [np.arange(*parts[i]) for i in shard_parts])].indices)))
    # Start values and each shard's result as lists [w0, w, V, a0, aw, aV].
    before = [w0, w, V, *acc]
    after = [[st[0], st[1], st[2], *st[3]] for st, _ in results]
    new = [np.array(p, dtype=np.float64, copy=True) for p in before]
    rows = [sum(parts[i][1] - parts[i][0] for i in shard) for shard in shards]
    uses = [np.bincount(X[np.concatenate([np.arange(*parts[i]) for i in shard])].indices,
                        minlength=X.shape[1]) for shard in shards]
    for p in (0, 3):  # w0 and its AdaGrad sum: every shard touches them
        if combine == "sum":
            new[p] = before[p] + sum(a[p] - before[p] for a in after)
        else:
            new[p] = sum(r * a[p] for r, a in zip(rows, after, strict=True)) / sum(rows)
    for j in range(X.shape[1]):
        touching = [s for s in range(len(shards)) if j in results[s][1]]
        for p in (1, 2, 4, 5):
            if not touching:
                continue
            if combine == "sum":
                new[p][j] = before[p][j] + sum(after[s][p][j] - before[p][j] for s in touching)
            else:
                new[p][j] = (sum(uses[s][j] * after[s][p][j] for s in touching)
                             / sum(uses[s][j] for s in touching))
    new_w0, new_w, new_V, new_a = new[0], new[1], new[2], new[3:]
    return new_w0, new_w, new_V, new_a


@pytest.mark.parametrize("combine", ["sum", "average"])
def test_one_round_matches_the_numpy_reference(client, combine):
    X, y = synthetic(n=240, d=30)
    # Partitions 0 and 2 (shard 0) use columns 0-19 only, 1 and 3 (shard 1) columns 10-29:
    # the shards share 10.
    X = X.tolil()
    for lo in (0, 120):
        X[lo:lo + 60, 20:] = 0
        X[lo + 60:lo + 120, :10] = 0
    X = sp.csr_matrix(X)
    X.eliminate_zeros()
    dX, dy = dask_rows(X, y, chunk=60)  # partitions 0..3; shard 0 gets 0 and 2
    from fmrec.dask._collections import aligned_partitions

    partitions = aligned_partitions(dX, dy)
    shards = shard_futures(client, partitions, 2, X.shape[1], np.float64, None)
    summaries = client.gather([client.submit(shard_summary, s) for s in shards])
    counts = np.zeros(X.shape[1])
    for s in summaries:
        counts[s["features"]] += s["counts"]
    np.testing.assert_array_equal(counts, np.bincount(X.indices, minlength=X.shape[1]))
    rng = np.random.default_rng(3)
    w0, w, V = 0.3, rng.normal(0, 0.1, 30), rng.normal(0, 0.1, (30, 4))
    acc = (0.5, rng.uniform(0, 1, 30), rng.uniform(0, 1, (30, 4)))
    from fmrec.solvers._state import FMState

    state = FMState(w0, w.copy(), V.copy())
    accumulators = (np.array([acc[0]]), acc[1].copy(), acc[2].copy())
    solver = DistributedSGD(client, shards, summaries, state, accumulators, counts,
                            dict(HP, combine=combine), 0, seed=11, n_jobs=1)
    seeds = [solver._seed(0), solver._seed(1)]
    solver.epoch()
    parts = [(0, 60), (60, 120), (120, 180), (180, 240)]
    ref = reference_round(X, y, parts, [[0, 2], [1, 3]], seeds, (w0, w, V, acc), counts,
                          float(len(y)), combine)
    assert state.w0[0] == pytest.approx(ref[0], rel=1e-9)
    np.testing.assert_allclose(state.w, ref[1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(state.V, ref[2], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(accumulators[1], ref[3][1], rtol=1e-9)
    np.testing.assert_allclose(accumulators[2], ref[3][2], rtol=1e-9)
    # Each round moves only the touched rows' parameters: 20 + 20 of 30 columns.
    sizes = [len(s["features"]) for s in summaries]
    assert sizes == [20, 20]


def test_build_shard_renumbers_columns_and_keeps_values():
    X = sp.csr_matrix(np.array([[0, 2.0, 0, 0, 1.0], [0, 0, 0, 3.0, 0]]))
    shard = build_shard([(X, np.array([1.0, 2.0]), None)], [0], 5, np.float64, None)
    np.testing.assert_array_equal(shard.features, [1, 3, 4])
    local, y, w = shard.parts[0]
    np.testing.assert_array_equal(local.toarray(), X[:, [1, 3, 4]].toarray())
    np.testing.assert_array_equal(shard.counts, [1, 1, 1])
    assert (shard.y_min, shard.y_max, shard.y_sum, shard.weight) == (1.0, 2.0, 3.0, 2.0)


# ------------------------------------------------------------------------ MovieLens
def test_movielens_rmse_within_one_percent_of_single_machine_sgd(client, ml100k_dir):
    train, test = load_ml100k_split("u1", ml100k_dir)
    X, y = one_hot_user_item(train), train["rating"].to_numpy(np.float64)
    X_test, y_test = one_hot_user_item(test), test["rating"].to_numpy(np.float64)
    val = np.random.default_rng(0).random(len(y)) < 0.1
    settings = {"n_factors": 8, "solver": "sgd", "learning_rate": 0.02, "reg_linear": 0.1,
                "reg_factors": 1.0, "reg_power": 0.5, "init_std": 0.01, "n_epochs": 400,
                "early_stopping_rounds": 10, "random_state": 0}
    local = FMRegressor(**settings).fit(X[~val], y[~val], eval_set=(X[val], y[val]))
    start = time.perf_counter()
    model = DaskFMRegressor(**settings, client=client).fit(
        *dask_rows(X[~val], y[~val], chunk=8000), eval_set=dask_rows(X[val], y[val], 8000))
    seconds = time.perf_counter() - start
    local_rmse = rmse(y_test, local.predict(X_test))
    dask_rmse = rmse(y_test, model.predict(X_test))
    print(f"u1.test RMSE: single machine {local_rmse:.4f} ({local.best_epoch_ + 1} epochs), "
          f"Dask on 2 workers {dask_rmse:.4f} ({model.best_epoch_ + 1} rounds, {seconds:.1f} s, "
          f"{np.mean(model.sync_bytes_) / 1e6:.2f} MB of parameters per round)")
    assert dask_rmse <= 1.01 * local_rmse
    # Predictions map over the partitions on the workers and equal the in-memory ones.
    lazy = model.predict(dask_rows(X_test, chunk=5000))
    assert lazy.chunks[0] == dask_rows(X_test, chunk=5000).chunks[0]
    np.testing.assert_allclose(lazy.compute(), model.predict(X_test), rtol=1e-6)


# ------------------------------------------------------------------- cluster behaviour
def test_training_data_never_reaches_the_client(client, monkeypatch):
    """Everything the client receives during a fit is recorded: it stays a small fraction
    of the training data, and each round moves O(touched features · k) numbers."""
    rng = np.random.default_rng(0)
    n, d, nnz = 40_000, 2_000, 10
    # Shard 0 (even partitions) uses the first half of the columns, shard 1 the second.
    half = np.repeat(np.arange(n) // 4000 % 2, nnz) * (d // 2)
    cols = rng.integers(0, d // 2, n * nnz) + half
    X = sp.csr_matrix((np.ones(n * nnz), cols, np.arange(0, n * nnz + 1, nnz)), shape=(n, d))
    X.sum_duplicates()
    y = rng.normal(3.0, 1.0, n)
    data_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes + y.nbytes

    received = []
    original_gather = distributed.Client.gather

    def recording_gather(self, futures, *args, **kwargs):
        out = original_gather(self, futures, *args, **kwargs)
        received.append(_nbytes(out))
        return out

    monkeypatch.setattr(distributed.Client, "gather", recording_gather)
    original_result = distributed.Future.result

    def recording_result(self, *args, **kwargs):
        out = original_result(self, *args, **kwargs)
        received.append(_nbytes(out))
        return out

    monkeypatch.setattr(distributed.Future, "result", recording_result)
    model = DaskFMRegressor(n_factors=4, n_epochs=3, random_state=0, client=client).fit(
        *dask_rows(X, y, chunk=4000))
    assert received, "the fit gathered nothing: the recording is not in the path"
    print(f"data {data_bytes / 1e6:.1f} MB; the client received {sum(received) / 1e6:.2f} MB "
          f"in {len(received)} transfers, the largest {max(received) / 1e6:.3f} MB")
    assert max(received) < data_bytes / 20
    assert sum(received) < data_bytes / 5
    # A round sends and receives the shard's own rows of w, V and their AdaGrad sums (float32)
    # with w0 and its sum, and sends the shard's counts (float64).
    touched, k = d // 2, 4
    per_shard = 2 * 4 * (2 + touched * (2 + 2 * k)) + 8 * touched
    assert model.n_shards_ == 2
    assert model.sync_bytes_ == [2 * per_shard] * 3
    everything = 2 * (2 * 4 * (2 + d * (2 + 2 * k)) + 8 * d)  # had each shard every column
    assert model.sync_bytes_[0] < 0.55 * everything


def _nbytes(obj) -> int:
    from dask.sizeof import sizeof

    return int(sizeof(obj))


def test_a_worker_killed_mid_fit_is_survived_with_the_same_result(tmp_path):
    X, y = synthetic(n=60_000, d=300, seed=1)
    settings = {"n_factors": 8, "n_epochs": 6, "random_state": 0, "learning_rate": 0.02}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        dX, dy = dask_rows(X, y, chunk=5000)
        reference = DaskFMRegressor(client=c, **settings).fit(dX, dy)
        pids = c.run(os.getpid)
        victim = sorted(pids)[0]
        killed = {}
        timing = {}

        def kill_during_next_round(estimator, epoch, logs):
            now = time.perf_counter()
            if epoch == 1:  # the previous round's length says when the next is half done
                delay = 0.5 * (now - timing[0])
                killed["timer"] = threading.Timer(
                    delay, lambda: (os.kill(pids[victim], signal.SIGKILL),
                                    killed.setdefault("at", epoch + 1)))
                killed["timer"].start()
            timing[epoch] = now

        model = DaskFMRegressor(client=c, **settings).fit(dX, dy,
                                                          callbacks=[kill_during_next_round])
        killed["timer"].join()
        assert "at" in killed
        c.wait_for_workers(2, timeout=60)
        assert pids[victim] not in c.run(os.getpid).values()  # the process really died
    assert model.n_epochs_ == settings["n_epochs"]
    np.testing.assert_allclose(model.V_, reference.V_, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model.w_, reference.w_, rtol=1e-6, atol=1e-7)
    assert model.history_["train_loss"] == pytest.approx(reference.history_["train_loss"])


# ----------------------------------------------------------------------- estimator API
def test_result_is_an_ordinary_model_that_saves_and_loads(client, tmp_path):
    X, y = synthetic()
    model = DaskFMRegressor(n_factors=3, n_epochs=5, random_state=0, client=client).fit(
        *dask_rows(X, y))
    local = model.to_local()
    assert type(local) is FMRegressor
    np.testing.assert_array_equal(local.predict(X), model.predict(X))
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert type(loaded) is FMRegressor
    np.testing.assert_allclose(loaded.predict(X), model.predict(X))
    # warm start continues from the fitted parameters (and keeps the history)
    more = model.set_params(warm_start=True, n_epochs=2).fit(*dask_rows(X, y))
    assert len(more.history_["train_loss"]) == 7


def test_fits_a_dask_dataframe_and_predicts_per_partition(client):
    X, y = synthetic(n=300, d=6)
    frame = pd.DataFrame(X.toarray(), columns=[f"f{i}" for i in range(6)])
    frame["target"] = y
    ddf = dd.from_pandas(frame, npartitions=3)
    features = ddf[[f"f{i}" for i in range(6)]]
    model = DaskFMRegressor(n_factors=2, n_epochs=10, random_state=0, client=client).fit(
        features, ddf["target"])
    assert list(model.feature_names_in_) == [f"f{i}" for i in range(6)]
    lazy = model.predict(features)
    assert isinstance(lazy, dd.Series) and lazy.npartitions == 3
    out = lazy.compute()
    np.testing.assert_allclose(out.to_numpy(), model.predict(frame.drop(columns="target")),
                               rtol=1e-6)
    assert out.index.equals(frame.index)


def test_classifier_finds_labels_on_the_cluster_and_predicts(client):
    X, y = synthetic(n=800, d=30)
    labels = np.where(y > np.median(y), "like", "dislike")
    clf = DaskFMClassifier(n_factors=3, n_epochs=20, random_state=0, client=client,
                           learning_rate=0.1).fit(*dask_rows(X, labels))
    assert clf.classes_.tolist() == ["dislike", "like"]
    local = FMClassifier(n_factors=3, n_epochs=20, random_state=0, solver="sgd",
                         learning_rate=0.1).fit(X, labels)
    assert np.mean(clf.predict(X) == labels) > 0.7
    assert np.mean(clf.predict(X) == labels) >= np.mean(local.predict(X) == labels) - 0.05
    proba = clf.predict_proba(dask_rows(X)).compute()
    np.testing.assert_allclose(proba, clf.predict_proba(X), rtol=1e-6)
    assert clf.predict(dask_rows(X)).compute().tolist() == clf.predict(X).tolist()


def test_classifier_validation_set_drives_early_stopping(client):
    X, y = synthetic(n=800, d=30)
    labels = (y > np.median(y)).astype(int)
    clf = DaskFMClassifier(n_factors=3, n_epochs=200, random_state=0, client=client,
                           learning_rate=0.3, early_stopping_rounds=3).fit(
        *dask_rows(X[:600], labels[:600]), eval_set=dask_rows(X[600:], labels[600:]))
    history = clf.history_["val_logloss"]
    assert clf.n_epochs_ < 200 and len(history) == clf.n_epochs_
    assert min(history) == history[clf.best_epoch_]
    with pytest.raises(ValueError, match="not available on Dask"):
        DaskFMClassifier(eval_metric="auc", client=client, n_epochs=2).fit(
            *dask_rows(X, labels), eval_set=dask_rows(X, labels))


# ------------------------------------------------------------------------- bad input
def test_bad_input_names_the_problem_and_keeps_the_fitted_model(client):
    X, y = synthetic()
    model = DaskFMRegressor(n_factors=3, n_epochs=3, random_state=0, client=client).fit(
        *dask_rows(X, y))
    V = model.V_.copy()
    bad = X.copy().tolil()
    bad[250, 3] = np.nan
    with pytest.raises(ValueError, match="partition 2 contains NaN"):
        model.fit(*dask_rows(sp.csr_matrix(bad), y))
    np.testing.assert_array_equal(model.V_, V)
    with pytest.raises(ValueError, match="same partitions"):
        model.fit(dask_rows(X, chunk=100), da.from_array(y, chunks=200))
    with pytest.raises(ValueError, match=r"y partition \d has shape"):
        model.fit(dask_rows(X, chunk=100),
                  da.from_array(y, chunks=100).map_blocks(lambda b: b[:-1], dtype=float))
    with pytest.raises(ValueError, match="expecting 40 features"):
        model.set_params(warm_start=True).fit(*dask_rows(X[:, :20], y))
    model.set_params(warm_start=False)
    with pytest.raises(ValueError, match="solver must be 'sgd'"):
        DaskFMRegressor(solver="als", client=client).fit(*dask_rows(X, y))
    with pytest.raises(TypeError, match="dask collections"):
        DaskFMRegressor(client=client).fit(X, y)
    with pytest.raises(ValueError, match="exactly 2"):
        DaskFMClassifier(client=client).fit(*dask_rows(X, np.arange(len(y)) % 3))
    with pytest.raises(ValueError, match="combine"):
        DaskFMRegressor(client=client, combine="max").fit(*dask_rows(X, y))
    # Issue 15: a target beyond float32 was reported as divergence ("smaller learning_rate").
    with pytest.raises(ValueError, match=r"y partition \d holds 1e\+39 at row 0, beyond what "
                                         "float32 holds"):
        model.fit(*dask_rows(X, np.full_like(y, 1e39)))
    np.testing.assert_array_equal(model.V_, V)


def test_sample_weights_partial_fit_and_encoder_output(client):
    from fmrec.dask import DaskFeatureEncoder
    from fmrec.datasets import make_recsys

    data = make_recsys(n_users=100, n_items=60, n_interactions=2000, random_state=0)
    ratings = dd.from_pandas(data.interactions, npartitions=4)
    encoder = DaskFeatureEncoder(categorical=["user_id", "item_id", "device"]).fit(ratings)
    X = encoder.transform(ratings)  # CSR chunks of unknown length
    y, ones = ratings["rating"], ratings["rating"] * 0 + 1.0
    plain = DaskFMRegressor(n_epochs=3, random_state=0, client=client).fit(X, y)
    weighted = DaskFMRegressor(n_epochs=3, random_state=0, client=client).fit(
        X, y, sample_weight=ones)
    np.testing.assert_array_equal(weighted.V_, plain.V_)  # unit weights change nothing
    heavier = DaskFMRegressor(n_epochs=3, random_state=0, client=client).fit(
        X, y, sample_weight=ones * (ratings["rating"] > 3) + 0.1)
    assert not np.allclose(heavier.V_, plain.V_)
    assert plain.predict(X).compute().shape == (2000,)
    plain.partial_fit(X, y)
    assert len(plain.history_["train_loss"]) == 4
    with pytest.raises(ValueError, match="no rows with positive weight"):
        DaskFMRegressor(client=client).fit(X, y, sample_weight=ones * 0)
    with pytest.raises(ValueError, match=r"sample_weight partition \d has negative values"):
        DaskFMRegressor(client=client).fit(X, y, sample_weight=ones - 2)
