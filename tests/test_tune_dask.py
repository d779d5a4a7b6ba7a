"""fmrec.tune with a Dask client: trials on the workers through Optuna's Dask storage."""

import os
import time

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")
distributed = pytest.importorskip("distributed")
pytest.importorskip("optuna_integration")

from fmrec import FMRegressor, Recommender, load_model  # noqa: E402
from fmrec.cli import main  # noqa: E402
from fmrec.datasets import make_fm_regression, make_recsys  # noqa: E402
from fmrec.tuning.cluster import _loop_plan, _SharedBlasLimit  # noqa: E402
from fmrec.tuning.search import tune  # noqa: E402

DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.fixture(scope="module", autouse=True)
def quiet_optuna():
    # Module-wide, before the module's searches; the workers follow this verbosity too.
    saved = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(saved)


@pytest.fixture(scope="module")
def cluster():
    # Worker processes, not threads: a trial that ran "on the cluster" really left this
    # process. They inherit the environment, so PYTHONPATH reaches them.
    start = time.perf_counter()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as local:
        with distributed.Client(local) as client:
            client.wait_for_workers(2)
            print(f"LocalCluster of 2 worker processes up in "
                  f"{time.perf_counter() - start:.2f} s")
            yield local, client


@pytest.fixture(scope="module")
def client(cluster):
    return cluster[1]


@pytest.fixture(scope="module")
def regression():
    X, y, _ = make_fm_regression(n_samples=1500, n_features=100, random_state=0)
    return X, y


def pid_space():
    """A search space that records the process running each trial."""

    # A nested function pickles by value: the workers cannot import this test module.
    def space(trial):
        trial.set_user_attr("pid", os.getpid())
        return {"n_factors": trial.suggest_categorical("n_factors", [2, 4, 8]),
                "reg_factors": trial.suggest_float("reg_factors", 1e-2, 10.0, log=True),
                "reg_linear": trial.suggest_float("reg_linear", 1e-2, 10.0, log=True)}

    return space


@pytest.fixture(scope="module")
def dask_run(client, regression):
    ended = []
    result = tune(FMRegressor(solver="als", n_epochs=15), regression, n_trials=8,
                  random_state=0, search_space=pid_space(), client=client,
                  callbacks=[lambda study, trial: ended.append(trial.number)])
    return result, ended


def finished(study):
    return [t for t in study.trials if t.state in DONE]


# ------------------------------------------------------------------------------- estimators
def test_trials_on_the_cluster_give_an_ordinary_model(dask_run, regression, tmp_path):
    X, y = regression
    result, _ = dask_run
    assert len(finished(result.study)) == len(result.study.trials) == 8
    model = result.best_model
    assert type(model) is FMRegressor
    assert model.n_factors == result.best_params["n_factors"]
    assert model.n_epochs_ == result.study.best_trial.user_attrs["n_epochs"]
    # Saved and loaded like any model, without Dask.
    model.save(tmp_path / "best.npz")
    np.testing.assert_allclose(load_model(tmp_path / "best.npz").predict(X), model.predict(X))
    # The study is a copy in this process, readable without the cluster.
    assert isinstance(result.study._storage, optuna.storages.InMemoryStorage)
    assert result.study.user_attrs["fmrec_metric"] == "rmse"
    assert all(t.intermediate_values for t in result.study.trials)
    # A worker's trial is the fit this process would make: same split, same seed, same score.
    again = tune(FMRegressor(solver="als", n_epochs=15), (X, y), n_trials=1, random_state=0,
                 search_space={k: [v] for k, v in result.best_params.items()},
                 pruner=optuna.pruners.NopPruner(), refit=False)
    assert again.best_score == pytest.approx(result.best_score, rel=1e-6)
    assert again.study.best_trial.user_attrs["n_epochs"] == model.n_epochs_
    assert result.best_score < 0.5 * y.std()  # far better than predicting the mean


def test_trials_ran_in_the_worker_processes(dask_run, client):
    result, _ = dask_run
    worker_pids = client.run(os.getpid)  # address -> pid
    assert os.getpid() not in worker_pids.values()
    pids = [t.user_attrs["pid"] for t in result.study.trials]
    assert set(pids) == set(worker_pids.values())  # both workers, and only they, ran trials
    for t in result.study.trials:
        assert worker_pids[t.user_attrs["worker"]] == t.user_attrs["pid"]


def test_callbacks_run_here_once_per_trial(dask_run):
    result, ended = dask_run
    assert sorted(ended) == [t.number for t in result.study.trials]


