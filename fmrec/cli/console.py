"""What the ``fmrec`` command shows besides its results: notes and per-epoch progress on
stderr, silenced by ``-q``."""

from __future__ import annotations

import contextlib
import logging
import sys
import time

_EPOCH_FORMAT = "epoch %d %s"  # what estimators log per epoch with verbose=1


class _EpochLines(logging.Handler):
    """Turns the estimators' per-epoch log records into a few progress lines on stderr."""

    def __init__(self, label: str, n_epochs: int):
        super().__init__(logging.INFO)
        self.label, self.n_epochs = label, n_epochs
        # About five lines per fit: enough to see it move, few enough to read.
        self.every = max(1, n_epochs // 5)

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg != _EPOCH_FORMAT or len(args) != 2:
            print(f"{self.label}: {record.getMessage()}", file=sys.stderr)
            return
        epoch = int(args[0]) + 1
        if epoch == 1 or epoch % self.every == 0 or epoch == self.n_epochs:
            print(f"{self.label}: epoch {epoch}/{self.n_epochs} {args[1]}", file=sys.stderr)


class Console:
    """What the user sees besides results: notes and per-epoch lines, unless quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    @property
    def verbose(self) -> int:
        """The ``verbose`` to give estimators: they log epochs only when someone listens."""
        return 0 if self.quiet else 1

    def note(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr)

    @contextlib.contextmanager
    def training(self, label: str, n_epochs: int):
        """Show the epochs of the fit run inside, then its duration; yields a timer."""
        logger = logging.getLogger("fmrec")
        handler = _EpochLines(label, n_epochs)
        saved = logger.level, logger.propagate
        if not self.quiet:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False  # an application's root handler would print them twice
        timer = {"start": time.perf_counter()}
        try:
            yield timer
        finally:
            logger.removeHandler(handler)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]
            timer["seconds"] = time.perf_counter() - timer["start"]
        self.note(f"{label}: trained in {timer['seconds']:.1f} s")
