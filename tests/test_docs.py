"""The examples users copy: docstring examples and the README's quick start."""

import doctest
import re
from pathlib import Path

import pytest

import fmrec.design
import fmrec.models.fm
import fmrec.persistence
import fmrec.recommend.defaults
import fmrec.recommend.recommender

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("module", [fmrec.models.fm, fmrec.persistence, fmrec.design,
                                    fmrec.recommend.recommender, fmrec.recommend.defaults])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)  # they save model files in the working folder
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "model.npz").is_file() and (tmp_path / "recommender.npz").is_file()
