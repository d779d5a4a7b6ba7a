import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]


def ml100k_home() -> Path:
    """FMREC_DATA_HOME, else ../shared/datasets beside the repository."""
    return Path(os.environ.get("FMREC_DATA_HOME", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def ml100k_dir():
    home = ml100k_home()
    if not (home / "ml-100k" / "u1.base").is_file():
        pytest.skip(f"MovieLens 100K not found under {home} (set FMREC_DATA_HOME)")
    return home


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
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client
