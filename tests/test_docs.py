"""The examples users copy: docstring examples and the README's quick start."""

import doctest
import re
from pathlib import Path

import pytest

import fmrec.estimators
import fmrec.persistence

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("module", [fmrec.estimators, fmrec.persistence])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_readme_quick_start_runs(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)  # it saves model.npz in the working folder
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "model.npz").is_file()
