# One coordinate-descent sweep of an FM (libFM's ALS) over CSC columns; the caches it needs are
# filled from the CSR rows.
#
# The caches make every coordinate update O(nnz of its column): r[i] is the residual
# yhat_i - y_i for the square loss (the output yhat_i for the logistic loss) and q[i, f] the
# factor sums sum_j v_jf x_ij. Each column's rows are gathered into contiguous scratch once,
# all k+1 coordinates of the feature are updated on the scratch, and it is scattered back:
# one random access per non-zero instead of 2k+2.
from cython.parallel cimport parallel, prange
from libc.math cimport isfinite
from libc.stdlib cimport malloc, free

from fmrec._kernels._common cimport (
    floating, index_t, loss_value, loss_gradient, loss_curvature, prefetch, SQUARE, k8_accum,
)

# Prefetch distance in non-zeros (of the flat index array, so it runs across row/column
# boundaries): one random line of V (caches) or of q and r (sweep) per non-zero.
cdef enum:
    AHEAD = 24

# Independent partial sums in the coordinate loops (the code below spells out 4): without
# -ffast-math the compiler keeps a
# single sum in order, i.e. one add latency (~4 cycles) per element.
cdef enum:
    LANES = 4


def compute_caches(const index_t[::1] indptr, const index_t[::1] indices,
                   const floating[::1] data, const floating[::1] y, int loss,
                   double w0, const floating[::1] w, const floating[:, ::1] V,
                   floating[::1] r, floating[:, ::1] q, int n_threads):
    """Fill the caches r (see module comment) and q from scratch, from the CSR rows.

    Row by row each cache entry is written once, sequentially, and the rows are independent,
    so this runs in parallel over rows; only V and w are read at random.
    """
    cdef Py_ssize_t n = r.shape[0], k = V.shape[1], nnz_all = indptr[n]
    cdef Py_ssize_t i, p, f, lo, hi
    cdef floating x, lin, inter
    cdef floating* sq
    cdef floating* qi
    cdef const floating* v
    cdef const index_t* ix = &indices[0] if nnz_all > 0 else NULL
    cdef const floating* xs = &data[0] if nnz_all > 0 else NULL
    cdef const floating* wp = &w[0]
    cdef const floating* Vp = &V[0, 0]
    cdef bint k8 = k == 8
    if n == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        sq = <floating*> malloc(k * sizeof(floating))
        for i in prange(n, schedule="static"):
            lo = indptr[i]
            hi = indptr[i + 1]
            qi = &q[i, 0]
            lin = <floating> w0
            for f in range(k):
                qi[f] = 0
                sq[f] = 0
            for p in range(lo, hi):
                if p + AHEAD < nnz_all:
                    prefetch(Vp + ix[p + AHEAD] * k)
                x = xs[p]
                lin = lin + wp[ix[p]] * x
                v = Vp + ix[p] * k
                if k8:
                    k8_accum(qi, sq, v, x)
                else:
                    for f in range(k):
                        qi[f] += v[f] * x
                        sq[f] += v[f] * v[f] * x * x
            inter = 0
            for f in range(k):
                inter = inter + qi[f] * qi[f] - sq[f]
            r[i] = lin + <floating> 0.5 * inter
            if loss == SQUARE:
                r[i] -= y[i]
        free(sq)


cdef inline void sums_linear(const floating* bx, const floating* bs, const floating* br,
                             Py_ssize_t m, bint unit, double* num, double* den) noexcept nogil:
    """num += sum_t s_t r_t x_t and den += sum_t s_t x_t^2 (square loss; s_t = 1 if ``unit``)."""
    cdef double nl[LANES]
    cdef double dl[LANES]
    cdef Py_ssize_t t, l, m4 = m - m % LANES
    for l in range(LANES):
        nl[l] = 0
        dl[l] = 0
    if unit:
        for t in range(0, m4, 4):
            for l in range(LANES):
                nl[l] += br[t + l] * bx[t + l]
                dl[l] += bx[t + l] * bx[t + l]
        for t in range(m4, m):
            nl[0] += br[t] * bx[t]
            dl[0] += bx[t] * bx[t]
    else:
        for t in range(0, m4, 4):
            for l in range(LANES):
                nl[l] += bs[t + l] * br[t + l] * bx[t + l]
                dl[l] += bs[t + l] * bx[t + l] * bx[t + l]
        for t in range(m4, m):
            nl[0] += bs[t] * br[t] * bx[t]
            dl[0] += bs[t] * bx[t] * bx[t]
    num[0] += (nl[0] + nl[1]) + (nl[2] + nl[3])
    den[0] += (dl[0] + dl[1]) + (dl[2] + dl[3])


