"""Check fmrec's import graph: every module imports alone, and no cycles hide anywhere.

Run by ``.ci/run`` with the interpreter of the venv that has fmrec (and its test extra)
installed::

    python .ci/check_imports.py [--source DIR] [--skip-import] [--jobs N]

1. Import each module of the *installed* package (compiled kernels included) alone, in a fresh
   process without any fmrec module loaded (forked from an interpreter started with ``-P``, so
   the repository's own ``fmrec/`` folder is not on the path, that has imported only numpy,
   scipy, pandas and scikit-learn). A module that only imports once some other module has been
   imported first fails.
2. Read fmrec's sources with ``ast`` and fail on
   - a cycle among the module-level imports between fmrec modules (``if TYPE_CHECKING:`` blocks
     are not run and do not count), and
   - an ``import fmrec...`` / ``from fmrec... import`` inside a function: that is how cycles get
     hidden. The one exception is a lazy import of a subpackage that needs an optional extra
     (``fmrec.tuning``: optuna, ``fmrec.dask``: dask) from outside that subpackage, e.g.
     ``fmrec.__getattr__`` importing ``tune`` on first use.

Every finding names the importing module, its line and the module it imports. Exit status 1
when anything is found.
"""

from __future__ import annotations

import argparse
import ast
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "fmrec"
# Subpackages that need an optional extra: code elsewhere may import them inside a function.
OPTIONAL = {"fmrec.tuning": "optuna", "fmrec.dask": "dask"}
EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


@dataclass(frozen=True)
class Edge:
    source: str  # the importing module
    target: str  # the fmrec module it imports
    line: int
    in_function: str | None  # the enclosing function's name, None at module level

    def describe(self) -> str:
        where = f" (in {self.in_function}())" if self.in_function else ""
        return f"{self.source}:{self.line}{where} imports {self.target}"


# ---------------------------------------------------------------------- the modules
def module_names(root: Path, *, extensions: bool) -> dict[str, Path]:
    """Dotted name -> file of every module under the package folder ``root``."""
    names = {}
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        rel = path.relative_to(root.parent)
        if path.suffix == ".py":
            parts = rel.with_suffix("").parts
        elif extensions and path.name.endswith(EXTENSION_SUFFIXES):
            parts = (*rel.parent.parts, path.name.split(".")[0])
        else:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


# ---------------------------------------------------------------------- 1. import each alone
# Runs in a fresh interpreter that has imported no fmrec module: it loads the heavy third-party
# libraries once, then forks one child per fmrec module, which imports that module alone and
# reports. A fork costs milliseconds where a new interpreter costs seconds of numpy/scipy/
# pandas imports, and the fmrec side of each child starts as empty as a new interpreter's.
_FORK_SERVER = r"""
import importlib, os, sys, traceback
for name in ("numpy", "scipy.sparse", "pandas", "sklearn.base", "sklearn.utils"):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
assert not any(m == "fmrec" or m.startswith("fmrec.") for m in sys.modules), "fmrec preloaded"
for module in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        status = 0
        try:
            importlib.import_module(module)
        except BaseException:
            os.write(write, traceback.format_exc().strip().splitlines()[-1].encode())
            status = 1
        os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    if status:
        print(f"{module}\t{message or f'exit status {status}'}", flush=True)
"""


