"""Slow, obviously-correct NumPy Factorization Machine: the yardstick for the Cython kernels.

Written for clarity, not speed: dense per-row arithmetic, the pairwise sum spelled out in
``predict_pairwise``, Python loops over rows and coordinates. Tests check these functions by
finite differences and then check the kernels against them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

SQUARE, LOGISTIC = 0, 1


def predict_pairwise(X, w0: float, w: np.ndarray, V: np.ndarray) -> np.ndarray:
    """ŷ(x) = w0 + Σ w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j, with the O(d²) double sum."""
    X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)
    out = np.empty(X.shape[0])
    G = V.astype(np.float64) @ V.astype(np.float64).T
    for r, x in enumerate(X):
        pair = 0.0
        for i in range(len(x)):
            for j in range(i + 1, len(x)):
                pair += G[i, j] * x[i] * x[j]
        out[r] = w0 + x @ w + pair
    return out


def predict(X, w0: float, w: np.ndarray, V: np.ndarray) -> np.ndarray:
    """The same output through the sum-of-squares identity (vectorized, float64)."""
    X = sp.csr_matrix(X, dtype=np.float64)
    V = V.astype(np.float64)
    q = X @ V
    sq = X.multiply(X) @ (V**2)
    return w0 + X @ w.astype(np.float64) + 0.5 * (q**2 - sq).sum(axis=1)


def loss_value(loss: int, yhat, y):
    """Pointwise loss: 0.5 (ŷ-y)² or the log loss of σ(ŷ) for y ∈ {0, 1}."""
    yhat, y = np.asarray(yhat, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if loss == SQUARE:
        return 0.5 * (yhat - y) ** 2
    margin = np.where(y > 0.5, yhat, -yhat)
    return np.logaddexp(0.0, -margin)


def loss_gradient(loss: int, yhat, y):
    """d loss / d ŷ."""
    yhat, y = np.asarray(yhat, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if loss == SQUARE:
        return yhat - y
    return 0.5 * (1.0 + np.tanh(0.5 * yhat)) - y


def loss_curvature(loss: int, yhat):
    """d² loss / d ŷ², floored at 1e-6 for the logistic loss (as the kernels do)."""
    yhat = np.asarray(yhat, dtype=np.float64)
    if loss == SQUARE:
        return np.ones_like(yhat)
    p = 0.5 * (1.0 + np.tanh(0.5 * yhat))
    return np.maximum(p * (1.0 - p), 1e-6)


def output_gradients(x: np.ndarray, V: np.ndarray):
    """∂ŷ/∂w0, ∂ŷ/∂w and ∂ŷ/∂V for one dense row x."""
    x = np.asarray(x, dtype=np.float64)
    q = x @ V
    dV = x[:, None] * q[None, :] - V * (x**2)[:, None]
    return 1.0, x.copy(), dV


def objective(X, y, s, loss, w0, w, V, reg_bias, reg_linear, reg_factors):
    """Σ s_i loss_i + ½ (reg_bias w0² + Σ_j reg_linear_j w_j² + reg_factors_j |v_j|²).

    ``reg_linear`` / ``reg_factors`` are per-feature arrays (or scalars).
    """
    yhat = predict(X, w0, w, V)
    data = float(np.sum(s * loss_value(loss, yhat, y)))
    pen = reg_bias * w0**2 + np.sum(reg_linear * w**2) + np.sum(
        np.asarray(reg_factors)[..., None] * V**2 if np.ndim(reg_factors) else reg_factors * V**2
    )
    return data + 0.5 * float(pen)


def sgd_epoch(X, y, s, order, w0, w, V, *, loss, learning_rate, adagrad, reg_bias, reg_linear,
              reg_factors, reg_scale=None, fit_intercept=True, fit_linear=True, acc=None,
              eps=1e-8):
    """One SGD epoch, row by row in ``order``; returns new (w0, w, V, acc) and the loss sum.

    Per row with weight s: g = s ∂loss/∂ŷ; every touched parameter θ takes the step
    θ -= lr (g ∂ŷ/∂θ + s reg c_j θ), or the AdaGrad step with per-parameter accumulators;
    c_j = reg_scale[j] (1 when None) for the parameters of feature j, 1 for the intercept.
    Factor sums q come from the parameters before the row's update.
    """
    X = sp.csr_matrix(X, dtype=np.float64)
    w0, w, V = float(w0), w.astype(np.float64).copy(), V.astype(np.float64).copy()
    if acc is None:
        acc = (0.0, np.zeros_like(w), np.zeros_like(V))
    a0, aw, aV = acc[0], acc[1].astype(np.float64).copy(), acc[2].astype(np.float64).copy()
    loss_sum = 0.0
    for i in order:
        lo, hi = X.indptr[i], X.indptr[i + 1]
        idx, val = X.indices[lo:hi], X.data[lo:hi]
        q = val @ V[idx]
        yhat = w0 + val @ w[idx] + 0.5 * (q @ q - np.sum((V[idx] * val[:, None]) ** 2))
        loss_sum += s[i] * loss_value(loss, yhat, y[i])
        g = s[i] * loss_gradient(loss, yhat, y[i])
        if fit_intercept:
            grad = g + s[i] * reg_bias * w0
            if adagrad:
                a0 += grad**2
                w0 -= learning_rate * grad / np.sqrt(a0 + eps)
            else:
                w0 -= learning_rate * grad
        for j, x in zip(idx, val, strict=True):
            c = 1.0 if reg_scale is None else float(reg_scale[j])
            if fit_linear:
                grad = g * x + s[i] * reg_linear * c * w[j]
                if adagrad:
                    aw[j] += grad**2
                    w[j] -= learning_rate * grad / np.sqrt(aw[j] + eps)
                else:
                    w[j] -= learning_rate * grad
            grad = g * x * (q - V[j] * x) + s[i] * reg_factors * c * V[j]
            if adagrad:
                aV[j] += grad**2
                V[j] -= learning_rate * grad / np.sqrt(aV[j] + eps)
            else:
                V[j] -= learning_rate * grad
    return w0, w, V, (a0, aw, aV), loss_sum


def als_sweep(X, y, s, w0, w, V, *, loss, reg_bias, reg_linear, reg_factors,
              fit_intercept=True, fit_linear=True, block_starts=None):
    """One coordinate-descent sweep: w0, then for each feature j: w_j, v_j1 … v_jk.

    Each coordinate θ moves by -(Σ s g h + reg θ) / (Σ s c h² + reg), h = ∂ŷ/∂θ, with ŷ
    recomputed from scratch before every coordinate (no caches): g and c are the loss's
    gradient and curvature. For the square loss this is the coordinate's exact minimizer.
    ``reg_linear`` and ``reg_factors`` are per-feature arrays.

    ``block_starts`` (the order of a DesignMatrix sweep): columns from ``block_starts[0]`` on
    belong to relation blocks, block b spanning [block_starts[b], block_starts[b + 1]) (the
    last one runs to the end). Each block is swept in passes, its w_j first, then its v_j1
    for every j, then v_j2, …; within a pass the loss is its quadratic model at the pass's
    start: g = g₀ + c₀ (ŷ − ŷ₀) and c = c₀.
    """
    Xd = np.asarray(sp.csr_matrix(X).toarray(), dtype=np.float64)
    w0, w, V = float(w0), w.astype(np.float64).copy(), V.astype(np.float64).copy()
    d = Xd.shape[1]
    starts = list(block_starts) if block_starts is not None else []
    frozen = None  # (ŷ₀, g₀, c₀) inside a block pass

    def step(h, theta, reg):
        yhat = predict(Xd, w0, w, V)
        if frozen is None:
            g, c = loss_gradient(loss, yhat, y), loss_curvature(loss, yhat)
        else:
            g, c = frozen[1] + frozen[2] * (yhat - frozen[0]), frozen[2]
        num = np.sum(s * g * h) + reg * theta
        den = np.sum(s * c * h * h) + reg
        return theta - num / den if den > 0 else theta

    def freeze():
        yhat = predict(Xd, w0, w, V)
        return yhat, loss_gradient(loss, yhat, y), loss_curvature(loss, yhat)

    if fit_intercept:
        w0 = step(np.ones(len(y)), w0, reg_bias)
    for j in range(starts[0] if starts else d):
        col = Xd[:, j]
        if not np.any(col):
            if fit_linear and reg_linear[j] > 0:
                w[j] = 0.0
            if reg_factors[j] > 0:
                V[j] = 0.0
            continue
        if fit_linear:
            w[j] = step(col, w[j], reg_linear[j])
        for f in range(V.shape[1]):
            q = Xd @ V[:, f]
            h = col * (q - V[j, f] * col)
            V[j, f] = step(h, V[j, f], reg_factors[j])
    for lo, hi in zip(starts, starts[1:] + [d], strict=False):
        unused = [j for j in range(lo, hi) if not np.any(Xd[:, j])]
        for j in unused:  # as for flat columns: the penalty alone puts them at zero
            if fit_linear and reg_linear[j] > 0:
                w[j] = 0.0
            if reg_factors[j] > 0:
                V[j] = 0.0
        used = [j for j in range(lo, hi) if j not in unused]
        if fit_linear:
            frozen = freeze()
            for j in used:
                w[j] = step(Xd[:, j], w[j], reg_linear[j])
        for f in range(V.shape[1]):
            frozen = freeze()
            for j in used:
                q = Xd @ V[:, f]
                h = Xd[:, j] * (q - V[j, f] * Xd[:, j])
                V[j, f] = step(h, V[j, f], reg_factors[j])
        frozen = None
    return w0, w, V


def gibbs_sweep(X, y, s, w0, w, V, *, normals, groups, prior, alpha, w0_prec, w0_mean=0.0,
                fit_intercept=True, fit_linear=True, block_starts=None):
    """One Gibbs sweep of a Bayesian FM (square loss): w0, then for each feature j: w_j,
    v_j1 … v_jk, in the kernel's order and with its draws.

    Every coordinate θ with prior N(μ, 1/λ) is drawn from its full conditional, a normal with
    precision P = α Σ s h² + λ and mean (α Σ s h (y − ŷ + θ h) + λ μ) / P, h = ∂ŷ/∂θ, ŷ
    recomputed from scratch: θ = mean + z / √P with z the next of ``normals`` (normals[0] for
    w0, normals[1 + j (k + 1)] for w_j, normals[2 + j (k + 1) + f] for v_jf). ``prior`` holds
    per group [λ_w, μ_w, λ_v1..k, μ_v1..k]; ``groups[j]`` is feature j's group; w0 has the
    prior N(w0_mean, 1 / w0_prec). ``block_starts``: the order of a DesignMatrix sweep (see
    ``als_sweep``): each block's w_j first, then its v_j1 for every j, then v_j2, …
    """
    Xd = np.asarray(sp.csr_matrix(X).toarray(), dtype=np.float64)
    y, s = np.asarray(y, np.float64), np.asarray(s, np.float64)
    w0, w, V = float(w0), w.astype(np.float64).copy(), V.astype(np.float64).copy()
    k = V.shape[1]

    def draw(h, theta, lam, mu, z):
        e = y - predict(Xd, w0, w, V)
        prec = alpha * np.sum(s * h * h) + lam
        mean = (alpha * np.sum(s * h * (e + theta * h)) + lam * mu) / prec
        return mean + z / np.sqrt(prec)

    def draw_linear(j):
        row = prior[groups[j]]
        w[j] = draw(Xd[:, j], w[j], row[0], row[1], normals[1 + j * (k + 1)])

    def draw_factor(j, f):
        col, row = Xd[:, j], prior[groups[j]]
        h = col * (Xd @ V[:, f] - V[j, f] * col)
        V[j, f] = draw(h, V[j, f], row[2 + f], row[2 + k + f], normals[2 + j * (k + 1) + f])

    d = Xd.shape[1]
    starts = list(block_starts) if block_starts is not None else []
    if fit_intercept:
        w0 = draw(np.ones(len(y)), w0, w0_prec, w0_mean, normals[0])
    for j in range(starts[0] if starts else d):
        if fit_linear:
            draw_linear(j)
        for f in range(k):
            draw_factor(j, f)
    for lo, hi in zip(starts, starts[1:] + [d], strict=False):
        if fit_linear:
            for j in range(lo, hi):
                draw_linear(j)
        for f in range(k):
            for j in range(lo, hi):
                draw_factor(j, f)
    return w0, w, V


# --------------------------------------------------------------------------------------------
# BPR (Bayesian Personalized Ranking) for fmrec.models.ranker.FMRanker.
#
# A triple (u, i, j) compares the FM outputs of the dense rows z = U[u] + I[i] (positive) and
# z' = U[u] + I[j] (negative). Its loss is
#
#     ℓ = -ln σ(ŷ(z) - ŷ(z')) + ½ reg_linear Σ_{c ∈ I[i] ∪ I[j]} w_c²
#                              + ½ reg_factors Σ_{c ∈ U[u] ∪ I[i] ∪ I[j]} |v_c|²
#
# (c ∈ R: column c is non-zero in row R). w0 cancels in the difference and is not trained.
# --------------------------------------------------------------------------------------------

def _bpr_masks(u, i, j):
    touched_w = (i != 0) | (j != 0)
    return touched_w, touched_w | (u != 0)


def bpr_triple_loss(u, i, j, w, V, reg_linear, reg_factors) -> float:
    """ℓ of one triple for dense rows u, i, j, through ``predict_pairwise`` (the O(d²) sum)."""
    u, i, j = (np.asarray(r, dtype=np.float64) for r in (u, i, j))
    w, V = np.asarray(w, dtype=np.float64), np.asarray(V, dtype=np.float64)
    d = float(predict_pairwise((u + i)[None, :], 0.0, w, V)[0]
              - predict_pairwise((u + j)[None, :], 0.0, w, V)[0])
    mw, mv = _bpr_masks(u, i, j)
    pen = reg_linear * np.sum(w[mw] ** 2) + reg_factors * np.sum(V[mv] ** 2)
    return float(np.logaddexp(0.0, -d)) + 0.5 * float(pen)


def bpr_triple_gradient(u, i, j, w, V, reg_linear, reg_factors):
    """(-ln σ(d), ∂ℓ/∂w, ∂ℓ/∂V) of one triple: d's gradient is the difference of the two
    rows' ``output_gradients``; the loss returned excludes the penalties."""
    u, i, j = (np.asarray(r, dtype=np.float64) for r in (u, i, j))
    w, V = np.asarray(w, dtype=np.float64), np.asarray(V, dtype=np.float64)
    zp, zn = u + i, u + j
    d = float(predict(zp[None, :], 0.0, w, V)[0] - predict(zn[None, :], 0.0, w, V)[0])
    _, dw_p, dV_p = output_gradients(zp, V)
    _, dw_n, dV_n = output_gradients(zn, V)
    g = -0.5 * (1.0 - np.tanh(0.5 * d))  # d(-ln σ(d))/dd = -σ(-d)
    mw, mv = _bpr_masks(u, i, j)
    gw = g * (dw_p - dw_n) + reg_linear * np.where(mw, w, 0.0)
    gV = g * (dV_p - dV_n) + reg_factors * np.where(mv[:, None], V, 0.0)
    return float(np.logaddexp(0.0, -d)), gw, gV


