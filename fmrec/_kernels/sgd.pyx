# One SGD / AdaGrad epoch of an FM over CSR rows in a given order (Hogwild when n_threads > 1).
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport sqrt, sqrtf, isfinite
from libc.stdlib cimport malloc, free, realloc
from libc.string cimport memcpy

from fmrec._kernels._common cimport (
    floating, index_t, loss_value, loss_gradient, prefetch, k8_accum, k8_step, k8_adagrad,
)

# How far ahead (in rows of the epoch's order) memory is requested: first the row's start
# offset, target and weight, then its indices and values, then the rows of V and w it touches.
# Random rows cost ~3x the arithmetic when fetched on demand.
cdef enum:
    AHEAD_ROW = 24
    AHEAD_NNZ = 12
    AHEAD_PARAMS = 4

# Scratch per thread, in elements: q, sum of squares, and copies of one row of V and of
# acc_V (4 * k), plus the thread's own intercept and its accumulator; padded so two threads'
# blocks never share a cache line.
cdef enum:
    PAD = 16

# An epoch runs in chunks of this many rows of its order: each chunk's rows are first copied
# into a thread-local buffer (many independent random reads in flight, prefetched), then
# trained on in sequence. The random-row latency that dominates a shuffled epoch is paid in a
# tight copy loop instead of between the updates; the order and results are unchanged.
cdef enum:
    CHUNK = 1024


cdef struct RowBuffer:
    Py_ssize_t capacity     # entries of indices/values
    Py_ssize_t* ptr         # CHUNK + 1 offsets
    void* indices           # index_t[capacity]
    void* values            # floating[capacity]
    void* targets           # floating[CHUNK]
    void* weights           # floating[CHUNK]


# Keeps the first AdaGrad step finite when a gradient is exactly zero.
cdef double ADAGRAD_EPS = 1e-8


cdef inline int gather_chunk(const index_t* indptr, const index_t* indices,
                            const floating* data, const floating* y, const floating* sw,
                            const Py_ssize_t* rows, Py_ssize_t m, RowBuffer* buf
                            ) noexcept nogil:
    """Copy rows[0:m] (their indices, values, target, weight) into ``buf``; -1 if out of memory."""
    cdef Py_ssize_t c, r, lo, length
    cdef Py_ssize_t* ptr = buf.ptr
    cdef floating* ty = <floating*> buf.targets
    cdef floating* tw = <floating*> buf.weights
    cdef void* grown
    ptr[0] = 0
    for c in range(m):
        if c + AHEAD_ROW < m:
            r = rows[c + AHEAD_ROW]
            prefetch(indptr + r)
            prefetch(y + r)
            prefetch(sw + r)
        r = rows[c]
        ptr[c + 1] = ptr[c] + (indptr[r + 1] - indptr[r])
        ty[c] = y[r]
        tw[c] = sw[r]
    if ptr[m] > buf.capacity:
        grown = realloc(buf.indices, ptr[m] * sizeof(index_t))
        if grown == NULL:
            return -1
        buf.indices = grown
        grown = realloc(buf.values, ptr[m] * sizeof(floating))
        if grown == NULL:
            return -1
        buf.values = grown
        buf.capacity = ptr[m]
    for c in range(m):
        if c + AHEAD_NNZ < m:
            r = rows[c + AHEAD_NNZ]
            lo = indptr[r]
            length = indptr[r + 1] - lo
            # A row of 20 int32 + 20 float32 straddles up to 2 lines each: ask for both ends.
            prefetch(indices + lo)
            prefetch(data + lo)
            if length > 0:
                prefetch(indices + lo + length - 1)
                prefetch(data + lo + length - 1)
        r = rows[c]
        lo = indptr[r]
        length = ptr[c + 1] - ptr[c]
        memcpy(<index_t*> buf.indices + ptr[c], indices + lo, length * sizeof(index_t))
        memcpy(<floating*> buf.values + ptr[c], data + lo, length * sizeof(floating))
    return 0


