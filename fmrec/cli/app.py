"""``main``: run the ``fmrec`` command; a problem the user can fix becomes one
``fmrec: error: ...`` line on stderr and exit code 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from fmrec.cli.commands import USAGE_ERROR
from fmrec.cli.console import Console
from fmrec.cli.parser import build_parser

NETWORK_ERROR = 1  # the exit code when a download (fmrec demo --download) failed
# What a command raises for input, files, settings or a machine it cannot use: one line and
# exit 2. OSError covers unwritable or directory paths; ImportError an optional dependency
# (a database driver) that is missing; MemoryError input whose model would not fit.
USER_ERRORS = (ValueError, TypeError, KeyError, OSError, ImportError, MemoryError)


def _message(exc: BaseException) -> str:
    """One line for the user: the message itself, whitespace (and tracebacks) folded."""
    if isinstance(exc, FileNotFoundError) and exc.filename is not None:
        text = f"file {exc.filename!r} not found"
    elif isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    elif isinstance(exc, MemoryError):
        text = f"not enough memory ({exc or 'the input is too large'})"
    elif isinstance(exc, KeyError) and len(exc.args) == 1:
        text = f"not found: {exc.args[0]}"  # str(KeyError) would show it in extra quotes
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fmrec`` command (the console script and ``python -m fmrec``).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit code: 0, 2 after a usage error or input, a file or a setting the command
        cannot use (``USER_ERRORS``), or 1 when a download failed (the reason is one
        ``fmrec: error: ...`` line on stderr).
        ``--help`` and ``--version`` exit through ``SystemExit`` as argparse does.

    Examples
    --------
    >>> main(["predict", "no-such-model.npz", "pairs.csv"])  # message on stderr
    2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    try:
        args.run(args, Console(quiet=args.quiet))
    except BrokenPipeError:
        # The reader of stdout went away (fmrec predict ... | head): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ConnectionError as exc:  # a failed download (BrokenPipeError, above, is one too)
        print(f"{parser.prog}: error: {_message(exc)}", file=sys.stderr)
        return NETWORK_ERROR
    except USER_ERRORS as exc:
        print(f"{parser.prog}: error: {_message(exc)}", file=sys.stderr)
        return USAGE_ERROR
    return 0
