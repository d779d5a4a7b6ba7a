"""The examples users copy: the README's quick start, and the same code on the docs site.

Docstring examples are not run here: ``pytest --doctest-modules --pyargs fmrec`` runs each
of them once, against the installed package (a step of .ci/run; see docs/source/
development.rst).
"""

import re
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
QUICKSTART = REPO / "docs" / "source" / "quickstart.rst"


def readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def rst_blocks(path: Path) -> list[str]:
    """The bodies of ``.. code-block:: python`` directives, dedented."""
    found = re.findall(r"^\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)", path.read_text(),
                       re.M)
    return [textwrap.dedent(block).strip() + "\n" for block in found]


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = readme_blocks()
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)  # they save model files in the working folder
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "model.npz").is_file() and (tmp_path / "recommender.npz").is_file()


def test_docs_quick_start_is_the_readme_quick_start():
    # The site's quick start shows the README's code (run above), so neither goes stale.
    site = rst_blocks(QUICKSTART)
    assert len(site) >= 2
    for block in readme_blocks():
        assert block.strip() + "\n" in site, f"README block not on the quick start page:\n{block}"


def test_submodules_are_reachable_from_a_bare_import():
    """Prose such as ``fmrec.datasets.load_movielens(...)`` failed after ``import fmrec``
    (found while writing the docs): the submodules users call are attributes of the package."""
    import fmrec

    for name in ("datasets", "metrics", "split", "inspect", "plot"):
        assert name in fmrec.__all__
    assert callable(fmrec.datasets.load_movielens) and callable(fmrec.metrics.rmse)
    assert callable(fmrec.split.train_test_split)