cdef inline void prefetch_params(const index_t* idx, Py_ssize_t nnz, const floating* w,
                                 const floating* V, const floating* aw, const floating* aV,
                                 const floating* rs, Py_ssize_t k) noexcept nogil:
    """Ask for the rows of w and V (and their accumulators and penalty scale) a row touches."""
    cdef Py_ssize_t p
    for p in range(nnz):
        prefetch(V + idx[p] * k)
        prefetch(w + idx[p])
        # AdaGrad touches as many accumulator lines as parameter lines: without these
        # the accumulators alone cost as much as the whole constant-rate epoch.
        if aV != NULL:
            prefetch(aV + idx[p] * k)
            prefetch(aw + idx[p])
        if rs != NULL:
            prefetch(rs + idx[p])


cdef inline RowBuffer* new_row_buffer(Py_ssize_t floating_size, Py_ssize_t index_size
                                      ) noexcept nogil:
    cdef RowBuffer* buf = <RowBuffer*> malloc(sizeof(RowBuffer))
    if buf == NULL:
        return NULL
    buf.capacity = CHUNK * 32
    buf.ptr = <Py_ssize_t*> malloc((CHUNK + 1) * sizeof(Py_ssize_t))
    buf.indices = malloc(buf.capacity * index_size)
    buf.values = malloc(buf.capacity * floating_size)
    buf.targets = malloc(CHUNK * floating_size)
    buf.weights = malloc(CHUNK * floating_size)
    if (buf.ptr == NULL or buf.indices == NULL or buf.values == NULL or buf.targets == NULL
            or buf.weights == NULL):
        free_row_buffer(buf)
        return NULL
    return buf


cdef inline void free_row_buffer(RowBuffer* buf) noexcept nogil:
    if buf != NULL:
        free(buf.ptr)
        free(buf.indices)
        free(buf.values)
        free(buf.targets)
        free(buf.weights)
        free(buf)