def bpr_triple_step(u, i, j, w, V, *, learning_rate, adagrad, reg_linear, reg_factors,
                    acc=None, eps=1e-8):
    """One SGD (or AdaGrad) step of one triple on copies of w, V (and of acc = (acc_w, acc_V)).

    Only the penalized ("touched") parameters move; AdaGrad adds g² to their accumulators and
    steps θ -= lr g / sqrt(acc + eps). Returns (w, V, acc, -ln σ(d) before the step).
    """
    u, i, j = (np.asarray(r, dtype=np.float64) for r in (u, i, j))
    w, V = w.astype(np.float64).copy(), V.astype(np.float64).copy()
    if acc is None:
        acc = (np.zeros_like(w), np.zeros_like(V))
    aw, aV = acc[0].astype(np.float64).copy(), acc[1].astype(np.float64).copy()
    loss, gw, gV = bpr_triple_gradient(u, i, j, w, V, reg_linear, reg_factors)
    mw, mv = _bpr_masks(u, i, j)
    if adagrad:
        aw[mw] += gw[mw] ** 2
        aV[mv] += gV[mv] ** 2
        w[mw] -= learning_rate * gw[mw] / np.sqrt(aw[mw] + eps)
        V[mv] -= learning_rate * gV[mv] / np.sqrt(aV[mv] + eps)
    else:
        w[mw] -= learning_rate * gw[mw]
        V[mv] -= learning_rate * gV[mv]
    return w, V, (aw, aV), loss


