"""Sphinx configuration of the fmrec documentation.

Build it with ``sphinx-build -W -b html docs/source docs/build/html`` from the repository
root, in an environment with ``pip install ".[docs]"``. The API pages are generated from the
installed package's docstrings (numpydoc); the gallery runs ``examples/plot_*.py`` and puts
their output and figures on the pages. ``-D plot_gallery=0`` skips running them.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import fmrec

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _gallery.py

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

project = "fmrec"
author = "the fmrec developers"
copyright = f"{time.gmtime().tm_year}, {author}"
version = release = fmrec.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip"]
# `name` in a docstring links to the API page of that object when there is one.
default_role = "py:obj"

autosummary_generate = True
autodoc_default_options = {"members": True}
autodoc_typehints = "none"  # the numpydoc sections state the types
numpydoc_show_class_members = False  # the class template lists members instead
numpydoc_class_members_toctree = False

intersphinx_mapping = {}  # offline builds: links to other projects' docs are plain text

html_theme = "furo"
html_title = f"fmrec {version}"
html_static_path = []
html_show_sourcelink = False


sphinx_gallery_conf = {
    "examples_dirs": str(REPO / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"quickstart\.py",
    "within_subsection_order": "_gallery.gallery_order",
    "image_scrapers": ("_gallery.fmrec_figures", "matplotlib"),
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "show_memory": False,
    "min_reported_time": 0,
    "capture_repr": (),  # what a script prints is its output, not the repr of a last value
    "remove_config_comments": True,
    "run_stale_examples": True,
    "reference_url": {"fmrec": None},
    "doc_module": ("fmrec",),
    "backreferences_dir": None,
}

# Examples read MovieLens 100K when it is there ($FMREC_DATA_HOME), else synthetic data.
os.environ.setdefault("MPLBACKEND", "Agg")


# ------------------------------------------------------------------- the CLI's help texts
def write_cli_help(app) -> None:
    """Write ``fmrec --help`` and each ``fmrec COMMAND --help`` to _generated/, which
    guide/cli.rst includes: the page shows the options of the installed command."""
    import argparse

    from fmrec.cli.parser import build_parser

    out = HERE / "_generated"
    out.mkdir(exist_ok=True)
    os.environ["COLUMNS"] = "92"  # argparse wraps to the terminal width
    parser = build_parser()
    parser.prog = "fmrec"
    (out / "cli_fmrec.txt").write_text(parser.format_help())
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                (out / f"cli_{name}.txt").write_text(sub.format_help())


def unlink_metric_names(app, doctree, docname) -> None:
    """docutils reads "NDCG@10" and "P@10" as e-mail addresses; show them as plain text."""
    from docutils import nodes

    for ref in list(doctree.findall(nodes.reference)):
        if ref.get("refuri", "").startswith("mailto:"):
            ref.replace_self(nodes.Text(ref.astext()))


def setup(app):
    app.connect("builder-inited", write_cli_help)
    app.connect("doctree-resolved", unlink_metric_names)