cdef inline void sums_factor(const floating* bx, const floating* bs, const floating* br,
                             const floating* bqf, floating vjf, Py_ssize_t m, bint unit,
                             double* num, double* den) noexcept nogil:
    """num += sum_t s_t r_t h_t and den += sum_t s_t h_t^2 with h_t = x_t (q_tf - v_jf x_t)."""
    cdef double nl[LANES]
    cdef double dl[LANES]
    cdef double h
    cdef Py_ssize_t t, l, m4 = m - m % LANES
    for l in range(LANES):
        nl[l] = 0
        dl[l] = 0
    if unit:
        for t in range(0, m4, 4):
            for l in range(LANES):
                h = bx[t + l] * (bqf[t + l] - vjf * bx[t + l])
                nl[l] += br[t + l] * h
                dl[l] += h * h
        for t in range(m4, m):
            h = bx[t] * (bqf[t] - vjf * bx[t])
            nl[0] += br[t] * h
            dl[0] += h * h
    else:
        for t in range(0, m4, 4):
            for l in range(LANES):
                h = bx[t + l] * (bqf[t + l] - vjf * bx[t + l])
                nl[l] += bs[t + l] * br[t + l] * h
                dl[l] += bs[t + l] * h * h
        for t in range(m4, m):
            h = bx[t] * (bqf[t] - vjf * bx[t])
            nl[0] += bs[t] * br[t] * h
            dl[0] += bs[t] * h * h
    num[0] += (nl[0] + nl[1]) + (nl[2] + nl[3])
    den[0] += (dl[0] + dl[1]) + (dl[2] + dl[3])


cdef inline double output_of(int loss, floating r, floating y) noexcept nogil:
    return r + y if loss == SQUARE else r


