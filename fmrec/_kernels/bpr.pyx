# BPR (Bayesian Personalized Ranking) epochs of an FM over (user row, item row) pairs, and the
# negative sampler they use. Hogwild over the positives when n_threads > 1.
#
# A triple (u, i, j) compares the FM outputs of the rows z = U[u] + I[i] and z' = U[u] + I[j].
# Its three sparse rows are merged by column into (col, a, b, c) = (U[u]_col, I[i]_col,
# I[j]_col), so a column shared by several of them (an item attribute both items have, or a
# user column that also appears in an item row) is handled exactly, and stepped once.
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport sqrt, isfinite, exp, log1p
from libc.stdlib cimport malloc, free, realloc
from libc.stdint cimport uint64_t, int64_t

import numpy as np

from fmrec._kernels._common cimport floating, index_t, prefetch, sigmoid

# How far ahead (in positives of the epoch's order) memory is requested: first the positive's
# user and item, then their rows' offsets, then the rows' columns, then the rows of V (and of
# its accumulator) they touch. A large model's rows are cache misses otherwise.
cdef enum:
    AHEAD_PAIR = 16
    AHEAD_PTR = 12
    AHEAD_IDX = 8
    AHEAD_PARAMS = 4

# Keeps the first AdaGrad step finite when a gradient is exactly zero (as sgd.pyx).
cdef double ADAGRAD_EPS = 1e-8

# Status of one positive.
cdef enum:
    DONE = 0
    SKIPPED = 1      # no negative found within max_draws draws
    NOT_FINITE = 2   # the score difference was not finite: nothing was updated
    NO_MEMORY = 3

cdef extern from *:
    """
    #include <stdint.h>
    /* splitmix64: one 64-bit state per thread, passes BigCrush, trivially seedable. */
    static inline uint64_t fmrec_splitmix64(uint64_t *s) {
        uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    """
    uint64_t splitmix64 "fmrec_splitmix64"(uint64_t* s) noexcept nogil


cdef inline double rng_uniform(uint64_t* s) noexcept nogil:
    """Uniform in [0, 1) with 53 random bits."""
    return <double> (splitmix64(s) >> 11) * (1.0 / 9007199254740992.0)


cdef inline int64_t draw_item(uint64_t* s, int64_t n_items, const double* cdf) noexcept nogil:
    """An item drawn uniformly (cdf NULL) or from the cumulative distribution ``cdf``."""
    cdef double r = rng_uniform(s)
    cdef int64_t lo = 0, hi = n_items - 1, mid, j
    if cdf == NULL:
        j = <int64_t> (r * n_items)
        return j if j < n_items else n_items - 1
    # First item whose cumulative probability exceeds r.
    while lo < hi:
        mid = (lo + hi) // 2
        if cdf[mid] > r:
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef inline bint sorted_contains(const index_t* idx, Py_ssize_t n, int64_t j) noexcept nogil:
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) // 2
        if idx[mid] < j:
            lo = mid + 1
        else:
            hi = mid
    return lo < n and idx[lo] == j


cdef inline int64_t draw_negative(uint64_t* s, const index_t* seen, Py_ssize_t n_seen,
                                  int64_t n_items, const double* cdf, int max_draws
                                  ) noexcept nogil:
    """An item not in the sorted list ``seen``, or -1 after ``max_draws`` rejected draws."""
    cdef int t
    cdef int64_t j
    if n_seen >= n_items:
        return -1
    for t in range(max_draws):
        j = draw_item(s, n_items, cdf)
        if not sorted_contains(seen, n_seen, j):
            return j
    return -1


