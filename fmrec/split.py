"""Train/test splits of interaction data for evaluating recommenders.

All splits are vectorised (group ranks, no loop over users), keep the input's index and row
order in both parts, and are reproducible given ``random_state``.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from fmrec._validation import check_choice, check_interval

METHODS = ("random", "per_user", "leave_last_out")
FOLD_METHODS = ("random", "per_user")


def train_test_split(df: pd.DataFrame, *, method: str = "random", test_size: float = 0.2,
                     user_col: str = "user_id", time_col: str = "timestamp",
                     random_state: int | np.random.Generator | None = None,
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split interactions into a train and a test frame.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per interaction.
    method : {"random", "per_user", "leave_last_out"}, default="random"
        ``"random"``: ``round(test_size * len(df))`` rows drawn uniformly go to test.
        ``"per_user"``: each user with ``n >= 2`` interactions puts ``round(test_size * n)``
        random ones in test, clipped to ``[1, n - 1]`` so the user is both trained on and
        evaluated; users with a single interaction stay entirely in train.
        ``"leave_last_out"``: each user's latest interaction by ``time_col`` goes to test;
        among equal timestamps the row that comes last in ``df`` is taken. Every user is
        held out, so a user with a single interaction has nothing left in train.
        ``test_size`` and ``random_state`` do not affect this method.
    test_size : float, default=0.2
        Fraction of rows (``"random"``) or of each user's rows (``"per_user"``) held out,
        strictly between 0 and 1.
    user_col : str, default="user_id"
        User column, needed by ``"per_user"`` and ``"leave_last_out"``.
    time_col : str, default="timestamp"
        Time column (any sortable dtype), needed by ``"leave_last_out"``.
    random_state : int, numpy.random.Generator or None
        Seed of the draw; the same seed gives the same split.

    Returns
    -------
    train, test : pandas.DataFrame
        Disjoint subsets of ``df`` whose union is ``df``, each in ``df``'s row order.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"user_id": [1, 1, 1, 2, 2], "item_id": [5, 6, 7, 5, 8],
    ...                    "timestamp": [10, 30, 20, 5, 1]})
    >>> train, test = train_test_split(df, method="leave_last_out")
    >>> test["item_id"].tolist(), len(train)
    ([6, 5], 3)
    >>> train, test = train_test_split(df, method="per_user", test_size=0.3, random_state=0)
    >>> test.groupby("user_id").size().tolist()
    [1, 1]
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    check_choice("method", method, METHODS)
    # bool is an Integral; True would otherwise pass as 1.0 and fail later with a vaguer message.
    if (isinstance(test_size, bool) or not isinstance(test_size, numbers.Real)
            or not 0.0 < float(test_size) < 1.0):
        raise ValueError(f"test_size must be a float strictly between 0 and 1, got {test_size!r}")
    needed = {"random": [], "per_user": [user_col], "leave_last_out": [user_col, time_col]}
    missing = [c for c in needed[method] if c not in df.columns]
    if missing:
        raise ValueError(f"df is missing column(s) {missing} needed by method={method!r}; "
                         f"it has {list(df.columns)}")
    for col in needed[method]:
        # groupby silently drops missing keys, which would lose those rows from both parts.
        na = df[col].isna().to_numpy()
        if na.any():
            raise ValueError(f"df column {col!r} has a missing value at row {int(na.argmax())} "
                             f"(label {df.index[na].tolist()[0]!r})")

    if method == "random":
        is_test = _random_mask(len(df), float(test_size), random_state)
    elif method == "per_user":
        is_test = _per_user_mask(df[user_col], float(test_size), random_state)
    else:
        is_test = _last_mask(df[user_col], df[time_col])
    # iloc by position keeps duplicate index labels apart and the original row order.
    return df.iloc[np.flatnonzero(~is_test)], df.iloc[np.flatnonzero(is_test)]


def kfold_split(df: pd.DataFrame, n_splits: int = 5, *, method: str = "per_user",
                user_col: str = "user_id",
                random_state: int | np.random.Generator | None = None,
                ) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """Split interactions into ``n_splits`` (train, test) pairs whose tests partition the rows.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per interaction.
    n_splits : int, default=5
        Number of folds, at least 2.
    method : {"per_user", "random"}, default="per_user"
        ``"per_user"``: each user's rows are shuffled and dealt to the folds in turn, from a
        random first fold, so every user with ``n >= 2`` interactions is spread over
        ``min(n, n_splits)`` folds and always keeps a row in train; users with a single
        interaction stay in train in every fold. ``"random"``: rows are dealt to the folds
        in a random order.
    user_col : str, default="user_id"
        User column, needed by ``"per_user"``.
    random_state : int, numpy.random.Generator or None
        Seed of the draw.

    Returns
    -------
    list of (train, test) pairs of pandas.DataFrame
        Each pair partitions ``df`` (rows in ``df``'s order).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 3], "item_id": [5, 6, 7, 5, 8, 9]})
    >>> folds = kfold_split(df, 3, random_state=0)
    >>> sorted(len(test) for _, test in folds)
    [1, 2, 2]
    >>> any(3 in set(test["user_id"]) for _, test in folds)
    False
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    check_interval("n_splits", n_splits, low=2, integer=True)
    check_choice("method", method, FOLD_METHODS)
    if len(df) < n_splits:
        raise ValueError(f"{n_splits} folds need at least {n_splits} rows, df has {len(df)}")
    rng = np.random.default_rng(random_state)
    if method == "random":
        fold = np.empty(len(df), dtype=np.int64)
        fold[rng.permutation(len(df))] = np.arange(len(df)) % n_splits
    else:
        if user_col not in df.columns:
            raise ValueError(f"df is missing column {user_col!r} needed by method='per_user'; "
                             f"it has {list(df.columns)}")
        if df[user_col].isna().any():
            raise ValueError(f"df column {user_col!r} has a missing value at row "
                             f"{int(df[user_col].isna().to_numpy().argmax())}")
        codes, _ = pd.factorize(df[user_col])
        pos = _positions_in_random_order(codes, rng)
        offset = rng.integers(n_splits, size=codes.max() + 1)
        fold = (pos + offset[codes]) % n_splits
        fold[np.bincount(codes)[codes] < 2] = -1
    return [(df.iloc[np.flatnonzero(fold != f)], df.iloc[np.flatnonzero(fold == f)])
            for f in range(n_splits)]


def _positions_in_random_order(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each row's position among its group's rows taken in a uniformly random order."""
    n = len(codes)
    counts = np.bincount(codes)
    # A random permutation as the sort key, ranked within each group: no ties to break.
    order = np.lexsort((rng.permutation(n), codes))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n) - starts[codes[order]]
    return pos


def _round_half_up(x: np.ndarray | float) -> np.ndarray:
    # np.round rounds half to even (2.5 -> 2), which is surprising in a documented split size.
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def _random_mask(n: int, test_size: float, random_state) -> np.ndarray:
    rng = np.random.default_rng(random_state)
    is_test = np.zeros(n, dtype=bool)
    is_test[rng.permutation(n)[: int(_round_half_up(test_size * n))]] = True
    return is_test


def _per_user_mask(users: pd.Series, test_size: float, random_state) -> np.ndarray:
    rng = np.random.default_rng(random_state)
    codes, _ = pd.factorize(users)
    counts = np.bincount(codes)
    # At least one row in each part for users with two or more; single users keep theirs.
    n_test = np.where(counts >= 2,
                      np.clip(_round_half_up(test_size * counts), 1, np.maximum(counts - 1, 1)), 0)
    return _positions_in_random_order(codes, rng) < n_test[codes]


def _last_mask(users: pd.Series, times: pd.Series) -> np.ndarray:
    # Reversing the rows makes rank(method="first") prefer the later row among equal times.
    rev = times.iloc[::-1].reset_index(drop=True)
    grp = users.iloc[::-1].reset_index(drop=True)
    rank = rev.groupby(grp, sort=False, observed=True).rank(method="first", ascending=False)
    first = rank.to_numpy() == 1
    return first[::-1].copy()
