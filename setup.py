"""Declares the Cython extension modules; everything else lives in pyproject.toml.

OpenMP is probed with a tiny test program: where the compiler lacks it (or
``FMREC_NO_OPENMP=1``) the same sources build single-threaded.
"""

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = ["predict", "sgd", "als", "bpr", "_openmp"]

_OPENMP_PROBE = r"""
#include <omp.h>
int main(void) { int n = 0;
#pragma omp parallel reduction(+:n)
  n += 1;
  return n > 0 ? 0 : 1; }
"""


def _openmp_flags() -> tuple[list[str], list[str]]:
    """Return (compile, link) flags enabling OpenMP, or empty lists if it does not work."""
    if os.environ.get("FMREC_NO_OPENMP", "") not in ("", "0"):
        return [], []
    if sys.platform == "win32":
        return ["/openmp"], []
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc.split()[0]) is None:
        return [], []
    candidates = [(["-fopenmp"], ["-fopenmp"])]
    if sys.platform == "darwin":
        candidates.append((["-Xpreprocessor", "-fopenmp"], ["-lomp"]))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(_OPENMP_PROBE)
        for cflags, lflags in candidates:
            # The flags setuptools will compile and link with too, e.g. where Homebrew's
            # libomp is (CPPFLAGS=-I..., LDFLAGS=-L..., as the macOS wheels set them).
            env = [shlex.split(os.environ.get(name, "")) for name in ("CPPFLAGS", "CFLAGS",
                                                                       "LDFLAGS")]
            cmd = [*cc.split(), *env[0], *env[1], *cflags, str(src), "-o",
                   str(Path(tmp) / "probe"), *env[2], *lflags]
            if subprocess.run(cmd, capture_output=True).returncode == 0:
                return cflags, lflags
    print("fmrec: OpenMP not available, building single-threaded kernels", file=sys.stderr)
    return [], []


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        # The five kernels compile independently: one per core unless -j says otherwise
        # (about 2x faster on 2 cores). Not on Windows: parallel MSVC builds are untested here.
        if self.parallel is None and sys.platform != "win32":
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        cflags, lflags = _openmp_flags()
        unix = self.compiler.compiler_type != "msvc"
        for ext in self.extensions:
            # -fno-math-errno: sqrt() that need not set errno is one instruction, so the
            # AdaGrad f-loops vectorise; no result changes (errno is never read).
            # -Wno-psabi: the k = 8 vector helpers are static inline, never part of an ABI.
            opt = ["-O3", "-fno-math-errno", "-Wno-psabi"] if unix else ["/O2"]
            if unix and os.environ.get("FMREC_NATIVE", "") not in ("", "0"):
                opt.append("-march=native")  # opt-in: the default build stays portable
            extra = os.environ.get("FMREC_EXTRA_CFLAGS", "").split()
            ext.extra_compile_args = [*cflags, *opt, *extra]
            ext.extra_link_args = list(lflags)
        super().build_extensions()


extensions = [
    Extension(
        f"fmrec._kernels.{name}",
        [f"fmrec/_kernels/{name}.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "nonecheck": False,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