def check_imports_alone(jobs: int) -> list[str]:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return [f"{PACKAGE} is not installed for {sys.executable}"]
    root = Path(next(iter(spec.submodule_search_locations)))
    modules = sorted(module_names(root, extensions=True))
    print(f"importing each of the {len(modules)} modules of {root} alone")
    start = time.perf_counter()
    batches = [modules[i::jobs] for i in range(jobs)]
    # -P: the working directory (perhaps the repository) does not go first on sys.path.
    procs = [subprocess.Popen([sys.executable, "-P", "-c", _FORK_SERVER, *batch],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for batch in batches if batch]
    failures = []
    for proc in procs:
        out, err = proc.communicate()
        for line in out.splitlines():
            module, _, error = line.partition("\t")
            failures.append(f"import {module} alone fails: {error}")
        if proc.returncode:
            failures.append(f"the import checker failed (exit {proc.returncode}): "
                            f"{err.strip()[-2000:]}")
    print(f"  {len(modules) - len(failures)} of {len(modules)} imported alone in "
          f"{time.perf_counter() - start:.1f}s")
    return failures


# ---------------------------------------------------------------------- 2. the graph
class _ImportVisitor(ast.NodeVisitor):
    """Collects the fmrec imports of one module, noting the enclosing function."""

    def __init__(self, module: str, is_package: bool, known: set[str]):
        self.module, self.known = module, known
        self.package = module if is_package else module.rpartition(".")[0]
        self.function: str | None = None
        self.edges: list[Edge] = []

    def _add(self, target: str, node: ast.AST) -> None:
        if target == PACKAGE or target.startswith(PACKAGE + "."):
            # The deepest fmrec module named (``fmrec.a.b.name`` -> fmrec.a.b).
            while target not in self.known and "." in target:
                target = target.rpartition(".")[0]
            if target != self.module:
                self.edges.append(Edge(self.module, target, node.lineno, self.function))
            # Importing fmrec.a.b runs fmrec.a's __init__ first: an edge to every enclosing
            # subpackage the importer is not inside (the root package is always first).
            parent = target.rpartition(".")[0]
            while parent.count("."):
                if parent in self.known and not (self.module == parent
                                                 or self.module.startswith(parent + ".")):
                    self.edges.append(Edge(self.module, parent, node.lineno, self.function))
                parent = parent.rpartition(".")[0]

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        for alias in node.names:
            # ``from fmrec.x import y``: y is a module or a name in fmrec.x.
            full = f"{origin}.{alias.name}"
            self._add(full if full in self.known else origin, node)

    def _visit_function(self, node) -> None:
        outer, self.function = self.function, (
            node.name if self.function is None else f"{self.function}.{node.name}")
        self.generic_visit(node)
        self.function = outer

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_function

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name == "TYPE_CHECKING":  # never runs: only its else branch does
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)


def read_graph(source: Path) -> list[Edge]:
    files = module_names(source, extensions=False)
    known = set(files)
    edges = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        visitor = _ImportVisitor(module, path.name == "__init__.py", known)
        visitor.visit(tree)
        edges.extend(dict.fromkeys(visitor.edges))  # one per line (``import a, b`` from one)
    return edges


def _optional_package(module: str) -> str | None:
    return next((p for p in OPTIONAL if module == p or module.startswith(p + ".")), None)


def hidden_imports(edges: list[Edge]) -> list[Edge]:
    """The fmrec imports inside functions that are not allowed (see the module docstring)."""
    found = []
    for edge in edges:
        if edge.in_function is None:
            continue
        package = _optional_package(edge.target)
        if package is not None and _optional_package(edge.source) != package:
            continue  # a lazy import of an optional extra's subpackage
        found.append(edge)
    return found


def strongly_connected(nodes: set[str], graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def cycles(edges: list[Edge]) -> list[str]:
    """Each strongly connected set of modules in the graph ``edges``, with its edges."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
    nodes = set(graph) | {e.target for e in edges}
    found = []
    for component in strongly_connected(nodes, graph):
        members = set(component)
        inside = sorted((e for e in edges if e.source in members and e.target in members),
                        key=lambda e: (e.source, e.line))
        found.append("import cycle among " + ", ".join(component) + ":\n"
                     + "\n".join(f"    {e.describe()}" for e in inside))
    return found


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=repo / PACKAGE,
                        help="the package folder whose sources are read (default: %(default)s)")
    parser.add_argument("--skip-import", action="store_true",
                        help="only read the graph; do not import the installed modules")
    parser.add_argument("--jobs", type=int, default=max(2, min(4, os.cpu_count() or 1)),
                        help="interpreters importing at once (default: %(default)s)")
    args = parser.parse_args(argv)

    problems = [] if args.skip_import else check_imports_alone(args.jobs)
    edges = read_graph(args.source)
    n_modules = len({e.source for e in edges})
    print(f"read {len(edges)} fmrec imports of {n_modules} modules under {args.source}")
    module_level = [e for e in edges if e.in_function is None]
    hidden = hidden_imports(edges)
    found_cycles = cycles(module_level)
    problems += found_cycles + [f"import inside a function: {e.describe()}" for e in hidden]
    for problem in problems:
        print(f"FAIL {problem}")
    for cycle in cycles(module_level + hidden):  # what the hidden imports dodge
        if cycle not in found_cycles:
            print(f"note: were the imports inside functions at module level, {cycle}")
    if problems:
        print(f"{len(problems)} import problem(s)")
        return 1
    print("imports OK: every module imports alone, no cycles, no imports hidden in functions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
