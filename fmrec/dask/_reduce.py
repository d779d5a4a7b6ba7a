"""Reductions that run on the cluster: only the combined result reaches the client."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dask

FAN_IN = 8  # pieces combined per task: a tree of depth log_8(partitions)


def tree_reduce(pieces: Sequence, combine: Callable[[list], object], fan_in: int = FAN_IN):
    """One Delayed combining ``pieces`` (Delayed objects or futures) level by level.

    ``combine(list_of_values) -> value`` must be associative; each task combines at most
    ``fan_in`` values, so no task (and not the client) ever holds more than that many
    partition results at once.
    """
    if not pieces:
        raise ValueError("nothing to reduce: no partitions")
    level = list(pieces)
    combine_task = dask.delayed(combine, pure=True)
    while len(level) > 1:
        level = [combine_task(level[i:i + fan_in]) for i in range(0, len(level), fan_in)]
    # A single piece still passes through ``combine`` once, so the result has one form.
    return level[0] if len(pieces) > 1 else combine_task(level)