def bpr_epoch(U, I, users, items, negatives, order, w, V, *, learning_rate, adagrad,  # noqa: E741
              reg_linear, reg_factors, acc=None):
    """``bpr_triple_step`` over the triples (users[t], items[t], negatives[t]), t in ``order``.

    Returns (w, V, acc, sum of -ln σ(d) before each step).
    """
    U = np.asarray(sp.csr_matrix(U).toarray(), dtype=np.float64)
    I = np.asarray(sp.csr_matrix(I).toarray(), dtype=np.float64)  # noqa: E741
    loss_sum = 0.0
    for t in order:
        w, V, acc, loss = bpr_triple_step(
            U[users[t]], I[items[t]], I[negatives[t]], w, V, learning_rate=learning_rate,
            adagrad=adagrad, reg_linear=reg_linear, reg_factors=reg_factors, acc=acc)
        loss_sum += loss
    return w, V, acc, loss_sum


def popular_lists(train: pd.DataFrame, users, n: int = 10, user_col: str = "user_id",
                  item_col: str = "item_id") -> pd.DataFrame:
    """The baseline every ranker must beat: the n most popular training items each user has
    no training interaction with, as ``user, item, rank`` rows."""
    order = train[item_col].value_counts().index
    seen = train.groupby(user_col)[item_col].agg(set)
    rows = []
    for u in users:
        mine = seen.get(u, set())
        top = [i for i in order[:n + len(mine)] if i not in mine][:n]
        rows += [(u, i, rank + 1) for rank, i in enumerate(top)]
    return pd.DataFrame(rows, columns=["user", "item", "rank"])