def als_sweep(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data,
              const floating[::1] y, const floating[::1] sample_weight, int loss,
              floating[::1] w0, floating[::1] w, floating[:, ::1] V,
              floating[::1] r, floating[:, ::1] q,
              double reg_bias, const floating[::1] reg_linear, const floating[::1] reg_factors,
              bint fit_intercept, bint fit_linear):
    """Update w0, then every column's w_j and v_j1..v_jk, each by its exact minimizer (square
    loss) or a Newton step (logistic loss), given the caches from ``compute_caches``.

    ``reg_linear[j]`` and ``reg_factors[j]`` are the per-feature penalties: the objective is
    sum_i s_i loss_i + 0.5 * (reg_bias w0^2 + sum_j reg_linear[j] w_j^2 + reg_factors[j] |v_j|^2).
    Returns (sum_i s_i loss_i after the sweep, sum_i s_i, 0 or 1 if a value became non-finite).
    """
    cdef Py_ssize_t n = r.shape[0], d = indptr.shape[0] - 1, k = V.shape[1]
    cdef Py_ssize_t i, j, p, t, f, m, start, max_m = 0, nnz_all = indptr[d]
    cdef bint square = loss == SQUARE
    cdef bint unit = True
    cdef double num, den, st, delta, loss_sum = 0, weight_sum = 0
    cdef floating* bx
    cdef floating* bs
    cdef floating* by
    cdef floating* br
    cdef floating* bq
    cdef floating* bqf
    cdef floating* qrow
    cdef floating vjf, fdelta
    cdef int bad = 0

    for j in range(d):
        if indptr[j + 1] - indptr[j] > max_m:
            max_m = indptr[j + 1] - indptr[j]
    # All-ones sample weights (the usual case) need neither gathering nor multiplying:
    # one sequential pass over n is cheap next to the nnz random gathers it saves.
    for i in range(n):
        if sample_weight[i] != 1:
            unit = False
            break
    bx = <floating*> malloc((4 + k) * (max_m + 1) * sizeof(floating))
    if bx == NULL:
        raise MemoryError("ALS scratch")
    bs = bx + max_m + 1
    by = bs + max_m + 1
    br = by + max_m + 1
    bq = br + max_m + 1      # factor-major: bq[f * m + t]
    try:
        with nogil:
            if fit_intercept:
                num = reg_bias * w0[0]
                den = reg_bias
                for i in range(n):
                    st = sample_weight[i]
                    num = num + st * loss_gradient(loss, output_of(loss, r[i], y[i]), y[i])
                    den = den + st * loss_curvature(loss, output_of(loss, r[i], y[i]))
                if den > 0:
                    delta = -num / den
                    w0[0] += <floating> delta
                    for i in range(n):
                        r[i] += <floating> delta

            for j in range(d):
                start = indptr[j]
                m = indptr[j + 1] - start
                if m == 0:
                    # No data: the penalty alone is minimized at zero.
                    if reg_linear[j] > 0 and fit_linear:
                        w[j] = 0
                    if reg_factors[j] > 0:
                        for f in range(k):
                            V[j, f] = 0
                    continue
                # gather; the prefetch runs on into the next columns, which are mostly short
                for t in range(m):
                    p = start + t
                    if p + AHEAD < nnz_all:
                        prefetch(&q[indices[p + AHEAD], 0])
                        prefetch(&r[indices[p + AHEAD]])
                        if not unit:
                            prefetch(&sample_weight[indices[p + AHEAD]])
                    i = indices[p]
                    bx[t] = data[p]
                    if not unit:
                        bs[t] = sample_weight[i]
                    if not square:
                        by[t] = y[i]
                    br[t] = r[i]
                    qrow = &q[i, 0]
                    for f in range(k):
                        bq[f * m + t] = qrow[f]

                if fit_linear:
                    num = reg_linear[j] * w[j]
                    den = reg_linear[j]
                    if square:
                        sums_linear(bx, bs, br, m, unit, &num, &den)
                    else:
                        for t in range(m):
                            st = 1 if unit else bs[t]
                            num = num + st * loss_gradient(loss, br[t], by[t]) * bx[t]
                            den = den + st * loss_curvature(loss, br[t]) * bx[t] * bx[t]
                    if den > 0:
                        delta = -num / den
                        w[j] += <floating> delta
                        fdelta = <floating> delta
                        for t in range(m):
                            br[t] += fdelta * bx[t]

                for f in range(k):
                    vjf = V[j, f]
                    bqf = bq + f * m
                    num = reg_factors[j] * vjf
                    den = reg_factors[j]
                    if square:
                        sums_factor(bx, bs, br, bqf, vjf, m, unit, &num, &den)
                    else:
                        for t in range(m):
                            st = 1 if unit else bs[t]
                            delta = bx[t] * (bqf[t] - vjf * bx[t])    # h
                            num = num + st * loss_gradient(loss, br[t], by[t]) * delta
                            den = den + st * loss_curvature(loss, br[t]) * delta * delta
                    if den > 0:
                        delta = -num / den
                        V[j, f] = vjf + <floating> delta
                        fdelta = <floating> delta
                        for t in range(m):
                            br[t] += fdelta * bx[t] * (bqf[t] - vjf * bx[t])
                            bqf[t] += fdelta * bx[t]

                # scatter
                for t in range(m):
                    i = indices[start + t]
                    r[i] = br[t]
                    qrow = &q[i, 0]
                    for f in range(k):
                        qrow[f] = bq[f * m + t]

            for i in range(n):
                st = sample_weight[i]
                loss_sum = loss_sum + st * loss_value(loss, output_of(loss, r[i], y[i]), y[i])
                weight_sum = weight_sum + st
            if not isfinite(loss_sum):
                bad = 1
    finally:
        free(bx)
    return loss_sum, weight_sum, bad
