"""The ``fmrec`` command line: train, predict, recommend, evaluate, tune and demo."""

from fmrec.cli.commands import main

__all__ = ["main"]
