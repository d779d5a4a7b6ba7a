import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]

# Tests marked ``slow`` besides those on MovieLens: `pytest -m "not slow"` is the quick run,
# plain `pytest` (the README's command) runs everything. Entries are node ids or their
# prefixes (a module, or module::test without its parameters); measured with
# `pytest --durations=80`, each took several seconds alone.
SLOW_TESTS = (
    "tests/test_cli.py::test_demo_download_fetches_checks_and_runs",
    "tests/test_cli.py::test_demo_on_synthetic_data",
    "tests/test_cli.py::test_implicit_feedback_recommend_to_stdout",
    "tests/test_cli.py::test_libsvm_round_trip",
    "tests/test_cli.py::test_table_round_trip",
    "tests/test_dask.py::test_a_worker_killed_mid_fit_is_survived_with_the_same_result",
    "tests/test_plot.py::test_demo_writes_non_blank_figures",
    "tests/test_plot.py::test_embedding_map_tsne_and_errors",
    "tests/test_plot.py::test_lazy_import_and_no_pyplot",
    "tests/test_tune.py::test_cli_tune",
    "tests/test_tune.py::test_cross_validated_trials",
    "tests/test_tune.py::test_early_stopping_records_the_best_epoch",
    "tests/test_tune.py::test_pruning_prunes_and_saves_epochs",
    "tests/test_tune.py::test_recommender_ndcg",
    "tests/test_tune.py::test_resume_after_an_interruption",
    "tests/test_tune.py::test_resume_from_sqlite",
    "tests/test_tune.py::test_seeded_search_is_reproducible",
    "tests/test_tune.py::test_tuning_beats_a_bad_fixed_setting",
)

# The longest test by far (~250 s of a ~670 s run; `pytest --durations=20`), moved to the
# front: the README's `pytest -n logical --dist worksteal` then starts it at once on the
# first worker while the others share out the rest, instead of reaching it late. Only one:
# the first worker keeps the front of its queue (idle workers steal from the back), so a
# second long test here would run after it on the same worker.
RUN_FIRST = (
    "tests/test_tune.py::test_movielens_tuning_improves_test_rmse_and_pruning_cuts_a_third",
)


def ml100k_home() -> Path:
    """FMREC_DATA_HOME, else ../shared/datasets beside the repository."""
    return Path(os.environ.get("FMREC_DATA_HOME", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def ml100k_dir():
    home = ml100k_home()
    if not (home / "ml-100k" / "u1.base").is_file():
        pytest.skip(f"MovieLens 100K not found under {home} (set FMREC_DATA_HOME)")
    return home


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every test that reads MovieLens (through ``ml100k_dir``, directly or by
    way of another fixture) and those listed in SLOW_TESTS; run those in RUN_FIRST first."""
    slow = pytest.mark.slow
    for item in items:
        node = item.nodeid.split("[", 1)[0]
        if "ml100k_dir" in item.fixturenames or any(
                node == entry or node.startswith(entry + "::") for entry in SLOW_TESTS):
            item.add_marker(slow)
    # A stable sort: the order within each group is pytest's.
    items.sort(key=lambda item: not item.nodeid.startswith(RUN_FIRST))


def random_csr(n_rows, n_cols, density, dtype=np.float64, index_dtype=np.int32, seed=0,
               empty_rows=(0,)):
    """Random CSR with normal values, some empty rows, chosen index dtype."""
    rng = np.random.default_rng(seed)
    X = sp.random(n_rows, n_cols, density=density, format="csr", random_state=seed,
                  data_rvs=rng.standard_normal).astype(dtype)
    X = sp.lil_matrix(X)
    for r in empty_rows:
        if r < n_rows:
            X.rows[r], X.data[r] = [], []
    X = sp.csr_matrix(X)
    X.sort_indices()
    X.indices = X.indices.astype(index_dtype)
    X.indptr = X.indptr.astype(index_dtype)
    return X


@pytest.fixture(scope="session")
def dask_client():
    """A LocalCluster of 2 worker processes (1 thread each) shared by the Dask tests."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


def assert_same_bits_with_and_without_avx(script: str, tmp_path: Path, n_arrays: int):
    """Run ``script`` (by ``python -c``, with the tests' folder and the .npz file to write as
    arguments) with FMREC_NO_AVX=0 and with FMREC_NO_AVX=1 (SSE2), and check that both wrote
    the same ``n_arrays`` arrays bit for bit. An array named ``simd`` is the variant the
    kernels report instead: "sse2/plain" with AVX turned off."""
    files = {}
    for flag in ("0", "1"):
        files[flag] = tmp_path / f"avx_off_{flag}.npz"
        subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent),
                        str(files[flag])], check=True, env={**os.environ, "FMREC_NO_AVX": flag},
                       cwd=tmp_path)  # not the repository: python -c imports from its folder
    a, b = np.load(files["0"]), np.load(files["1"])
    assert sorted(a.files) == sorted(b.files)
    assert len([name for name in a.files if name != "simd"]) == n_arrays
    if "simd" in b.files:
        assert str(b["simd"]) == "sse2/plain"
    for name in a.files:
        if name != "simd":
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