def test_a_callback_stops_the_loops_on_the_workers(client, regression):
    def slow_space(trial):
        time.sleep(1.0)  # longer than a poll: the client sees a trial end before the next ends
        return {"n_factors": trial.suggest_categorical("n_factors", [2, 4])}

    def stop_at_once(study, trial):
        calls.append(trial.number)
        study.stop()

    calls = []
    study = tune(FMRegressor(n_epochs=2), regression, n_trials=10, search_space=slow_space,
                 client=client, refit=False, callbacks=[stop_at_once]).study
    # 2 loops of 5 trials. The client sees the first trials end within a poll (0.5 s) and
    # sets the stop; each loop has by then begun its next trial, and ends after it.
    print("stopped after", len(study.trials), "trials")
    assert 2 <= len(study.trials) <= 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert sorted(calls) == [t.number for t in study.trials]


def test_timeout_reaches_the_loops(client, regression):
    def slow_space(trial):
        time.sleep(0.3)
        return {"n_factors": trial.suggest_categorical("n_factors", [2, 4])}

    start = time.perf_counter()
    study = tune(FMRegressor(n_epochs=2), regression, n_trials=100, timeout=1.0,
                 search_space=slow_space, client=client, refit=False).study
    # Each loop starts no trial after a second: about 4 trials each, not 50.
    assert 2 <= len(study.trials) <= 12
    assert time.perf_counter() - start < 10


def test_pruning_through_the_dask_storage(client, regression):
    def space(trial):
        # Every other trial is hopeless: penalties so strong it predicts the mean.
        reg = 1e3 if trial.number % 2 else 1e-2
        return {"n_factors": 4, "reg_linear": reg, "reg_factors": reg}

    study = tune(FMRegressor(solver="als", n_epochs=12), regression, n_trials=6,
                 random_state=0, search_space=space, client=client, refit=False,
                 early_stopping_rounds=None,
                 pruner=optuna.pruners.ThresholdPruner(upper=1.0, n_warmup_steps=2)).study
    assert len(study.trials) == 6
    for t in study.trials:
        if t.number % 2:
            assert t.state == optuna.trial.TrialState.PRUNED
            assert t.user_attrs["epochs_run"] == 3  # epochs 0 and 1 are the warm-up
            assert max(t.intermediate_values) == 2
        else:
            assert t.state == optuna.trial.TrialState.COMPLETE
            assert t.user_attrs["epochs_run"] == 12


def test_the_pruner_weighs_the_trials_of_every_worker(client, regression):
    def space(trial):
        if trial.number > 0:
            # Hopeless, and held back until the one good trial is in: the pruner can then
            # only have pruned on a worker that did not run trial 0 by seeing it through the
            # scheduler's storage.
            deadline = time.monotonic() + 30
            while not trial.study.get_trials(deepcopy=False,
                                             states=(optuna.trial.TrialState.COMPLETE,)):
                assert time.monotonic() < deadline, "trial 0 never completed"
                time.sleep(0.05)
        reg = 1e-2 if trial.number == 0 else 1e3
        return {"n_factors": 4, "reg_linear": reg, "reg_factors": reg}

    study = tune(FMRegressor(solver="als", n_epochs=8), regression, n_trials=6,
                 search_space=space, client=client, refit=False,
                 pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
                 ).study
    first, *rest = study.trials
    assert first.state == optuna.trial.TrialState.COMPLETE
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in rest)
    assert all(t.user_attrs["epochs_run"] == 1 for t in rest)
    others = [t for t in rest if t.user_attrs["worker"] != first.user_attrs["worker"]]
    assert others  # pruned on the other worker, against trial 0


def test_resume_from_sqlite_runs_only_the_remainder(client, regression, tmp_path):
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    kwargs = dict(storage=storage, study_name="fm", random_state=0, refit=False,
                  client=client)
    first = tune(FMRegressor(n_epochs=6), regression, n_trials=3, **kwargs).study
    kept = [(t.number, t.params) for t in first.trials]
    assert len(kept) == 3
    study = tune(FMRegressor(n_epochs=6), regression, n_trials=5, **kwargs).study
    assert len(finished(study)) == len(study.trials) == 5
    assert [(t.number, t.params) for t in study.trials[:3]] == kept
    # The lasting record is the sqlite file, which a local search resumes too.
    assert len(optuna.load_study(study_name="fm", storage=storage).trials) == 5
    local = tune(FMRegressor(n_epochs=6), regression, n_trials=5, storage=storage,
                 study_name="fm", refit=False).study
    assert len(local.trials) == 5
    # The scheduler let go of the storages it opened for these searches.
    names = client.run_on_scheduler(
        lambda dask_scheduler: list(dask_scheduler.extensions["optuna"].storages))
    assert names == []