cdef inline floating root(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline bint sgd_row(const index_t* idx, const floating* val, Py_ssize_t nnz,
                         double yi, double s, int loss, floating lr,
                         double reg_bias, double reg_linear, double reg_factors,
                         const floating* reg_scale,
                         bint adagrad, bint fit_intercept, bint fit_linear,
                         floating* w0, floating* acc_w0,
                         floating* w, floating* V, floating* acc_w, floating* acc_V,
                         Py_ssize_t k, floating* buf, bint k8, double* loss_out) noexcept nogil:
    """Predict one row, then step every parameter it touches; False if the output is not finite.

    ``buf`` holds 4*k scratch elements. ``k8`` (only with k == 8) takes the vector fast paths;
    the k == 8 caller passes it as a literal so the test folds away once inlined.
    """
    cdef floating* q = buf
    cdef floating* sq = buf + k
    cdef floating* vl = buf + 2 * k
    cdef floating* al = buf + 3 * k
    cdef Py_ssize_t p, f
    cdef floating x, gx, grad, lin = w0[0], inter = 0, sreg_w, sreg_v, rw, rv
    cdef floating eps = <floating> ADAGRAD_EPS
    cdef floating* v
    cdef floating* av
    cdef index_t j
    cdef double yhat, g

    for f in range(k):
        q[f] = 0
        sq[f] = 0
    for p in range(nnz):
        x = val[p]
        lin = lin + w[idx[p]] * x
        v = V + idx[p] * k
        if k8:
            k8_accum(q, sq, v, x)
            continue
        for f in range(k):
            q[f] += v[f] * x
            sq[f] += v[f] * v[f] * x * x
    for f in range(k):
        inter = inter + q[f] * q[f] - sq[f]
    yhat = lin + <floating> 0.5 * inter
    if not isfinite(yhat):
        return False

    loss_out[0] = s * loss_value(loss, yhat, yi)
    g = s * loss_gradient(loss, yhat, yi)
    sreg_w = <floating> (s * reg_linear)
    sreg_v = <floating> (s * reg_factors)
    if fit_intercept:
        grad = <floating> (g + s * reg_bias * w0[0])
        if adagrad:
            acc_w0[0] += grad * grad
            w0[0] -= lr * grad / root(acc_w0[0] + eps)
        else:
            w0[0] -= lr * grad
    for p in range(nnz):
        j = idx[p]
        x = val[p]
        gx = <floating> g * x
        rw = sreg_w
        rv = sreg_v
        if reg_scale != NULL:
            rw = rw * reg_scale[j]
            rv = rv * reg_scale[j]
        if fit_linear:
            grad = gx + rw * w[j]
            if adagrad:
                acc_w[j] += grad * grad
                w[j] -= lr * grad / root(acc_w[j] + eps)
            else:
                w[j] -= lr * grad
        v = V + j * k
        if k8:
            if adagrad:
                k8_adagrad(v, acc_V + j * k, q, gx, x, rv, lr, eps)
            else:
                k8_step(v, q, gx, x, rv, lr)
            continue
        # Load the row(s) into scratch first and store only at the end: the compiler cannot
        # prove V, acc_V and the scratch apart, and interleaved loads and stores through
        # maybe-aliased pointers keep these loops scalar.
        for f in range(k):
            vl[f] = v[f]
        if adagrad:
            av = acc_V + j * k
            for f in range(k):
                al[f] = av[f]
            for f in range(k):
                grad = gx * (q[f] - vl[f] * x) + rv * vl[f]
                al[f] = al[f] + grad * grad
                vl[f] = vl[f] - lr * grad / root(al[f] + eps)
            for f in range(k):
                av[f] = al[f]
        else:
            for f in range(k):
                vl[f] = vl[f] - lr * (gx * (q[f] - vl[f] * x) + rv * vl[f])
        for f in range(k):
            v[f] = vl[f]
    return True


cdef inline bint sgd_row_k8(const index_t* idx, const floating* val, Py_ssize_t nnz,
                            double yi, double s, int loss, floating lr,
                            double reg_bias, double reg_linear, double reg_factors,
                            const floating* reg_scale,
                            bint adagrad, bint fit_intercept, bint fit_linear,
                            floating* w0, floating* acc_w0,
                            floating* w, floating* V, floating* acc_w, floating* acc_V,
                            double* loss_out) noexcept nogil:
    # k = 8 is the common default: a private copy with the trip counts known at compile time.
    cdef floating buf[32]
    return sgd_row(idx, val, nnz, yi, s, loss, lr, reg_bias, reg_linear, reg_factors,
                   reg_scale, adagrad, fit_intercept, fit_linear, w0, acc_w0, w, V, acc_w, acc_V,
                   8, buf, True, loss_out)


def sgd_epoch(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data,
              const floating[::1] y, const floating[::1] sample_weight,
              const Py_ssize_t[::1] order,
              floating[::1] w0, floating[::1] w, floating[:, ::1] V,
              floating[::1] acc_w0, floating[::1] acc_w, floating[:, ::1] acc_V,
              int loss, double learning_rate, bint adagrad,
              double reg_bias, double reg_linear, double reg_factors,
              const floating[::1] reg_scale,
              bint fit_intercept, bint fit_linear, int n_threads):
    """Update (w0, w, V) in place from one pass over ``order``.

    Regularization is applied per occurrence: a row with weight s adds
    0.5 * s * reg * reg_scale[j] * theta^2 for every parameter theta of a feature j it touches
    (reg_scale empty: all ones; the intercept is never scaled). With ``adagrad`` the
    accumulators ``acc_*`` (same shapes as the parameters) are updated too.
    Returns (sum of s * loss before each row's update, sum of s, number of rows whose
    output was not finite).

    With several threads w and V are shared (Hogwild), but each thread steps its own copy of
    the intercept (and its accumulator), and the copies are averaged at the end: every row
    writes w0, so a shared one would bounce its cache line between the cores on every row.
    One thread gives exactly the sequential result.
    """
    cdef Py_ssize_t n = order.shape[0], k = V.shape[1]
    cdef Py_ssize_t tid, me, chunk, first, m, c, start, nnz
    cdef Py_ssize_t n_chunks = (n + CHUNK - 1) // CHUNK, n_oom = 0
    cdef RowBuffer* buf
    cdef Py_ssize_t* lptr
    cdef index_t* lix
    cdef floating* lxs
    cdef floating* lys
    cdef floating* lsw
    cdef int n_slots = n_threads if n_threads > 1 else 1
    cdef int n_used = 0
    cdef floating* scratch
    cdef floating* th_w0
    cdef double lrow, loss_sum = 0, weight_sum = 0, w0_sum = 0, acc_sum = 0
    cdef Py_ssize_t n_bad = 0
    cdef bint ok
    cdef floating lr = <floating> learning_rate
    cdef const index_t* ip = &indptr[0]
    cdef const index_t* ix = &indices[0]
    cdef const floating* xs = &data[0]
    cdef const floating* ys = &y[0]
    cdef const floating* sw = &sample_weight[0]
    cdef const Py_ssize_t* op = &order[0]
    cdef floating* wp = &w[0]
    cdef floating* Vp = &V[0, 0]
    cdef floating* awp = &acc_w[0] if adagrad else NULL
    cdef floating* aVp = &acc_V[0, 0] if adagrad else NULL
    cdef const floating* rsp = &reg_scale[0] if reg_scale.shape[0] > 0 else NULL
    if rsp != NULL and reg_scale.shape[0] != w.shape[0]:
        raise ValueError("reg_scale must be empty or have one entry per feature")
    # Per-thread final (w0, acc_w0, rows seen), merged after the parallel region.
    cdef double* slots = <double*> malloc(3 * n_slots * sizeof(double))
    if slots == NULL:
        raise MemoryError("SGD thread slots")
    for tid in range(3 * n_slots):
        slots[tid] = 0

    with nogil, parallel(num_threads=n_threads):
        scratch = <floating*> malloc((4 * k + 2 * PAD) * sizeof(floating))
        buf = new_row_buffer(sizeof(floating), sizeof(index_t))
        th_w0 = scratch + 4 * k + PAD // 2
        th_w0[0] = w0[0]
        th_w0[1] = acc_w0[0] if adagrad else 0
        th_w0[2] = 0
        for chunk in prange(n_chunks, schedule="static"):
            first = chunk * CHUNK
            m = n - first if n - first < CHUNK else CHUNK
            if buf == NULL or gather_chunk(ip, ix, xs, ys, sw, op + first, m, buf) != 0:
                n_oom += 1
                continue
            lix = <index_t*> buf.indices
            lxs = <floating*> buf.values
            lys = <floating*> buf.targets
            lsw = <floating*> buf.weights
            lptr = buf.ptr
            for c in range(m):
                if c + AHEAD_PARAMS < m:
                    prefetch_params(lix + lptr[c + AHEAD_PARAMS],
                                    lptr[c + AHEAD_PARAMS + 1] - lptr[c + AHEAD_PARAMS],
                                    wp, Vp, awp, aVp, rsp, k)
                start = lptr[c]
                nnz = lptr[c + 1] - start
                lrow = 0
                if k == 8:
                    ok = sgd_row_k8(lix + start, lxs + start, nnz, lys[c], lsw[c], loss, lr,
                                    reg_bias, reg_linear, reg_factors, rsp,
                                    adagrad, fit_intercept, fit_linear,
                                    th_w0, th_w0 + 1, wp, Vp, awp, aVp, &lrow)
                else:
                    ok = sgd_row(lix + start, lxs + start, nnz, lys[c], lsw[c], loss, lr,
                                 reg_bias, reg_linear, reg_factors, rsp,
                                 adagrad, fit_intercept, fit_linear,
                                 th_w0, th_w0 + 1, wp, Vp, awp, aVp, k, scratch, False,
                                 &lrow)
                if ok:
                    loss_sum += lrow
                    weight_sum += lsw[c]
                    th_w0[2] = th_w0[2] + 1
                else:
                    n_bad += 1
        me = threadid()
        if me < n_slots:
            slots[3 * me] = th_w0[0]
            slots[3 * me + 1] = th_w0[1]
            slots[3 * me + 2] = th_w0[2]
        free(scratch)
        free_row_buffer(buf)

    if n_oom:
        free(slots)
        raise MemoryError("SGD row buffers")

    # Average the intercepts of the threads that stepped it (one thread: its own value,
    # unchanged, so the sequential result is exact).
    for tid in range(n_slots):
        if slots[3 * tid + 2] > 0:
            n_used += 1
            w0_sum += slots[3 * tid]
            acc_sum += slots[3 * tid + 1]
    if n_used > 0 and fit_intercept:
        if n_used == 1:
            w0[0] = <floating> w0_sum
            if adagrad:
                acc_w0[0] = <floating> acc_sum
        else:
            w0[0] = <floating> (w0_sum / n_used)
            if adagrad:
                acc_w0[0] = <floating> (acc_sum / n_used)
    free(slots)
    return loss_sum, weight_sum, n_bad
