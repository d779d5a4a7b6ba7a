"""The ``fmrec`` command line: train, predict, recommend, evaluate, tune and demo.

``app`` (main) runs ``parser`` (the options) and ``commands`` (what each subcommand does);
``console`` shows progress, ``io`` reads and writes the files, ``demo`` is ``fmrec demo``.
"""

from fmrec.cli.app import main

__all__ = ["main"]