cdef inline floating lookup(const index_t* idx, const floating* val, Py_ssize_t n,
                            int64_t col) noexcept nogil:
    """The value of column ``col`` in a sorted sparse row (0 when absent)."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) // 2
        if idx[mid] < col:
            lo = mid + 1
        else:
            hi = mid
    if lo < n and idx[lo] == col:
        return val[lo]
    return 0


cdef inline double softplus(double z) noexcept nogil:
    """log(1 + exp(z)) without overflow."""
    if z > 0:
        return z + log1p(exp(-z))
    return log1p(exp(z))


cdef inline double candidate_score(const index_t* ui, const floating* ux, Py_ssize_t nu,
                                   const index_t* ji, const floating* jx, Py_ssize_t nj,
                                   const floating* w, const floating* V, Py_ssize_t k,
                                   const floating* qu, floating* qj) noexcept nogil:
    """ŷ(U[u] + I[j]) minus the terms of U[u] alone: all a sampled item's rank depends on.

    ``qu`` holds Σ_U[u] x v; ``qj`` is scratch of length k.
    """
    cdef Py_ssize_t p, f
    cdef int64_t col
    cdef floating x, a
    cdef const floating* v
    cdef double s = 0, ssq = 0, n2, cross = 0, sq = 0
    for f in range(k):
        qj[f] = 0
    for p in range(nj):
        col = ji[p]
        x = jx[p]
        a = lookup(ui, ux, nu, col)
        v = V + col * k
        s += w[col] * x
        n2 = 0
        for f in range(k):
            n2 += v[f] * v[f]
            qj[f] += x * v[f]
        ssq += n2 * (2 * a * x + x * x)
    for f in range(k):
        cross += qu[f] * qj[f]
        sq += qj[f] * qj[f]
    return s + cross + 0.5 * sq - 0.5 * ssq


cdef inline Py_ssize_t merge3(const index_t* ui, const floating* ux, Py_ssize_t nu,
                              const index_t* ii, const floating* ix, Py_ssize_t ni,
                              const index_t* ji, const floating* jx, Py_ssize_t nj,
                              int64_t* cols, floating* A, floating* B, floating* C
                              ) noexcept nogil:
    """Merge three sorted sparse rows into (col, a, b, c) entries, one per distinct column."""
    cdef Py_ssize_t pu = 0, pi = 0, pj = 0, m = 0
    cdef int64_t col
    while pu < nu or pi < ni or pj < nj:
        col = -1
        if pu < nu:
            col = ui[pu]
        if pi < ni and (col < 0 or ii[pi] < col):
            col = ii[pi]
        if pj < nj and (col < 0 or ji[pj] < col):
            col = ji[pj]
        cols[m] = col
        A[m] = 0
        B[m] = 0
        C[m] = 0
        if pu < nu and ui[pu] == col:
            A[m] = ux[pu]
            pu += 1
        if pi < ni and ii[pi] == col:
            B[m] = ix[pi]
            pi += 1
        if pj < nj and ji[pj] == col:
            C[m] = jx[pj]
            pj += 1
        m += 1
    return m


cdef inline bint triple_step(Py_ssize_t m, const int64_t* cols, const floating* A,
                             const floating* B, const floating* C,
                             floating* w, floating* V, floating* aw, floating* aV, Py_ssize_t k,
                             floating lr, bint adagrad, floating rw, floating rv,
                             floating* qu, floating* qi, floating* qj,
                             double* loss_out) noexcept nogil:
    """One SGD/AdaGrad step on -ln σ(d), d = ŷ(U[u]+I[i]) - ŷ(U[u]+I[j]), plus the penalties.

    Steps w_c for the columns of I[i] ∪ I[j] and v_c for those of U[u] ∪ I[i] ∪ I[j], every
    gradient taken at the parameters before the step. False (and no update) if d is not
    finite.
    """
    cdef Py_ssize_t p, f
    cdef int64_t col
    cdef floating a, b, c, ab, ac, gw, gv, vv, gf, eps = <floating> ADAGRAD_EPS
    cdef floating* v
    cdef floating* av
    cdef double d, lin = 0, corr = 0, n2, cross = 0, sqi = 0, sqj = 0, g
    for f in range(k):
        qu[f] = 0
        qi[f] = 0
        qj[f] = 0
    for p in range(m):
        a = A[p]
        b = B[p]
        c = C[p]
        v = V + cols[p] * k
        if b != c:
            # Terms of the user's columns alone cancel in d; these are what remains.
            lin += w[cols[p]] * (b - c)
            n2 = 0
            for f in range(k):
                n2 += v[f] * v[f]
            corr += n2 * ((a + b) * (a + b) - (a + c) * (a + c))
        for f in range(k):
            qu[f] += a * v[f]
            qi[f] += b * v[f]
            qj[f] += c * v[f]
    for f in range(k):
        cross += qu[f] * (qi[f] - qj[f])
        sqi += qi[f] * qi[f]
        sqj += qj[f] * qj[f]
    d = lin + cross + 0.5 * (sqi - sqj) - 0.5 * corr
    if not isfinite(d):
        return False
    loss_out[0] = softplus(-d)
    g = -sigmoid(-d)            # d(-ln σ(d)) / dd
    gf = <floating> g
    for f in range(k):          # the factor sums of the two full rows z and z'
        qi[f] += qu[f]
        qj[f] += qu[f]
    for p in range(m):
        col = cols[p]
        a = A[p]
        b = B[p]
        c = C[p]
        ab = a + b
        ac = a + c
        if b != 0 or c != 0:
            gw = gf * (b - c) + rw * w[col]
            if adagrad:
                aw[col] += gw * gw
                w[col] -= lr * gw / <floating> sqrt(aw[col] + eps)
            else:
                w[col] -= lr * gw
        v = V + col * k
        if adagrad:
            av = aV + col * k
            for f in range(k):
                vv = v[f]
                gv = gf * (ab * (qi[f] - ab * vv) - ac * (qj[f] - ac * vv)) + rv * vv
                av[f] += gv * gv
                v[f] = vv - lr * gv / <floating> sqrt(av[f] + eps)
        else:
            for f in range(k):
                vv = v[f]
                gv = gf * (ab * (qi[f] - ab * vv) - ac * (qj[f] - ac * vv)) + rv * vv
                v[f] = vv - lr * gv
    return True


cdef struct Merged:
    Py_ssize_t capacity
    int64_t* cols
    void* coef          # floating[3 * capacity]: a, then b, then c


cdef inline bint reserve(Merged* buf, Py_ssize_t need, Py_ssize_t floating_size) noexcept nogil:
    cdef void* grown
    if need <= buf.capacity:
        return True
    if need < 2 * buf.capacity:
        need = 2 * buf.capacity
    grown = realloc(buf.cols, need * sizeof(int64_t))
    if grown == NULL:
        return False
    buf.cols = <int64_t*> grown
    grown = realloc(buf.coef, 3 * need * floating_size)
    if grown == NULL:
        return False
    buf.coef = grown
    buf.capacity = need
    return True


cdef int train_positive(
        int64_t u, int64_t i, int64_t j_given,
        const index_t* Up, const index_t* Ui, const floating* Ux,
        const index_t* Ip, const index_t* Ii, const floating* Ix,
        const index_t* Sp, const index_t* Si, int64_t n_items, const double* cdf,
        floating* w, floating* V, floating* aw, floating* aV, Py_ssize_t k,
        floating lr, bint adagrad, floating rw, floating rv,
        int n_candidates, int max_draws, uint64_t* rng, floating* scratch, Merged* buf,
        double* loss_out) noexcept nogil:
    """Find the negative of one positive (u, i) and take its step; returns a status."""
    cdef const index_t* ui = Ui + Up[u]
    cdef const floating* ux = Ux + Up[u]
    cdef Py_ssize_t nu = Up[u + 1] - Up[u], ni, nj, m, p, f
    cdef int64_t j = j_given, cand
    cdef int t
    cdef double best = 0, s
    cdef floating* qu = scratch
    cdef floating* floating_coef
    cdef const floating* v
    if j < 0:
        if n_candidates > 1:
            # Hard negative: the best scoring of n_candidates draws under the current model.
            for f in range(k):
                qu[f] = 0
            for p in range(nu):
                v = V + ui[p] * k
                for f in range(k):
                    qu[f] += ux[p] * v[f]
        for t in range(n_candidates):
            cand = draw_negative(rng, Si + Sp[u], Sp[u + 1] - Sp[u], n_items, cdf, max_draws)
            if cand < 0:
                break   # the user has (nearly) seen everything: more draws will not help
            if n_candidates == 1:
                j = cand
                break
            s = candidate_score(ui, ux, nu, Ii + Ip[cand], Ix + Ip[cand],
                                Ip[cand + 1] - Ip[cand], w, V, k, qu, scratch + k)
            if j < 0 or s > best:
                j = cand
                best = s
        if j < 0:
            return SKIPPED
    ni = Ip[i + 1] - Ip[i]
    nj = Ip[j + 1] - Ip[j]
    if not reserve(buf, nu + ni + nj, sizeof(floating)):
        return NO_MEMORY
    floating_coef = <floating*> buf.coef
    m = merge3(ui, ux, nu, Ii + Ip[i], Ix + Ip[i], ni, Ii + Ip[j], Ix + Ip[j], nj,
               buf.cols, floating_coef, floating_coef + buf.capacity,
               floating_coef + 2 * buf.capacity)
    if not triple_step(m, buf.cols, floating_coef, floating_coef + buf.capacity,
                       floating_coef + 2 * buf.capacity, w, V, aw, aV, k, lr, adagrad, rw, rv,
                       scratch, scratch + k, scratch + 2 * k, loss_out):
        return NOT_FINITE
    return DONE


cdef inline void prefetch_row_params(const index_t* idx, Py_ssize_t nnz, const floating* V,
                                     const floating* aV, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t p, off
    for p in range(nnz):
        off = 0
        while off < k:  # every cache line of the row
            prefetch(V + idx[p] * k + off)
            if aV != NULL:
                prefetch(aV + idx[p] * k + off)
            off += 64 // sizeof(floating)


cdef inline void prefetch_ahead(Py_ssize_t t, Py_ssize_t n, const int64_t* op,
                                const int64_t* up, const int64_t* ip,
                                const index_t* Up, const index_t* Ui,
                                const index_t* Ip, const index_t* Ii,
                                const floating* V, const floating* aV, Py_ssize_t k
                                ) noexcept nogil:
    """Ask for what the positives AHEAD_* places later in the order will read."""
    cdef int64_t pos, u, i
    if t + AHEAD_PAIR < n:
        pos = op[t + AHEAD_PAIR]
        prefetch(up + pos)
        prefetch(ip + pos)
    if t + AHEAD_PTR < n:
        pos = op[t + AHEAD_PTR]
        prefetch(Up + up[pos])
        prefetch(Ip + ip[pos])
    if t + AHEAD_IDX < n:
        pos = op[t + AHEAD_IDX]
        if Ui != NULL:
            prefetch(Ui + Up[up[pos]])
        if Ii != NULL:
            prefetch(Ii + Ip[ip[pos]])
    if t + AHEAD_PARAMS < n:
        pos = op[t + AHEAD_PARAMS]
        u = up[pos]
        i = ip[pos]
        if Ui != NULL:
            prefetch_row_params(Ui + Up[u], Up[u + 1] - Up[u], V, aV, k)
        if Ii != NULL:
            prefetch_row_params(Ii + Ip[i], Ip[i + 1] - Ip[i], V, aV, k)


cdef inline const index_t* index_ptr(const index_t[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


cdef inline const floating* value_ptr(const floating[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


def bpr_epoch(const index_t[::1] U_indptr, const index_t[::1] U_indices,
              const floating[::1] U_data,
              const index_t[::1] I_indptr, const index_t[::1] I_indices,
              const floating[::1] I_data,
              const index_t[::1] seen_indptr, const index_t[::1] seen_indices,
              const int64_t[::1] users, const int64_t[::1] items, const int64_t[::1] negatives,
              const int64_t[::1] order, const double[::1] cdf,
              floating[::1] w, floating[:, ::1] V, floating[::1] acc_w, floating[:, ::1] acc_V,
              double learning_rate, bint adagrad, double reg_linear, double reg_factors,
              int n_candidates, int max_draws, const uint64_t[::1] seeds, int n_threads):
    """One BPR pass over the positives ``(users[t], items[t])`` for t in ``order``.

    Each positive gets the negative ``negatives[t]`` when ``negatives`` is non-empty and that
    entry is >= 0, else one drawn for the positive's user: uniformly (``cdf`` empty) or from the
    cumulative distribution ``cdf``, rejecting the user's sorted row of ``seen`` and giving up
    after ``max_draws`` draws; with ``n_candidates`` > 1, the highest scoring of that many
    draws. Thread t draws from its own splitmix64 stream seeded by ``seeds[t]``.

    Updates w, V (and with ``adagrad`` their accumulators) in place. Returns
    (sum of -ln σ(d) before each step, steps taken, positives skipped for want of a
    negative, positives whose d was not finite). One thread gives exactly the sequential
    result; several share w and V without locks (Hogwild) and are not reproducible.
    """
    cdef Py_ssize_t n = order.shape[0], k = V.shape[1], t
    cdef int64_t n_items = I_indptr.shape[0] - 1, pos, jg
    cdef Py_ssize_t n_done = 0, n_skipped = 0, n_bad = 0, n_oom = 0
    cdef double loss_sum = 0, lrow
    cdef int status
    cdef floating lr = <floating> learning_rate
    cdef floating rw = <floating> reg_linear, rv = <floating> reg_factors
    cdef const index_t* Up = &U_indptr[0]
    cdef const index_t* Ui = index_ptr(U_indices)
    cdef const floating* Ux = value_ptr(U_data)
    cdef const index_t* Ip = &I_indptr[0]
    cdef const index_t* Ii = index_ptr(I_indices)
    cdef const floating* Ix = value_ptr(I_data)
    cdef const index_t* Sp = &seen_indptr[0]
    cdef const index_t* Si = index_ptr(seen_indices)
    cdef const int64_t* up = &users[0] if users.shape[0] > 0 else NULL
    cdef const int64_t* ip = &items[0] if items.shape[0] > 0 else NULL
    cdef const int64_t* negp = &negatives[0] if negatives.shape[0] > 0 else NULL
    cdef const int64_t* op = &order[0] if n > 0 else NULL
    cdef const double* cdfp = &cdf[0] if cdf.shape[0] > 0 else NULL
    cdef floating* wp = &w[0]
    cdef floating* Vp = &V[0, 0]
    cdef floating* awp = &acc_w[0] if adagrad else NULL
    cdef floating* aVp = &acc_V[0, 0] if adagrad else NULL
    cdef floating* scratch
    cdef uint64_t* rng
    cdef Merged* buf
    if n_threads < 1:
        n_threads = 1
    if seeds.shape[0] < n_threads:
        raise ValueError(f"need {n_threads} seeds, got {seeds.shape[0]}")
    if negp != NULL and negatives.shape[0] != users.shape[0]:
        raise ValueError("negatives must be empty or aligned with users")
    if cdfp != NULL and cdf.shape[0] != n_items:
        raise ValueError("cdf must be empty or have one entry per item")
    if n == 0:
        return 0.0, 0, 0, 0

    with nogil, parallel(num_threads=n_threads):
        # Per thread: q_u, q_i, q_j, spare (4k values); the RNG state on its own cache line.
        scratch = <floating*> malloc(4 * k * sizeof(floating))
        rng = <uint64_t*> malloc(8 * sizeof(uint64_t))
        buf = <Merged*> malloc(sizeof(Merged))
        if buf != NULL:
            buf.capacity = 0
            buf.cols = NULL
            buf.coef = NULL
        if rng != NULL:
            rng[0] = seeds[threadid()]
        for t in prange(n, schedule="static"):
            if scratch == NULL or rng == NULL or buf == NULL:
                n_oom += 1
                continue
            prefetch_ahead(t, n, op, up, ip, Up, Ui, Ip, Ii, Vp, aVp, k)
            pos = op[t]
            jg = negp[pos] if negp != NULL else -1
            lrow = 0
            status = train_positive(up[pos], ip[pos], jg, Up, Ui, Ux, Ip, Ii, Ix, Sp, Si,
                                    n_items, cdfp, wp, Vp, awp, aVp, k, lr, adagrad, rw, rv,
                                    n_candidates, max_draws, rng, scratch, buf, &lrow)
            if status == DONE:
                loss_sum += lrow
                n_done += 1
            elif status == SKIPPED:
                n_skipped += 1
            elif status == NOT_FINITE:
                n_bad += 1
            else:
                n_oom += 1
        free(scratch)
        free(rng)
        if buf != NULL:
            free(buf.cols)
            free(buf.coef)
            free(buf)
    if n_oom:
        raise MemoryError("BPR thread scratch")
    return loss_sum, n_done, n_skipped, n_bad


def sample_negatives(const index_t[::1] seen_indptr, const index_t[::1] seen_indices,
                     const int64_t[::1] users, int64_t n_items, const double[::1] cdf,
                     uint64_t seed, int max_draws):
    """The kernel's negative sampler on its own (one thread): one item per entry of ``users``.

    Same rules as ``bpr_epoch`` with one candidate; -1 where it gave up.
    """
    cdef Py_ssize_t n = users.shape[0], t
    cdef int64_t u
    cdef uint64_t state = seed
    cdef const double* cdfp = &cdf[0] if cdf.shape[0] > 0 else NULL
    cdef const index_t* Si = index_ptr(seen_indices)
    out = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] o = out
    if cdfp != NULL and cdf.shape[0] != n_items:
        raise ValueError("cdf must be empty or have one entry per item")
    with nogil:
        for t in range(n):
            u = users[t]
            o[t] = draw_negative(&state, Si + seen_indptr[u],
                                 seen_indptr[u + 1] - seen_indptr[u], n_items, cdfp, max_draws)
    return out
