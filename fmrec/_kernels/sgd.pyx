# One SGD / AdaGrad epoch of an FM over CSR rows in a given order (Hogwild when n_threads > 1).
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport sqrt, sqrtf, isfinite
from libc.stdint cimport int32_t, int64_t, uintptr_t
from libc.stdlib cimport malloc, free, realloc
from libc.string cimport memcpy

from fmrec._kernels._common cimport (
    floating, index_t, loss_value, loss_gradient, prefetch,
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


# The k = 8 rows (the default model), in C: the factor sums of one row, then the AdaGrad steps
# of every parameter it touches, for the flat arrays (w stride 1, V and acc_V stride 8) and
# the packed records (stride 4 and 16), each with its strides as constants; and the
# constant-rate steps (flat arrays). The factor sums stay in registers across the row. Every
# lane does the earlier Cython k = 8 path's operations in its order (v x summed into q and
# (v x)^2 into sq, then q^2 - sq summed f by f), so the results are the same bits as before,
# and the same for both layouts.
#
# With GCC/Clang on x86-64 each exists twice: on the SSE2 baseline (a row of 8 float32 is two
# registers, so every operation, sqrt and divide included, is issued twice) and for AVX (one
# register), picked at run time when the CPU has it (_common.pxd's fmrec_use_avx;
# FMREC_NO_AVX=1 in the environment turns it off). Neither contracts to FMA, so both give the
# same bits.
cdef extern from *:
    """
    #include <string.h>
    #include <stdlib.h>
    #include <stdint.h>
    #include <math.h>

    #ifdef FMREC_SIMD
    typedef float fmrec_k8_float __attribute__((vector_size(32)));
    typedef double fmrec_k8_double __attribute__((vector_size(64)));
    #else  /* other compilers: the same operations lane by lane */
    typedef struct { float e[8]; } fmrec_k8_float;
    typedef struct { double e[8]; } fmrec_k8_double;
    #endif
    #define FMREC_K8_LD(VT, v, p) memcpy(&(v), (p), sizeof(VT))
    #define FMREC_K8_ST(VT, p, v) memcpy((p), &(v), sizeof(VT))

    /* T: float or double; I: the index type; L: flat or packed, WS and VS its strides. */
    #define FMREC_K8_ROW_DEFS(T, I, L, WS, VS, SUF, ATTR, SQRT)                           \
    ATTR static T fmrec_k8_predict_##T##_##I##_##L##SUF(                                  \
            const I *idx, const T *val, Py_ssize_t nnz, const T *w, const T *V, T lin,     \
            T *q) {                                                                        \
        fmrec_k8_##T qv, sqv, v; T sq[8], inter = 0; Py_ssize_t p; int f;                  \
        memset(&qv, 0, sizeof qv); memset(&sqv, 0, sizeof sqv);                            \
        for (p = 0; p < nnz; p++) {                                                        \
            T x = val[p]; Py_ssize_t j = (Py_ssize_t)idx[p];                               \
            lin = lin + w[j * WS] * x;                                                     \
            FMREC_K8_LD(fmrec_k8_##T, v, V + j * VS);                                      \
            FMREC_K8_ACCUM(v, x, qv, sqv)                                                  \
        }                                                                                  \
        memcpy(q, &qv, sizeof qv); memcpy(sq, &sqv, sizeof sqv);                           \
        for (f = 0; f < 8; f++) inter = inter + q[f] * q[f] - sq[f];                       \
        return lin + (T)0.5 * inter;                                                       \
    }                                                                                      \
    ATTR static void fmrec_k8_adagrad_##T##_##I##_##L##SUF(                               \
            const I *idx, const T *val, Py_ssize_t nnz, T *w, T *aw, const T *rs, T *V,    \
            T *aV, const T *q, T g, T sreg_w, T sreg_v, T lr, T eps, int fit_linear) {     \
        fmrec_k8_##T qv, v, a, gr, r; Py_ssize_t p;                                        \
        memcpy(&qv, q, sizeof qv);                                                         \
        for (p = 0; p < nnz; p++) {                                                        \
            T x = val[p], gx = g * x, rw = sreg_w, rv = sreg_v, grad;                      \
            Py_ssize_t j = (Py_ssize_t)idx[p];                                             \
            if (rs != NULL) { rw = rw * rs[j * WS]; rv = rv * rs[j * WS]; }                \
            if (fit_linear) {                                                              \
                grad = gx + rw * w[j * WS];                                                \
                aw[j * WS] = aw[j * WS] + grad * grad;                                     \
                w[j * WS] = w[j * WS] - lr * grad / SQRT(aw[j * WS] + eps);                \
            }                                                                              \
            FMREC_K8_LD(fmrec_k8_##T, v, V + j * VS);                                      \
            FMREC_K8_LD(fmrec_k8_##T, a, aV + j * VS);                                     \
            FMREC_K8_STEP(v, a, gr, r, qv, gx, x, rv, lr, eps, SQRT)                       \
            FMREC_K8_ST(fmrec_k8_##T, aV + j * VS, a);                                     \
            FMREC_K8_ST(fmrec_k8_##T, V + j * VS, v);                                      \
        }                                                                                  \
    }

    #ifdef FMREC_SIMD
    #define FMREC_K8_ACCUM(v, x, qv, sqv) v = v * x; qv = qv + v; sqv = sqv + v * v;
    #define FMREC_K8_STEP(v, a, gr, r, qv, gx, x, rv, lr, eps, SQRT)                       \
        gr = gx * (qv - v * x) + rv * v;                                                   \
        a = a + gr * gr;                                                                   \
        r = a + eps;                                                                       \
        { int f_; for (f_ = 0; f_ < 8; f_++) r[f_] = SQRT(r[f_]); }                        \
        v = v - lr * gr / r;
    #define FMREC_K8_SGD_STEP(v, qv, gx, x, rv, lr) v = v - lr * (gx * (qv - v * x) + rv * v);
    #else
    #define FMREC_K8_ACCUM(v, x, qv, sqv)                                                  \
        { int f_; for (f_ = 0; f_ < 8; f_++) { v.e[f_] = v.e[f_] * x;                      \
          qv.e[f_] = qv.e[f_] + v.e[f_]; sqv.e[f_] = sqv.e[f_] + v.e[f_] * v.e[f_]; } }
    #define FMREC_K8_STEP(v, a, gr, r, qv, gx, x, rv, lr, eps, SQRT)                       \
        { int f_; for (f_ = 0; f_ < 8; f_++) {                                             \
            gr.e[f_] = gx * (qv.e[f_] - v.e[f_] * x) + rv * v.e[f_];                       \
            a.e[f_] = a.e[f_] + gr.e[f_] * gr.e[f_];                                       \
            r.e[f_] = SQRT(a.e[f_] + eps);                                                 \
            v.e[f_] = v.e[f_] - lr * gr.e[f_] / r.e[f_]; } }
    #define FMREC_K8_SGD_STEP(v, qv, gx, x, rv, lr)                                        \
        { int f_; for (f_ = 0; f_ < 8; f_++)                                               \
            v.e[f_] = v.e[f_] - lr * (gx * (qv.e[f_] - v.e[f_] * x) + rv * v.e[f_]); }
    #endif

    /* Constant-rate SGD steps of one row's w and V (flat arrays only). */
    #define FMREC_K8_SGD_DEFS(T, I, SUF, ATTR)                                             \
    ATTR static void fmrec_k8_sgd_##T##_##I##_flat##SUF(                                  \
            const I *idx, const T *val, Py_ssize_t nnz, T *w, const T *rs, T *V,           \
            const T *q, T g, T sreg_w, T sreg_v, T lr, int fit_linear) {                   \
        fmrec_k8_##T qv, v; Py_ssize_t p;                                                  \
        memcpy(&qv, q, sizeof qv);                                                         \
        for (p = 0; p < nnz; p++) {                                                        \
            T x = val[p], gx = g * x, rw = sreg_w, rv = sreg_v;                            \
            Py_ssize_t j = (Py_ssize_t)idx[p];                                             \
            if (rs != NULL) { rw = rw * rs[j]; rv = rv * rs[j]; }                          \
            if (fit_linear) w[j] = w[j] - lr * (gx + rw * w[j]);                           \
            FMREC_K8_LD(fmrec_k8_##T, v, V + j * 8);                                       \
            FMREC_K8_SGD_STEP(v, qv, gx, x, rv, lr)                                        \
            FMREC_K8_ST(fmrec_k8_##T, V + j * 8, v);                                       \
        }                                                                                  \
    }

    #define FMREC_K8_ALL(SUF, ATTR)                                                        \
        FMREC_K8_ROW_DEFS(float, int32_t, flat, 1, 8, SUF, ATTR, sqrtf)                    \
        FMREC_K8_ROW_DEFS(float, int32_t, packed, 4, 16, SUF, ATTR, sqrtf)                 \
        FMREC_K8_ROW_DEFS(float, int64_t, flat, 1, 8, SUF, ATTR, sqrtf)                    \
        FMREC_K8_ROW_DEFS(float, int64_t, packed, 4, 16, SUF, ATTR, sqrtf)                 \
        FMREC_K8_ROW_DEFS(double, int32_t, flat, 1, 8, SUF, ATTR, sqrt)                    \
        FMREC_K8_ROW_DEFS(double, int32_t, packed, 4, 16, SUF, ATTR, sqrt)                 \
        FMREC_K8_ROW_DEFS(double, int64_t, flat, 1, 8, SUF, ATTR, sqrt)                    \
        FMREC_K8_ROW_DEFS(double, int64_t, packed, 4, 16, SUF, ATTR, sqrt)                 \
        FMREC_K8_SGD_DEFS(float, int32_t, SUF, ATTR)                                       \
        FMREC_K8_SGD_DEFS(float, int64_t, SUF, ATTR)                                       \
        FMREC_K8_SGD_DEFS(double, int32_t, SUF, ATTR)                                      \
        FMREC_K8_SGD_DEFS(double, int64_t, SUF, ATTR)
    FMREC_K8_ALL(_base, )
    #if defined(FMREC_SIMD) && (defined(__x86_64__) || defined(__i386__))
    FMREC_K8_ALL(_avx, FMREC_AVX)
    #define FMREC_K8_PICK(NAME, avx) ((avx) ? NAME##_avx : NAME##_base)
    #else
    #define FMREC_K8_PICK(NAME, avx) NAME##_base
    #endif

    /* The entry points: the variant by layout, and by ``avx`` (fmrec_use_avx()). */
    #define FMREC_K8_ENTRY(T, I)                                                           \
    static inline T fmrec_k8_predict_##T##_##I(                                           \
            const I *idx, const T *val, Py_ssize_t nnz, const T *w, const T *V, T lin,     \
            T *q, int packed, int avx) {                                                   \
        return (packed ? FMREC_K8_PICK(fmrec_k8_predict_##T##_##I##_packed, avx)           \
                       : FMREC_K8_PICK(fmrec_k8_predict_##T##_##I##_flat, avx))            \
            (idx, val, nnz, w, V, lin, q);                                                 \
    }                                                                                      \
    static inline void fmrec_k8_adagrad_##T##_##I(                                        \
            const I *idx, const T *val, Py_ssize_t nnz, T *w, T *aw, const T *rs, T *V,    \
            T *aV, const T *q, T g, T sreg_w, T sreg_v, T lr, T eps, int fit_linear,       \
            int packed, int avx) {                                                         \
        (packed ? FMREC_K8_PICK(fmrec_k8_adagrad_##T##_##I##_packed, avx)                  \
                : FMREC_K8_PICK(fmrec_k8_adagrad_##T##_##I##_flat, avx))                   \
            (idx, val, nnz, w, aw, rs, V, aV, q, g, sreg_w, sreg_v, lr, eps, fit_linear);  \
    }                                                                                      \
    static inline void fmrec_k8_sgd_##T##_##I(                                            \
            const I *idx, const T *val, Py_ssize_t nnz, T *w, const T *rs, T *V,           \
            const T *q, T g, T sreg_w, T sreg_v, T lr, int fit_linear, int avx) {          \
        FMREC_K8_PICK(fmrec_k8_sgd_##T##_##I##_flat, avx)                                  \
            (idx, val, nnz, w, rs, V, q, g, sreg_w, sreg_v, lr, fit_linear);               \
    }
    FMREC_K8_ENTRY(float, int32_t)
    FMREC_K8_ENTRY(float, int64_t)
    FMREC_K8_ENTRY(double, int32_t)
    FMREC_K8_ENTRY(double, int64_t)
    """
    int k8_use_avx "fmrec_use_avx"() noexcept nogil
    float k8_predict_f32 "fmrec_k8_predict_float_int32_t"(const int32_t* idx, const float* val, Py_ssize_t nnz, const float* w, const float* V, float lin, float* q, int packed, int avx) noexcept nogil
    float k8_predict_f64 "fmrec_k8_predict_float_int64_t"(const int64_t* idx, const float* val, Py_ssize_t nnz, const float* w, const float* V, float lin, float* q, int packed, int avx) noexcept nogil
    double k8_predict_d32 "fmrec_k8_predict_double_int32_t"(const int32_t* idx, const double* val, Py_ssize_t nnz, const double* w, const double* V, double lin, double* q, int packed, int avx) noexcept nogil
    double k8_predict_d64 "fmrec_k8_predict_double_int64_t"(const int64_t* idx, const double* val, Py_ssize_t nnz, const double* w, const double* V, double lin, double* q, int packed, int avx) noexcept nogil
    void k8_adagrad_f32 "fmrec_k8_adagrad_float_int32_t"(const int32_t* idx, const float* val, Py_ssize_t nnz, float* w, float* aw, const float* rs, float* V, float* aV, const float* q, float g, float sreg_w, float sreg_v, float lr, float eps, int fit_linear, int packed, int avx) noexcept nogil
    void k8_adagrad_f64 "fmrec_k8_adagrad_float_int64_t"(const int64_t* idx, const float* val, Py_ssize_t nnz, float* w, float* aw, const float* rs, float* V, float* aV, const float* q, float g, float sreg_w, float sreg_v, float lr, float eps, int fit_linear, int packed, int avx) noexcept nogil
    void k8_sgd_f32 "fmrec_k8_sgd_float_int32_t"(const int32_t* idx, const float* val, Py_ssize_t nnz, float* w, const float* rs, float* V, const float* q, float g, float sreg_w, float sreg_v, float lr, int fit_linear, int avx) noexcept nogil
    void k8_sgd_f64 "fmrec_k8_sgd_float_int64_t"(const int64_t* idx, const float* val, Py_ssize_t nnz, float* w, const float* rs, float* V, const float* q, float g, float sreg_w, float sreg_v, float lr, int fit_linear, int avx) noexcept nogil
    void k8_sgd_d32 "fmrec_k8_sgd_double_int32_t"(const int32_t* idx, const double* val, Py_ssize_t nnz, double* w, const double* rs, double* V, const double* q, double g, double sreg_w, double sreg_v, double lr, int fit_linear, int avx) noexcept nogil
    void k8_sgd_d64 "fmrec_k8_sgd_double_int64_t"(const int64_t* idx, const double* val, Py_ssize_t nnz, double* w, const double* rs, double* V, const double* q, double g, double sreg_w, double sreg_v, double lr, int fit_linear, int avx) noexcept nogil
    void k8_adagrad_d32 "fmrec_k8_adagrad_double_int32_t"(const int32_t* idx, const double* val, Py_ssize_t nnz, double* w, double* aw, const double* rs, double* V, double* aV, const double* q, double g, double sreg_w, double sreg_v, double lr, double eps, int fit_linear, int packed, int avx) noexcept nogil
    void k8_adagrad_d64 "fmrec_k8_adagrad_double_int64_t"(const int64_t* idx, const double* val, Py_ssize_t nnz, double* w, double* aw, const double* rs, double* V, double* aV, const double* q, double g, double sreg_w, double sreg_v, double lr, double eps, int fit_linear, int packed, int avx) noexcept nogil


def simd_in_use() -> str:
    """Which variant of the k = 8 AdaGrad rows runs here: "avx" or "sse2/plain" (for tests
    and benchmark reports)."""
    return "avx" if k8_use_avx() else "sse2/plain"


cdef inline floating k8_predict(const index_t* idx, const floating* val, Py_ssize_t nnz,
                                const floating* w, const floating* V, floating lin,
                                floating* q, bint packed, int avx) noexcept nogil:
    """FM output of one row (k = 8, intercept ``lin``); leaves its factor sums in q."""
    if floating is float:
        if index_t is int32_t:
            return k8_predict_f32(idx, val, nnz, w, V, lin, q, packed, avx)
        else:
            return k8_predict_f64(idx, val, nnz, w, V, lin, q, packed, avx)
    else:
        if index_t is int32_t:
            return k8_predict_d32(idx, val, nnz, w, V, lin, q, packed, avx)
        else:
            return k8_predict_d64(idx, val, nnz, w, V, lin, q, packed, avx)


cdef inline void k8_adagrad_steps(const index_t* idx, const floating* val, Py_ssize_t nnz,
                                  floating* w, floating* aw, const floating* rs,
                                  floating* V, floating* aV, const floating* q, floating g,
                                  floating sreg_w, floating sreg_v, floating lr, floating eps,
                                  bint fit_linear, bint packed, int avx) noexcept nogil:
    """AdaGrad steps of the w (if ``fit_linear``) and V of every feature of one row (k = 8)."""
    if floating is float:
        if index_t is int32_t:
            k8_adagrad_f32(idx, val, nnz, w, aw, rs, V, aV, q, g, sreg_w, sreg_v, lr, eps,
                           fit_linear, packed, avx)
        else:
            k8_adagrad_f64(idx, val, nnz, w, aw, rs, V, aV, q, g, sreg_w, sreg_v, lr, eps,
                           fit_linear, packed, avx)
    else:
        if index_t is int32_t:
            k8_adagrad_d32(idx, val, nnz, w, aw, rs, V, aV, q, g, sreg_w, sreg_v, lr, eps,
                           fit_linear, packed, avx)
        else:
            k8_adagrad_d64(idx, val, nnz, w, aw, rs, V, aV, q, g, sreg_w, sreg_v, lr, eps,
                           fit_linear, packed, avx)


cdef inline void k8_sgd_steps(const index_t* idx, const floating* val, Py_ssize_t nnz,
                              floating* w, const floating* rs, floating* V, const floating* q,
                              floating g, floating sreg_w, floating sreg_v, floating lr,
                              bint fit_linear, int avx) noexcept nogil:
    """Constant-rate SGD steps of the w (if ``fit_linear``) and V of one row (k = 8, flat)."""
    if floating is float:
        if index_t is int32_t:
            k8_sgd_f32(idx, val, nnz, w, rs, V, q, g, sreg_w, sreg_v, lr, fit_linear, avx)
        else:
            k8_sgd_f64(idx, val, nnz, w, rs, V, q, g, sreg_w, sreg_v, lr, fit_linear, avx)
    else:
        if index_t is int32_t:
            k8_sgd_d32(idx, val, nnz, w, rs, V, q, g, sreg_w, sreg_v, lr, fit_linear, avx)
        else:
            k8_sgd_d64(idx, val, nnz, w, rs, V, q, g, sreg_w, sreg_v, lr, fit_linear, avx)


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
                                 const floating* aw, const floating* rs, Py_ssize_t ws,
                                 const floating* V, const floating* aV, Py_ssize_t vs,
                                 Py_ssize_t k, bint packed) noexcept nogil:
    """Ask for the parameters a row touches: feature j's w, acc_w, reg scale at ``j * ws`` of
    their arrays, its rows of V and acc_V at ``j * vs`` (``packed``: acc_V follows V in one
    record, and w, acc_w and the scale share one small record)."""
    cdef Py_ssize_t p, off
    cdef Py_ssize_t span = (2 * k if packed else k) * sizeof(floating)
    for p in range(nnz):
        prefetch(V + idx[p] * vs)
        # Records longer than a line (float64, k > 8): their other lines too.
        off = 64
        while off < span:
            prefetch(<const char*> (V + idx[p] * vs) + off)
            off += 64
        prefetch(w + idx[p] * ws)
        if packed:
            continue
        # AdaGrad touches as many accumulator lines as parameter lines: without these
        # the accumulators alone cost as much as the whole constant-rate epoch.
        if aV != NULL:
            prefetch(aV + idx[p] * vs)
            prefetch(aw + idx[p] * ws)
        if rs != NULL:
            prefetch(rs + idx[p] * ws)


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
                         bint adagrad, bint fit_intercept, bint fit_linear,
                         floating* w0, floating* acc_w0,
                         floating* w, floating* acc_w, const floating* reg_scale, Py_ssize_t ws,
                         floating* V, floating* acc_V, Py_ssize_t vs,
                         Py_ssize_t k, floating* buf, double* loss_out) noexcept nogil:
    """Predict one row, then step every parameter it touches; False if the output is not finite.

    Feature j's w, acc_w and penalty scale are at ``j * ws`` of ``w``, ``acc_w`` and
    ``reg_scale`` (NULL: all ones); its rows of V and acc_V start at ``j * vs`` of ``V`` and
    ``acc_V``. The flat arrays have ws = 1, vs = k; the packed records (see sgd_epoch) ws = 4,
    vs = 2k. The arithmetic is the same either way.

    ``buf`` holds 4*k scratch elements. k = 8 runs sgd_row_k8 / adagrad_row_k8 instead (the
    same arithmetic, with its loops in C).
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
    cdef Py_ssize_t j
    cdef double yhat, g

    for f in range(k):
        q[f] = 0
        sq[f] = 0
    for p in range(nnz):
        x = val[p]
        lin = lin + w[idx[p] * ws] * x
        v = V + idx[p] * vs
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
            rw = rw * reg_scale[j * ws]
            rv = rv * reg_scale[j * ws]
        if fit_linear:
            grad = gx + rw * w[j * ws]
            if adagrad:
                acc_w[j * ws] += grad * grad
                w[j * ws] -= lr * grad / root(acc_w[j * ws] + eps)
            else:
                w[j * ws] -= lr * grad
        v = V + j * vs
        # Load the row(s) into scratch first and store only at the end: the compiler cannot
        # prove V, acc_V and the scratch apart, and interleaved loads and stores through
        # maybe-aliased pointers keep these loops scalar.
        for f in range(k):
            vl[f] = v[f]
        if adagrad:
            av = acc_V + j * vs
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
                            bint fit_intercept, bint fit_linear,
                            floating* w0, floating* w, const floating* reg_scale,
                            floating* V, int avx, double* loss_out) noexcept nogil:
    """sgd_row's constant-rate step at k = 8 on the flat arrays (same arithmetic), its loops
    over the non-zeros in C (see k8_predict)."""
    cdef floating q[8]
    cdef floating grad
    cdef double yhat, g
    yhat = k8_predict(idx, val, nnz, w, V, w0[0], q, False, avx)
    if not isfinite(yhat):
        return False
    loss_out[0] = s * loss_value(loss, yhat, yi)
    g = s * loss_gradient(loss, yhat, yi)
    if fit_intercept:
        grad = <floating> (g + s * reg_bias * w0[0])
        w0[0] -= lr * grad
    k8_sgd_steps(idx, val, nnz, w, reg_scale, V, q, <floating> g, <floating> (s * reg_linear),
                 <floating> (s * reg_factors), lr, fit_linear, avx)
    return True


cdef inline bint adagrad_row_k8(const index_t* idx, const floating* val, Py_ssize_t nnz,
                                double yi, double s, int loss, floating lr,
                                double reg_bias, double reg_linear, double reg_factors,
                                bint fit_intercept, bint fit_linear,
                                floating* w0, floating* acc_w0,
                                floating* w, floating* acc_w, const floating* reg_scale,
                                floating* V, floating* acc_V, bint packed, int avx,
                                double* loss_out) noexcept nogil:
    """sgd_row's AdaGrad step at k = 8 (same arithmetic; arguments as there, the strides
    given by ``packed``), its loops over the non-zeros in C (see k8_predict)."""
    cdef floating q[8]
    cdef floating grad, eps = <floating> ADAGRAD_EPS
    cdef double yhat, g
    yhat = k8_predict(idx, val, nnz, w, V, w0[0], q, packed, avx)
    if not isfinite(yhat):
        return False
    loss_out[0] = s * loss_value(loss, yhat, yi)
    g = s * loss_gradient(loss, yhat, yi)
    if fit_intercept:
        grad = <floating> (g + s * reg_bias * w0[0])
        acc_w0[0] += grad * grad
        w0[0] -= lr * grad / root(acc_w0[0] + eps)
    k8_adagrad_steps(idx, val, nnz, w, acc_w, reg_scale, V, acc_V, q, <floating> g,
                     <floating> (s * reg_linear), <floating> (s * reg_factors), lr, eps,
                     fit_linear, packed, avx)
    return True


cdef inline floating* align_line(floating* p) noexcept nogil:
    """``p`` rounded up to the next 64-byte boundary."""
    return <floating*> ((<uintptr_t> p + 63) & ~(<uintptr_t> 63))


def workspace_size(Py_ssize_t n_features, Py_ssize_t k) -> int:
    """Elements of the ``workspace`` that lets an AdaGrad ``sgd_epoch`` use packed records.

    Parameters
    ----------
    n_features, k : int
        The model's width and rank.

    Returns
    -------
    int
        n_features * (2k + 4) plus room to align both blocks to 64 bytes.
    """
    return n_features * (2 * k + 4) + 32


cdef inline void pack_feature(Py_ssize_t j, Py_ssize_t k, const floating* w,
                              const floating* aw, const floating* rs, const floating* V,
                              const floating* aV, floating* P, floating* W4) noexcept nogil:
    cdef Py_ssize_t f
    cdef floating* rec = P + j * 2 * k
    if k == 8:  # a known size: a few vector moves instead of a loop
        memcpy(rec, V + j * 8, 8 * sizeof(floating))
        memcpy(rec + 8, aV + j * 8, 8 * sizeof(floating))
    else:
        for f in range(k):
            rec[f] = V[j * k + f]
            rec[k + f] = aV[j * k + f]
    W4[4 * j] = w[j]
    W4[4 * j + 1] = aw[j]
    # x * 1 == x exactly, so an unscaled penalty can go through the same multiply.
    W4[4 * j + 2] = rs[j] if rs != NULL else 1
    W4[4 * j + 3] = 0


cdef inline void unpack_feature(Py_ssize_t j, Py_ssize_t k, floating* w, floating* aw,
                                floating* V, floating* aV, const floating* P,
                                const floating* W4) noexcept nogil:
    cdef Py_ssize_t f
    cdef const floating* rec = P + j * 2 * k
    if k == 8:
        memcpy(V + j * 8, rec, 8 * sizeof(floating))
        memcpy(aV + j * 8, rec + 8, 8 * sizeof(floating))
    else:
        for f in range(k):
            V[j * k + f] = rec[f]
            aV[j * k + f] = rec[k + f]
    w[j] = W4[4 * j]
    aw[j] = W4[4 * j + 1]


def sgd_epoch(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data,
              const floating[::1] y, const floating[::1] sample_weight,
              const Py_ssize_t[::1] order,
              floating[::1] w0, floating[::1] w, floating[:, ::1] V,
              floating[::1] acc_w0, floating[::1] acc_w, floating[:, ::1] acc_V,
              int loss, double learning_rate, bint adagrad,
              double reg_bias, double reg_linear, double reg_factors,
              const floating[::1] reg_scale,
              bint fit_intercept, bint fit_linear, int n_threads,
              floating[::1] workspace):
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

    ``workspace`` (AdaGrad only; empty: not used) of ``workspace_size(d, k)`` elements holds
    the parameters packed per feature for the epoch: its rows of V and acc_V side by side in
    one 64-byte-aligned record of 2k (one cache line for float32 and k = 8), and w, acc_w and
    the penalty scale in a 4-element record. A non-zero then touches two lines instead of
    five. Packing and unpacking cost two passes over the parameters, repaid once the epoch
    has a few non-zeros per feature. Results are the same bits as without it.
    """
    cdef Py_ssize_t n = order.shape[0], k = V.shape[1], d = w.shape[0], j
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
    cdef bint packed = adagrad and workspace.shape[0] > 0 and d > 0
    cdef floating* P = NULL
    cdef floating* W4 = NULL
    # What the rows read and step: the flat arrays, or the packed records.
    cdef floating* wq = wp
    cdef floating* awq = awp
    cdef const floating* rsq = rsp
    cdef floating* Vq = Vp
    cdef floating* aVq = aVp
    cdef Py_ssize_t ws = 1, vs = k
    cdef int avx = k8_use_avx()
    if rsp != NULL and reg_scale.shape[0] != w.shape[0]:
        raise ValueError("reg_scale must be empty or have one entry per feature")
    if packed:
        if workspace.shape[0] < workspace_size(d, k):
            raise ValueError(f"workspace has {workspace.shape[0]} elements, needs "
                             f"{workspace_size(d, k)}")
        P = align_line(&workspace[0])
        W4 = align_line(P + d * 2 * k)
        wq, awq, rsq, ws = W4, W4 + 1, W4 + 2, 4
        Vq, aVq, vs = P, P + k, 2 * k
        for j in prange(d, nogil=True, num_threads=n_threads, schedule="static"):
            pack_feature(j, k, wp, awp, rsp, Vp, aVp, P, W4)
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
                                    wq, awq, rsq, ws, Vq, aVq, vs, k, packed)
                start = lptr[c]
                nnz = lptr[c + 1] - start
                lrow = 0
                if k == 8 and adagrad:
                    ok = adagrad_row_k8(lix + start, lxs + start, nnz, lys[c], lsw[c], loss,
                                        lr, reg_bias, reg_linear, reg_factors,
                                        fit_intercept, fit_linear, th_w0, th_w0 + 1,
                                        wq, awq, rsq, Vq, aVq, packed, avx, &lrow)
                elif k == 8:
                    ok = sgd_row_k8(lix + start, lxs + start, nnz, lys[c], lsw[c], loss, lr,
                                    reg_bias, reg_linear, reg_factors, fit_intercept,
                                    fit_linear, th_w0, wq, rsq, Vq, avx, &lrow)
                else:
                    ok = sgd_row(lix + start, lxs + start, nnz, lys[c], lsw[c], loss, lr,
                                 reg_bias, reg_linear, reg_factors,
                                 adagrad, fit_intercept, fit_linear,
                                 th_w0, th_w0 + 1, wq, awq, rsq, ws, Vq, aVq, vs,
                                 k, scratch, &lrow)
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

    if packed:
        # Even after running out of memory: the rows trained so far are in the records.
        for j in prange(d, nogil=True, num_threads=n_threads, schedule="static"):
            unpack_feature(j, k, wp, awp, Vp, aVp, P, W4)

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
