"""The recommender's numerical core: FM scores split by entity, top-N, fold-in, sampling.

Everything here works on NumPy/SciPy arrays; ``fmrec.recommend`` turns DataFrames into them.

An FM row that is the concatenation of a user part u, an item part i and a context part c
scores

    ŷ = w0 + t_u + t_i + t_c + ⟨q_u, q_i⟩ + ⟨q_u, q_c⟩ + ⟨q_i, q_c⟩

with q_x = Σ_{j∈x} v_j x_j and t_x = Σ_{j∈x} w_j x_j + ½(|q_x|² − Σ_{j∈x} |v_j|² x_j²): the
sum-of-squares identity applied to each part, plus the cross terms between parts. So a user
(with its context) is a vector a = q_u + q_c and a constant b = w0 + t_u + t_c + ⟨q_u, q_c⟩,
an item is q_i and t_i, and ŷ = b + t_i + ⟨a, q_i⟩: scoring all items is one matrix product.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from fmrec._links import sigmoid

# Scores of this many (user, item) pairs are held at once (32 MB of float64).
_BATCH_ENTRIES = 1 << 22


def top_n(a: np.ndarray, b: np.ndarray, q_items: np.ndarray, t_items: np.ndarray, n: int,
          exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best items of every user, best first.

    Parameters
    ----------
    a, b : arrays of shape (n_users, k) and (n_users,)
        User (with context) vectors and constants; see the module docstring.
    q_items, t_items : arrays of shape (n_items, k) and (n_items,)
    n : int
    exclude : CSR of shape (n_users, n_items), optional
        Pattern of the (user, item) pairs that must not be recommended.

    Returns
    -------
    items : int64 array of shape (n_users, min(n, n_items))
        Item positions, -1 where a user has fewer than that many allowed items.
    scores : float64 array of the same shape
        ŷ of those pairs (-inf where ``items`` is -1).
    """
    n_users, n_items = len(a), len(t_items)
    n = min(n, n_items)
    items = np.full((n_users, n), -1, dtype=np.int64)
    scores = np.full((n_users, n), -np.inf)
    if n == 0:
        return items, scores
    batch = max(1, _BATCH_ENTRIES // n_items)
    for lo in range(0, n_users, batch):
        hi = min(lo + batch, n_users)
        S = a[lo:hi] @ q_items.T
        S += b[lo:hi, None]
        S += t_items[None, :]
        if exclude is not None:
            ex = exclude[lo:hi]
            S[np.repeat(np.arange(hi - lo), np.diff(ex.indptr)), ex.indices] = -np.inf
        # argpartition finds the n largest in linear time; only they get sorted.
        best = (np.argpartition(-S, n - 1, axis=1)[:, :n] if n < n_items
                else np.broadcast_to(np.arange(n_items), S.shape))
        best_scores = np.take_along_axis(S, best, axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")
        best = np.take_along_axis(best, order, axis=1)
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        allowed = np.isfinite(best_scores)
        items[lo:hi] = np.where(allowed, best, -1)
        scores[lo:hi] = best_scores
    return items, scores


def cosine_top_n(Q: np.ndarray, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``rows``, the ``n`` other rows of ``Q`` of highest cosine similarity."""
    norms = np.linalg.norm(Q, axis=1)
    unit = Q / np.where(norms > 0, norms, 1.0)[:, None]
    a = unit[rows]
    exclude = sp.csr_matrix((np.ones(len(rows)), (np.arange(len(rows)), rows)),
                            shape=(len(rows), len(Q)))
    return top_n(a, np.zeros(len(rows)), unit, np.zeros(len(Q)), n, exclude)


def fold_in(Z: np.ndarray, offset: np.ndarray, y: np.ndarray, group: np.ndarray,
            n_groups: int, reg: np.ndarray, reg_power: float, logistic: bool,
            sample_weight: np.ndarray | None = None, n_newton: int = 25) -> np.ndarray:
    """Per group g, θ_g minimizing Σ_{r∈g} s_r loss(offset_r + z_r·θ_g, y_r)
    + ½ n_g^p Σ reg·θ_g², with n_g = Σ_{r∈g} s_r.

    This is the model's own training objective restricted to one new entity's parameters
    (everything else frozen): ``z_r`` holds what multiplies each of them in row r, ``offset``
    the rest of the row's output. The square loss (½ e², as the solvers use) is a ridge
    regression solved exactly; the log loss takes Newton steps, each a ridge solve.

    Parameters
    ----------
    Z : array of shape (n_rows, m)
    offset, y : arrays of shape (n_rows,)
    group : int array of shape (n_rows,)
        The entity of each row, in [0, n_groups).
    reg : array of shape (m,)
        Penalty of each parameter before the n_g^p scaling (the model's reg_linear,
        reg_factors...); a parameter with an infinite penalty stays 0.
    reg_power : float
        The model's ``reg_power``: penalties grow with the entity's row count as n^p.
    logistic : bool
        Log loss on labels in {0, 1} instead of the square loss.
    sample_weight : array of shape (n_rows,), optional
        Row weights s_r (default 1).

    Returns
    -------
    theta : array of shape (n_groups, m)
    """
    m = Z.shape[1]
    sw = np.ones(len(group)) if sample_weight is None else np.asarray(sample_weight, float)
    # Rows sorted by group: each group's normal equations are one small matrix product.
    order = np.argsort(group, kind="stable")
    Z, offset, y, sw, group = Z[order], offset[order], y[order], sw[order], group[order]
    bounds = np.searchsorted(group, np.arange(n_groups + 1))
    counts = np.bincount(group, weights=sw, minlength=n_groups)
    free = np.isfinite(reg)
    lam = counts[:, None] ** reg_power * np.where(free, reg, 0.0)[None, :]
    theta = np.zeros((n_groups, m))
    for _ in range(n_newton if logistic else 1):
        out = offset + np.einsum("rm,rm->r", Z, theta[group])
        if logistic:
            p = sigmoid(out)
            weight, grad_r = sw * p * (1.0 - p), sw * (p - y)
        else:
            weight, grad_r = sw, sw * (out - y)
        H = np.zeros((n_groups, m, m))
        g = lam * theta
        for k in np.flatnonzero(bounds[1:] > bounds[:-1]):
            rows = slice(bounds[k], bounds[k + 1])
            H[k] = Z[rows].T @ (weight[rows, None] * Z[rows])
            g[k] += Z[rows].T @ grad_r[rows]
        H[:, np.arange(m), np.arange(m)] += lam
        # Frozen parameters: identity rows, zero gradient, so their step is 0; an entity
        # without rows gets θ = 0 rather than a singular solve.
        H[:, ~free, :] = 0.0
        H[:, :, ~free] = 0.0
        H[:, ~free, ~free] = 1.0
        g[:, ~free] = 0.0
        H[counts == 0] = np.eye(m)
        step = np.linalg.solve(H, g[:, :, None])[:, :, 0]
        theta -= step
        if np.max(np.abs(step), initial=0.0) < 1e-10:
            break
    return theta


def sample_negatives(seen: sp.csr_matrix, users: np.ndarray, n_per: int, n_items: int,
                     probs: np.ndarray | None, rng: np.random.Generator,
                     max_rounds: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """``n_per`` items for each entry of ``users``, never one the user has in ``seen``.

    Candidates are drawn with probabilities ``probs`` (uniform if None) over ``n_items``
    items and redrawn while they hit a seen item; entries still unresolved after
    ``max_rounds`` rounds (users who have seen nearly everything) are drawn exactly from their
    unseen items, and dropped when there is none.

    Returns
    -------
    source : int64 array
        Index into ``users`` of every negative (so callers can copy its context).
    items : int64 array
    """
    seen = sp.csr_matrix(seen)
    seen.sort_indices()
    # Row-major keys of the seen pairs are sorted: membership is a binary search.
    seen_keys = (np.repeat(np.arange(seen.shape[0], dtype=np.int64), np.diff(seen.indptr))
                 * n_items + seen.indices)
    source = np.repeat(np.arange(len(users), dtype=np.int64), n_per)
    u = np.asarray(users, dtype=np.int64)[source]
    cdf = None if probs is None else np.cumsum(probs / probs.sum())

    def draw(size):
        if cdf is None:
            return rng.integers(0, n_items, size)
        return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), n_items - 1)

    def is_seen(uu, ii):
        keys = uu * n_items + ii
        at = np.minimum(np.searchsorted(seen_keys, keys), max(len(seen_keys) - 1, 0))
        return seen_keys[at] == keys if len(seen_keys) else np.zeros(len(keys), bool)

    items = draw(len(u))
    todo = np.flatnonzero(is_seen(u, items))
    for _ in range(max_rounds):
        if not len(todo):
            break
        items[todo] = draw(len(todo))
        todo = todo[is_seen(u[todo], items[todo])]
    keep = np.ones(len(u), dtype=bool)
    for r in todo:  # rare: users who have seen (nearly) every item
        unseen = np.setdiff1d(np.arange(n_items), seen.indices[seen.indptr[u[r]]:
                                                               seen.indptr[u[r] + 1]])
        if not len(unseen):
            keep[r] = False
            continue
        p = None if probs is None else probs[unseen] / probs[unseen].sum()
        items[r] = rng.choice(unseen, p=p)
    return source[keep], items[keep]