def test_recommender_on_the_cluster(client):
    ratings = make_recsys(n_users=40, n_items=80, n_interactions=800,
                          random_state=0).interactions
    template = Recommender(target="rating", model=FMRegressor(n_epochs=6), random_state=0)
    result = tune(template, ratings, metric="ndcg@5", n_trials=3, random_state=0,
                  client=client)
    assert len(finished(result.study)) == 3
    assert {t.user_attrs["worker"] for t in result.study.trials} <= set(client.nthreads())
    rec = result.best_model
    assert isinstance(rec, Recommender) and 0.0 < result.best_score <= 1.0
    assert rec.seen_.sum() == len(ratings)  # refitted here, on all rows
    assert len(rec.recommend(ratings["user_id"].unique()[:2], n=5)) == 10


def test_a_failing_trial_stops_the_search(client, regression):
    def space(trial):
        raise RuntimeError("boom in the search space")

    with pytest.raises(RuntimeError, match="boom in the search space"):
        tune(FMRegressor(n_epochs=3), regression, n_trials=4, search_space=space,
             client=client)


def test_bad_arguments_with_a_client(client, regression):
    est = FMRegressor(n_epochs=2)
    with pytest.raises(ValueError, match="n_jobs must be a non-zero integer"):
        tune(est, regression, n_trials=1, n_jobs=0, client=client)
    with pytest.raises(ValueError, match="InMemoryStorage lives in this process"):
        tune(est, regression, n_trials=1, client=client,
             storage=optuna.storages.InMemoryStorage())
    with pytest.raises(ValueError, match="could not open storage 'nosuchdb://x'"):
        tune(est, regression, n_trials=1, client=client, storage="nosuchdb://x")
    with pytest.raises(TypeError, match="client must be a distributed.Client"):
        tune(est, regression, n_trials=1, client="tcp://127.0.0.1:8786")


def test_loop_plan_spreads_loops_over_the_workers():
    threads = {"tcp://a": 2, "tcp://b": 1}
    plan = _loop_plan(threads, None, 10)  # one loop per worker thread
    assert [w for w, _, _ in plan] == ["tcp://a", "tcp://b", "tcp://a"]
    assert [n for _, n, _ in plan] == [4, 3, 3]
    assert [t for _, _, t in plan] == [1, 1, 1]
    assert _loop_plan(threads, -1, 10) == plan
    # Fewer loops than threads: a lone loop on a worker gets all its threads for its fits.
    assert _loop_plan(threads, 2, 10) == [("tcp://a", 5, 2), ("tcp://b", 5, 1)]
    assert _loop_plan(threads, 5, 2) == [("tcp://a", 1, 2), ("tcp://b", 1, 1)]
    assert sum(n for _, n, _ in _loop_plan(threads, 7, 20)) == 20
    with pytest.raises(ValueError, match="no worker yet"):
        _loop_plan({}, None, 3)
    assert _loop_plan({}, 2, 3) == [(None, 2, 1), (None, 1, 1)]


def test_blas_limit_is_shared_by_the_loops_of_a_process():
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    with threadpool_limits(limits=2, user_api="blas"):  # NumPy's BLAS, on any machine
        before = blas_threads()
        assert before and max(before) == 2
        limit = _SharedBlasLimit()
        limit.__enter__()
        limit.__enter__()  # a second loop of the same worker
        limit.__exit__(None, None, None)  # the first one ends: the other still runs
        assert set(blas_threads()) == {1}
        limit.__exit__(None, None, None)
        assert blas_threads() == before


# -------------------------------------------------------------------------------------- CLI
def test_cli_tune_on_a_scheduler(cluster, tmp_path, capsys):
    local, _ = cluster
    ratings = make_recsys(n_users=40, n_items=30, n_interactions=800,
                          random_state=0).interactions
    csv, out = tmp_path / "ratings.csv", tmp_path / "best.npz"
    ratings.to_csv(csv, index=False)
    code = main(["tune", str(csv), "--out", str(out), "--trials", "3", "--epochs", "5",
                 "--scheduler", local.scheduler_address])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    progress = [line for line in captured.err.splitlines() if " trial " in line]
    assert [line.split()[0] for line in progress] == ["[1/3]", "[2/3]", "[3/3]"]
    assert isinstance(load_model(out), Recommender)


def test_cli_unreachable_scheduler(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("fmrec.cli.commands._SCHEDULER_TIMEOUT", 1)
    ratings = make_recsys(n_users=10, n_items=10, n_interactions=100,
                          random_state=0).interactions
    csv = tmp_path / "ratings.csv"
    ratings.to_csv(csv, index=False)
    code = main(["tune", str(csv), "--out", str(tmp_path / "m.npz"), "--trials", "1",
                 "--scheduler", "tcp://127.0.0.1:1"])
    assert code == 2
    assert "could not reach the Dask scheduler at tcp://127.0.0.1:1" in capsys.readouterr().err
