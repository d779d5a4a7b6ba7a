"""Instruction and cache-miss counts (callgrind) of one FM SGD epoch: fmrec's kernel beside the
plain C loop of ``shared/bench/fm_sgd_limit.c``, the repeatable figure behind bench_core.py's
noisy timings (issue 16).

The data is gen_synthetic.py's set at a fifth of bench_core's rows (200,000 rows x 20
non-zeros over the same 200,000 features, zipf 0.8, seed 0), so the parameters take as much
memory as in the timed runs. k = 8, float32, one thread, square loss.

* C reference: compiled the way fmrec's kernels are (gcc -O3 -fno-math-errno, no -march:
  valgrind cannot run the AVX-512 that ``sgd_reference.py``'s -march=native emits on recent
  CPUs; ``--march`` picks another, e.g. x86-64-v3); one epoch is (the run with 2 epochs - the
  run with 1), which removes reading the files and initialising V. Storage order (the timing
  target's denominator) and shuffled.
* fmrec: ``FMRegressor(solver="sgd", n_epochs=1, n_jobs=1)`` with the schedules given
  (``adagrad-flat``: AdaGrad without the packed records); FMREC_NO_AVX=1 in the environment
  counts the SSE2 rows;
  collection is on only inside the kernel's parallel regions
  (``--toggle-collect='*sgd_epoch*._omp_fn*'``: packing, the epoch, unpacking).

    python benchmarks/callgrind_sgd.py [--configs adagrad,constant] [--rows 200000]

``--cache-sim=yes`` models the host's caches as valgrind detects them (the same model for
both programs). Each callgrind run takes a minute or two.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = {"adagrad": {}, "constant": {"lr_schedule": "constant", "learning_rate": 0.01},
           "adagrad-flat": {}}  # AdaGrad on the flat arrays (the solver never packs)
EVENTS = ("Ir", "D1mr", "D1mw", "DLmr", "DLmw")


def run_one(data: str, config: str) -> None:
    """The program run under valgrind: one fmrec epoch."""
    import numpy as np
    import scipy.sparse as sp

    from fmrec import FMRegressor
    if config == "adagrad-flat":
        import fmrec.solvers.sgd as solver
        solver.PACK_MIN_NNZ_PER_FEATURE = float("inf")
    with np.load(data) as z:
        X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        y = z["y"].astype(np.float32)
    FMRegressor(n_factors=8, solver="sgd", n_epochs=1, n_jobs=1, random_state=0,
                **CONFIGS[config]).fit(X, y)


def counts(cmd: list[str], toggle: str | None = None) -> dict[str, int]:
    """Callgrind's event totals of one run of ``cmd``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        vg = ["valgrind", "--tool=callgrind", "--cache-sim=yes", f"--callgrind-out-file={out}"]
        if toggle:
            vg.append(f"--toggle-collect={toggle}")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        subprocess.run(vg + cmd, check=True, env=env, capture_output=True)
        events = None
        with open(out) as f:
            for line in f:
                if line.startswith("events:"):
                    events = line.split()[1:]
                if line.startswith("summary:"):
                    values = [int(v) for v in line.split()[1:]]  # trailing zeros omitted
                    return dict(zip(events, values + [0] * len(events), strict=False))
    raise RuntimeError("no summary line in the callgrind output")


def show(name: str, c: dict[str, float], base: dict[str, float] | None) -> None:
    d1, ll = c["D1mr"] + c["D1mw"], c["DLmr"] + c["DLmw"]
    line = (f"{name:34s} {c['Ir'] / 1e6:8.1f}M instr  {d1 / 1e6:6.2f}M D1 misses  "
            f"{ll / 1e6:6.2f}M LL misses")
    if base:
        line += (f"  = {c['Ir'] / base['Ir']:.2f}x / "
                 f"{d1 / (base['D1mr'] + base['D1mw']):.2f}x C storage order")
    print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--configs", default="adagrad,constant",
                    help="comma-separated, of " + ", ".join(CONFIGS))
    ap.add_argument("--no-reference", action="store_true", help="skip the C reference")
    ap.add_argument("--march", default=None, help="-march for the C reference (default none)")
    ap.add_argument("--inner", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        run_one(*args.inner)
        return

    import numpy as np
    data = Path(f"/tmp/fmrec_bench/syn_{args.rows}.npz")
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(args.shared / "bench" / "gen_synthetic.py"),
                        str(data.with_suffix("")), str(args.rows), "20", "200000", "8", "0"],
                       check=True)
    base = None
    if not args.no_reference:
        with tempfile.TemporaryDirectory() as d, np.load(data) as z:
            z["indptr"].astype(np.int64).tofile(f"{d}/indptr.bin")
            z["indices"].astype(np.int32).tofile(f"{d}/indices.bin")
            z["data"].astype(np.float32).tofile(f"{d}/data.bin")
            z["y"].astype(np.float32).tofile(f"{d}/y.bin")
            exe = f"{d}/fm_sgd_limit"
            march = [f"-march={args.march}"] if args.march else []
            subprocess.run(["gcc", "-O3", "-fno-math-errno", *march, "-o", exe,
                            str(args.shared / "bench" / "fm_sgd_limit.c"), "-lm"], check=True)
            n, m = str(int(z["shape"][0])), str(int(z["shape"][1]))
            for order in ("sequential", "shuffled"):
                one = counts([exe, d, n, m, "1", order])
                two = counts([exe, d, n, m, "2", order])
                epoch = {e: two[e] - one[e] for e in EVENTS}
                if order == "sequential":
                    base = epoch
                show(f"C reference, {'storage order' if order == 'sequential' else order}",
                     epoch, base)
    for config in filter(None, args.configs.split(",")):
        c = counts([sys.executable, os.path.abspath(__file__), "--inner", str(data), config],
                   "*sgd_epoch*._omp_fn*")
        show(f"fmrec SGD {config} (shuffled)", c, base)


if __name__ == "__main__":
    main()
