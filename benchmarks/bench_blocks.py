"""Relation blocks vs materialized rows: ALS with SVD++-style implicit user features.

Run by hand (not in CI):

    python benchmarks/bench_blocks.py [--data-home ../shared/datasets] [--factors 8 16]
                                      [--epochs 50] [--n-jobs 2]

On MovieLens 100K (u1.base) every rating row gets its user's id, the items the user rated in
training (weight 1/√n, ~85 per user on average) and the item id. The same model is fitted
twice in one run: on a DesignMatrix that stores each user's features once, and on the
materialized CSR (~170 non-zeros per row). Both reach the same optimum (tests/test_design.py);
this prints seconds, ratios and test RMSE. Each fit runs in its own subprocess so the peak
memory figures are separate.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

RUN = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, scipy.sparse as sp
    from fmrec import FMRegressor
    from fmrec.datasets import load_ml100k_split
    from fmrec.design import DesignMatrix, RelationBlock
    home, layout, k, epochs, n_jobs = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    train, test = load_ml100k_split("u1", home)
    n_users, n_items = 943, 1682
    rated = sp.csr_matrix((np.ones(len(train)), (train.user_id - 1, train.item_id - 1)),
                          shape=(n_users, n_items))
    rated = sp.diags(1 / np.sqrt(np.maximum(np.diff(rated.indptr), 1))) @ rated
    users = sp.hstack([sp.identity(n_users), rated], format="csr", dtype=np.float32)
    items = sp.identity(n_items, format="csr", dtype=np.float32)
    def design(frame):
        X = DesignMatrix(None, [RelationBlock(users, frame.user_id.to_numpy() - 1),
                                RelationBlock(items, frame.item_id.to_numpy() - 1)])
        return X if layout == "blocks" else X.to_csr(np.float32)
    X_train, X_test = design(train), design(test)
    start = time.perf_counter()
    model = FMRegressor(n_factors=k, n_epochs=epochs, random_state=0, n_jobs=n_jobs)
    model.fit(X_train, train.rating.to_numpy(float))
    seconds = time.perf_counter() - start
    rmse = float(np.sqrt(np.mean((model.predict(X_test) - test.rating) ** 2)))
    nnz = X_train.nnz
    print(json.dumps({"seconds": seconds, "rmse": rmse, "stored_nnz": int(nnz),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=str(HERE.parents[1] / "shared" / "datasets"))
    parser.add_argument("--factors", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    print(f"{'k':>3} {'layout':>12} {'seconds':>8} {'ratio':>6} {'RMSE':>7} {'stored nnz':>11} "
          f"{'peak MB':>8}")
    for k in args.factors:
        results = {}
        for layout in ("materialized", "blocks"):
            out = subprocess.run([sys.executable, "-c", RUN, args.data_home, layout, str(k),
                                  str(args.epochs), str(args.n_jobs)],
                                 check=True, capture_output=True, text=True).stdout
            results[layout] = json.loads(out.strip().splitlines()[-1])
        base = results["materialized"]["seconds"]
        for layout, r in results.items():
            print(f"{k:>3} {layout:>12} {r['seconds']:>8.2f} {r['seconds'] / base:>6.2f} "
                  f"{r['rmse']:>7.4f} {r['stored_nnz']:>11,} {r['peak_mb']:>8.0f}")


if __name__ == "__main__":
    main()
