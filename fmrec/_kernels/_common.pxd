# Shared inline code for the FM kernels: fused types, losses and prefetching.
# Everything here is `noexcept nogil`: safe inside prange bodies.

from libc.math cimport exp, log1p
from cython cimport floating
from libc.stdint cimport int32_t, int64_t

ctypedef fused index_t:
    int32_t
    int64_t

cdef enum Loss:
    SQUARE = 0
    LOGISTIC = 1

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define FMREC_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #else
    #define FMREC_PREFETCH(p) ((void)0)
    #endif
    """
    void prefetch "FMREC_PREFETCH"(const void *p) noexcept nogil


# Kernels written on GCC/Clang vector extensions exist twice on x86-64: on 16-byte vectors
# (SSE2, the portable baseline) and on 32-byte ones (FMREC_AVX: AVX, no FMA, so both give the
# same bits), the latter picked at run time by fmrec_use_avx(). FMREC_NO_AVX=1 in the
# environment keeps every kernel on SSE2. Other compilers get plain C.
cdef extern from *:
    """
    #include <stdlib.h>
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    #define FMREC_SIMD 1
    #define FMREC_AVX __attribute__((target("avx")))
    #elif defined(__GNUC__) || defined(__clang__)
    #define FMREC_SIMD 1
    #define FMREC_AVX
    #endif
    #ifdef FMREC_SIMD
    #include <stdint.h>
    #include <string.h>
    typedef float fmrec_f2 __attribute__((vector_size(8)));
    typedef float fmrec_f4 __attribute__((vector_size(16)));
    typedef float fmrec_f8 __attribute__((vector_size(32)));
    typedef double fmrec_d2 __attribute__((vector_size(16)));
    typedef double fmrec_d4 __attribute__((vector_size(32)));
    typedef int64_t fmrec_i2 __attribute__((vector_size(16)));
    typedef int64_t fmrec_i4 __attribute__((vector_size(32)));
    /* A vector from memory, and a vector's bits as another type (memcpy: no alignment or
       aliasing assumed; one load or register move). */
    #define FMREC_LD(VT, p) ({ VT v_; memcpy(&v_, (p), sizeof v_); v_; })
    #define FMREC_AS(VT, v) ({ VT o_; memcpy(&o_, &(v), sizeof o_); o_; })
    /* Lane by lane a where the mask m (a comparison of VD vectors, VI lanes) is set, else b:
       the bits of one or the other, unchanged. */
    #define FMREC_SELECT(VD, VI, m, a, b)                                                  \
        ({ VD a_ = (a), b_ = (b); VI m_ = (m);                                             \
           VI s_ = (FMREC_AS(VI, a_) & m_) | (FMREC_AS(VI, b_) & ~m_); FMREC_AS(VD, s_); })
    #endif
    /* 1 when the CPU (and OS) run AVX and FMREC_NO_AVX is unset, empty or 0. -1 until the
       first call looks; threads racing on that look all store the same value. */
    static inline int fmrec_use_avx(void) {
        static int state = -1;
        if (state < 0) {
            const char *off = getenv("FMREC_NO_AVX");
            int on = 0;
    #if defined(FMREC_SIMD) && (defined(__x86_64__) || defined(__i386__))
            on = __builtin_cpu_supports("avx");
    #endif
            state = on && !(off != NULL && off[0] != '\\0' && off[0] != '0');
        }
        return state;
    }
    """


# k = 8 (the common default) fast paths. With k a compile-time 8 GCC unrolls the f-loops
# completely *before* vectorising, and its SLP pass cannot pack the resulting 8 scalar
# accumulators carried around the loop over non-zeros, so the loops end up scalar. Writing
# them with vector extensions keeps one row of V in one (AVX) or two (SSE2) registers whatever
# -march is. Unaligned loads/stores go through memcpy. Other compilers get plain loops.
# (SGD's k = 8 rows, predictions and steps alike, are written the same way in sgd.pyx.)
cdef extern from *:
    """
    #include <string.h>
    #include <math.h>
    #if defined(__GNUC__) || defined(__clang__)
    typedef float fmrec_vf8 __attribute__((vector_size(32)));
    typedef double fmrec_vd8 __attribute__((vector_size(64)));
    #define FMREC_K8_DEFS(T, VT, SQRT)                                                      \
    static inline VT fmrec_ld_##T(const T *p) { VT v; memcpy(&v, p, sizeof v); return v; } \
    static inline void fmrec_st_##T(T *p, VT v) { memcpy(p, &v, sizeof v); }              \
    static inline void fmrec_k8_accum_##T(T *q, T *sq, const T *v, T x) {                 \
        VT vx = fmrec_ld_##T(v) * x;                                                       \
        fmrec_st_##T(q, fmrec_ld_##T(q) + vx);                                             \
        fmrec_st_##T(sq, fmrec_ld_##T(sq) + vx * vx);                                      \
    }
    #else
    #define FMREC_K8_DEFS(T, VT, SQRT)                                                      \
    static void fmrec_k8_accum_##T(T *q, T *sq, const T *v, T x) {                        \
        int f; for (f = 0; f < 8; f++) { q[f] += v[f] * x; sq[f] += v[f] * x * v[f] * x; } \
    }
    #endif
    FMREC_K8_DEFS(float, fmrec_vf8, sqrtf)
    FMREC_K8_DEFS(double, fmrec_vd8, sqrt)
    """
    void k8_accum_f "fmrec_k8_accum_float"(float* q, float* sq, const float* v, float x) noexcept nogil
    void k8_accum_d "fmrec_k8_accum_double"(double* q, double* sq, const double* v, double x) noexcept nogil


cdef inline void k8_accum(floating* q, floating* sq, const floating* v, floating x) noexcept nogil:
    """q[f] += v[f] x and sq[f] += (v[f] x)^2 for f < 8."""
    if floating is float:
        k8_accum_f(q, sq, v, x)
    else:
        k8_accum_d(q, sq, v, x)


cdef inline double sigmoid(double z) noexcept nogil:
    # Branches keep exp() from overflowing for large |z|.
    cdef double e
    if z >= 0:
        return 1.0 / (1.0 + exp(-z))
    e = exp(z)
    return e / (1.0 + e)


cdef inline double loss_value(int loss, double yhat, double y) noexcept nogil:
    """Pointwise loss: 0.5*(yhat-y)^2, or the log loss of sigmoid(yhat) for y in {0, 1}."""
    cdef double margin
    if loss == SQUARE:
        return 0.5 * (yhat - y) * (yhat - y)
    # log(1 + exp(-m)) with m = +-yhat, written so it never overflows
    margin = yhat if y > 0.5 else -yhat
    if margin > 0:
        return log1p(exp(-margin))
    return -margin + log1p(exp(margin))


cdef inline double loss_gradient(int loss, double yhat, double y) noexcept nogil:
    """d loss / d yhat."""
    if loss == SQUARE:
        return yhat - y
    return sigmoid(yhat) - y


cdef inline double logistic_curvature(double p) noexcept nogil:
    """The log loss's d^2 / d yhat^2, p (1 - p) with p = sigmoid(yhat), floored so Newton
    steps stay bounded."""
    p = p * (1.0 - p)
    return p if p > 1e-6 else 1e-6


cdef inline double loss_curvature(int loss, double yhat) noexcept nogil:
    """d^2 loss / d yhat^2 (floored for the logistic loss, see logistic_curvature)."""
    if loss == SQUARE:
        return 1.0
    return logistic_curvature(sigmoid(yhat))


cdef inline floating row_predict(const index_t* idx, const floating* val, Py_ssize_t nnz,
                                 floating w0, const floating* w, const floating* V,
                                 Py_ssize_t k, floating* q, floating* sq) noexcept nogil:
    """FM output of one sparse row in O(k*nnz); leaves the factor sums q[f] = sum_j v_jf x_j.

    ``sq`` is scratch of length k. Uses 0.5 * sum_f (q_f^2 - sum_j v_jf^2 x_j^2).
    """
    cdef Py_ssize_t p, f
    cdef floating x, lin = w0, inter = 0
    cdef const floating* v
    for f in range(k):
        q[f] = 0
        sq[f] = 0
    for p in range(nnz):
        x = val[p]
        lin = lin + w[idx[p]] * x
        v = V + idx[p] * k
        for f in range(k):
            q[f] += v[f] * x
            sq[f] += v[f] * v[f] * x * x
    for f in range(k):
        inter = inter + q[f] * q[f] - sq[f]
    return lin + 0.5 * inter
