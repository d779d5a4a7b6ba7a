# One coordinate-descent sweep of an FM (libFM's ALS) over CSC columns; the caches it needs are
# filled from the CSR rows.
#
# The caches make every coordinate update O(nnz of its column): r[i] is the residual
# yhat_i - y_i for the square loss (the output yhat_i for the logistic loss) and q[i, f] the
# factor sums sum_j v_jf x_ij. Each column's rows are gathered into contiguous scratch once,
# all k+1 coordinates of the feature are updated on the scratch, and it is scattered back:
# one random access per non-zero instead of 2k+2.
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport isfinite
from libc.math cimport sqrt
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

import numpy as np

from fmrec._kernels._common cimport (
    floating, index_t, loss_value, loss_gradient, loss_curvature, logistic_curvature, prefetch,
    SQUARE, k8_accum,
)

# Prefetch distance in non-zeros (of the flat index array, so it runs across row/column
# boundaries): one random line of V (caches) or of q and r (sweep) per non-zero.
cdef enum:
    AHEAD = 24

# block_entity_sums takes the logistic loss's sigmoids this many rows at a time.
cdef enum:
    SIGMOID_CHUNK = 256


# The logistic loss's Newton steps need sigmoid(r) of every row of a column for each of its
# k + 1 coordinates: glibc's exp() one call at a time was 39% of a sweep's instructions. The
# rows' sigmoids are taken a vector at a time instead, with exp(-|z|) in C from
# exp(x) = 2^n exp(r): n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts, so n ln2_hi is
# exact), exp(r) by its Taylor polynomial to degree 13 (|r| <= ln2 / 2: truncation below
# 1e-17), 2^n from n's bits. The sigmoids agree with glibc's to 1e-15 relative (3.2e-16 at
# most where measured; tests check 1e-15) at a seventh of the time. Below exp(-708) it
# takes 0 (glibc's is subnormal or 0): sigmoid(z) is 0 or 1 either way, up to 1e-308.
# Float32 models come out the same bits as with glibc's exp() wherever compared (the
# sums are double; a coordinate's step is rounded to float). Vectors of 2 doubles (SSE2) or
# 4 (AVX, see _common.pxd's fmrec_use_avx); plain C, one glibc exp() at a time, elsewhere.
cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    #include <math.h>
    #include <stdlib.h>

    static inline double fmrec_sigmoid_scalar(double z) {
        double e = exp(-fabs(z));
        return (z >= 0 ? 1.0 : e) / (1.0 + e);
    }

    #ifdef FMREC_SIMD
    /* out = sigmoid(z), lane by lane (z: VD, out: VD). */
    #define FMREC_SIGMOID_VEC(VD, VI, z, out)                                              \
        {                                                                                  \
            const VD one = (VD){0} + 1.0, floor_ = (VD){0} - 708.0;                        \
            const VD magic = (VD){0} + (6755399441055744.0 + 1023.0); /* 1.5 2^52 + bias */\
            VI xb = FMREC_AS(VI, z) | ((VI){0} + INT64_MIN);   /* x = -|z| */              \
            VD x = FMREC_AS(VD, xb);                                                       \
            VI under = x < floor_;                                                         \
            x = FMREC_SELECT(VD, VI, under, floor_, x);                                    \
            VD t = x * 1.4426950408889634 + magic;   /* low bits: n + 1023 */             \
            VD n = t - magic;                                                              \
            VD r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;  \
            VD e = r * (1.0 / 6227020800.0) + (1.0 / 479001600.0);                         \
            e = e * r + (1.0 / 39916800.0); e = e * r + (1.0 / 3628800.0);                 \
            e = e * r + (1.0 / 362880.0); e = e * r + (1.0 / 40320.0);                     \
            e = e * r + (1.0 / 5040.0); e = e * r + (1.0 / 720.0);                         \
            e = e * r + (1.0 / 120.0); e = e * r + (1.0 / 24.0);                           \
            e = e * r + (1.0 / 6.0); e = e * r + 0.5; e = e * r + 1.0; e = e * r + 1.0;    \
            VI scale = FMREC_AS(VI, t) << 52;                                              \
            e = e * FMREC_AS(VD, scale);                                                   \
            e = FMREC_SELECT(VD, VI, under, (VD){0}, e);                                   \
            out = FMREC_SELECT(VD, VI, z >= (VD){0}, one, e) / (one + e);                  \
        }
    #define FMREC_SIGMOID_DEFS(T, SUF, ATTR, VD, VI, VT)                                   \
    ATTR static void fmrec_sigmoid_many_##T##SUF(const T *z, double *p, Py_ssize_t n) {   \
        const int L = (int)(sizeof(VD) / sizeof(double));                                  \
        Py_ssize_t t = 0;                                                                  \
        for (; t + L <= n; t += L) {                                                       \
            VT zt; VD pv;                                                                  \
            memcpy(&zt, z + t, sizeof zt);                                                 \
            VD zv = __builtin_convertvector(zt, VD);                                       \
            FMREC_SIGMOID_VEC(VD, VI, zv, pv)                                              \
            memcpy(p + t, &pv, sizeof pv);                                                 \
        }                                                                                  \
        for (; t < n; t++) {                                                               \
            VD zv = (VD){0} + (double)z[t], pv;                                            \
            FMREC_SIGMOID_VEC(VD, VI, zv, pv)                                              \
            p[t] = pv[0];                                                                  \
        }                                                                                  \
    }
    FMREC_SIGMOID_DEFS(float, _sse, , fmrec_d2, fmrec_i2, fmrec_f2)
    FMREC_SIGMOID_DEFS(double, _sse, , fmrec_d2, fmrec_i2, fmrec_d2)
    FMREC_SIGMOID_DEFS(float, _avx, FMREC_AVX, fmrec_d4, fmrec_i4, fmrec_f4)
    FMREC_SIGMOID_DEFS(double, _avx, FMREC_AVX, fmrec_d4, fmrec_i4, fmrec_d4)

    static inline void fmrec_sigmoid_many_float(const float *z, double *p, Py_ssize_t n) {
        if (fmrec_use_avx()) fmrec_sigmoid_many_float_avx(z, p, n);
        else fmrec_sigmoid_many_float_sse(z, p, n);
    }
    static inline void fmrec_sigmoid_many_double(const double *z, double *p, Py_ssize_t n) {
        if (fmrec_use_avx()) fmrec_sigmoid_many_double_avx(z, p, n);
        else fmrec_sigmoid_many_double_sse(z, p, n);
    }
    #else
    static void fmrec_sigmoid_many_float(const float *z, double *p, Py_ssize_t n) {
        Py_ssize_t t;
        for (t = 0; t < n; t++) p[t] = fmrec_sigmoid_scalar(z[t]);
    }
    static void fmrec_sigmoid_many_double(const double *z, double *p, Py_ssize_t n) {
        Py_ssize_t t;
        for (t = 0; t < n; t++) p[t] = fmrec_sigmoid_scalar(z[t]);
    }
    #endif
    """
    void sigmoid_many_f "fmrec_sigmoid_many_float"(const float* z, double* p, Py_ssize_t n) noexcept nogil
    void sigmoid_many_d "fmrec_sigmoid_many_double"(const double* z, double* p, Py_ssize_t n) noexcept nogil


cdef inline void sigmoid_many(const floating* z, double* p, Py_ssize_t n) noexcept nogil:
    """p[t] = sigmoid(z[t]) for t < n (see above)."""
    if floating is float:
        sigmoid_many_f(z, p, n)
    else:
        sigmoid_many_d(z, p, n)


def sigmoid_array(const floating[::1] z):
    """sigmoid of every value of z, as the logistic sweeps take it (float64; for tests)."""
    out = np.empty(z.shape[0])
    cdef double[::1] o = out
    if z.shape[0]:
        sigmoid_many(&z[0], &o[0], z.shape[0])
    return out

# Conflict-free blocks with fewer non-zeros than this are swept by one thread (als_sweep's
# ``parallel_min_nnz``; tests lower it to run the parallel path on small data).
PARALLEL_MIN_NNZ = 32768


# Gibbs sampling (fmrec._mcmc) runs the same column pass: each coordinate's Gaussian full
# conditional under the square loss has precision alpha * den + lambda and mean
# theta - (alpha * num + lambda * (theta - mu)) / precision, with num and den the sums the ALS
# step uses; a standard normal draw scaled by 1/sqrt(precision) is added. The draws are
# pre-drawn, one per parameter and sweep, indexed by parameter (normals[0] for w0, then
# normals[1 + j * (k + 1)] for w_j and normals[2 + j * (k + 1) + f] for v_jf), so the result
# is the same for any number of threads. ``prior`` holds, per group g, the row
# [lambda_w, mu_w, lambda_v1..lambda_vk, mu_v1..mu_vk]; ``group[j]`` is column j's group.
cdef struct Gibbs:
    const double* normals
    const int32_t* group
    const double* prior
    Py_ssize_t prior_stride
    double alpha


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
    cdef floating x, lin, inter, inter1
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
            # two partial sums: one chain of 2k dependent adds would cost more than the row;
            # an empty row's is 0 (e.g. a design's flat part when blocks hold every column)
            inter = 0
            inter1 = 0
            if hi > lo:
                for f in range(0, k - 1, 2):
                    inter = inter + qi[f] * qi[f] - sq[f]
                    inter1 = inter1 + qi[f + 1] * qi[f + 1] - sq[f + 1]
                if k % 2:
                    inter = inter + qi[k - 1] * qi[k - 1] - sq[k - 1]
            r[i] = lin + <floating> 0.5 * (inter + inter1)
            if loss == SQUARE:
                r[i] -= y[i]
        free(sq)


# The sums over a column's rows behind every coordinate step, in C: each of 4 lanes sums the
# rows t with t % 4 == l, and the lanes are added as (0 + 1) + (2 + 3) (without -ffast-math
# a single sum stays in order: one add latency, ~4 cycles, per row). One row's terms are
# written once (FMREC_*_TERMS) and used on vectors of the 4 lanes (GCC/Clang: one AVX
# register of doubles, or two SSE2 ones, picked at run time as for the sigmoids), on the
# rows past the last multiple of 4 (into lane 0) and, with other compilers, lane by lane.
# Every lane does the same operations in the same types in either form (float products
# where two float values meet, as the loops did when they were Cython), so the bits do not
# depend on the form.
cdef extern from *:
    """
    #define FMREC_FLOOR_SCALAR(c) ((c) > 1e-6 ? (c) : 1e-6)
    /* s_t r_t x_t and s_t x_t^2 (unit: s_t = 1, not read) */
    #define FMREC_LINEAR_TERMS(VD, CVT, FLOOR, x, r, s, unit, NL, DL)                      \
        if (unit) { NL += CVT(r * x); DL += CVT(x * x); }                                  \
        else { NL += CVT(s * r * x); DL += CVT(s * x * x); }
    /* s_t r_t h_t and s_t h_t^2, h_t = x_t (q_tf - v_jf x_t) */
    #define FMREC_FACTOR_TERMS(VD, CVT, FLOOR, x, q, vj, r, s, unit, NL, DL)               \
        {                                                                                  \
            VD h_ = CVT(x * (q - vj * x));                                                 \
            if (unit) { NL += CVT(r) * h_; DL += h_ * h_; }                                \
            else { NL += CVT(s * r) * h_; DL += CVT(s) * h_ * h_; }                        \
        }
    /* s_t (p_t - y_t) h_t and s_t c_t h_t^2, c_t = p_t (1 - p_t) floored at 1e-6, h_t as
       above or x_t (linear: lin) */
    #define FMREC_LOGISTIC_TERMS(VD, CVT, FLOOR, x, q, vj, lin, p, yv, s, unit, NL, DL)    \
        {                                                                                  \
            VD h_ = lin ? CVT(x) : CVT(x * (q - vj * x));                                  \
            VD c_ = p * (1.0 - p);                                                         \
            c_ = FLOOR(c_);                                                                \
            if (unit) { NL += (p - CVT(yv)) * h_; DL += c_ * h_ * h_; }                    \
            else { VD s_ = CVT(s); NL += s_ * (p - CVT(yv)) * h_; DL += s_ * c_ * h_ * h_; } \
        }
    #define FMREC_SUMS_END                                                                 \
        num[0] += (nl[0] + nl[1]) + (nl[2] + nl[3]);                                       \
        den[0] += (dl[0] + dl[1]) + (dl[2] + dl[3]);
    #define FMREC_TO_DOUBLE(v) ((double)(v))

    #ifdef FMREC_SIMD
    #define FMREC_L4D(v) __builtin_convertvector((v), fmrec_d4)
    #define FMREC_FLOOR_L4(c)                                                              \
        ({ fmrec_d4 f_ = (fmrec_d4){0} + 1e-6;                                            \
           FMREC_SELECT(fmrec_d4, fmrec_i4, (c) > f_, c, f_); })
    #define FMREC_SUMS_DEFS(T, VT, SUF, ATTR)                                              \
    ATTR static void fmrec_sums_linear_##T##SUF(const T *bx, const T *bs, const T *br,    \
                                                Py_ssize_t m, int unit, double *num,       \
                                                double *den) {                             \
        fmrec_d4 nl = {0}, dl = {0}; Py_ssize_t t = 0;                                    \
        for (; t + 4 <= m; t += 4) {                                                       \
            VT x = FMREC_LD(VT, bx + t), r = FMREC_LD(VT, br + t);                         \
            VT s = unit ? x : FMREC_LD(VT, bs + t);                                        \
            FMREC_LINEAR_TERMS(fmrec_d4, FMREC_L4D, FMREC_FLOOR_L4, x, r, s, unit, nl, dl) \
        }                                                                                  \
        for (; t < m; t++) {                                                               \
            T s = unit ? 1 : bs[t];                                                        \
            FMREC_LINEAR_TERMS(double, FMREC_TO_DOUBLE, FMREC_FLOOR_SCALAR, bx[t], br[t], s, \
                               unit, nl[0], dl[0])                                         \
        }                                                                                  \
        FMREC_SUMS_END                                                                     \
    }                                                                                      \
    ATTR static void fmrec_sums_factor_##T##SUF(const T *bx, const T *bs, const T *br,    \
                                                const T *bqf, T vjf, Py_ssize_t m,         \
                                                int unit, double *num, double *den) {      \
        fmrec_d4 nl = {0}, dl = {0}; Py_ssize_t t = 0;                                    \
        VT vj = (VT){0} + vjf;                                                             \
        for (; t + 4 <= m; t += 4) {                                                       \
            VT x = FMREC_LD(VT, bx + t), q = FMREC_LD(VT, bqf + t), r = FMREC_LD(VT, br + t); \
            VT s = unit ? x : FMREC_LD(VT, bs + t);                                        \
            FMREC_FACTOR_TERMS(fmrec_d4, FMREC_L4D, FMREC_FLOOR_L4, x, q, vj, r, s, unit, \
                               nl, dl)                                                     \
        }                                                                                  \
        for (; t < m; t++) {                                                               \
            T s = unit ? 1 : bs[t];                                                        \
            FMREC_FACTOR_TERMS(double, FMREC_TO_DOUBLE, FMREC_FLOOR_SCALAR, bx[t], bqf[t], \
                               vjf, br[t], s, unit, nl[0], dl[0])                          \
        }                                                                                  \
        FMREC_SUMS_END                                                                     \
    }                                                                                      \
    ATTR static void fmrec_sums_logistic_##T##SUF(const T *bx, const T *bs, const T *br,  \
                                                  const T *by, const T *bqf, T vjf,        \
                                                  Py_ssize_t m, int unit, double *bp,      \
                                                  double *num, double *den) {              \
        fmrec_d4 nl = {0}, dl = {0}; Py_ssize_t t = 0;                                    \
        VT vj = (VT){0} + vjf;                                                             \
        int lin = bqf == NULL;                                                             \
        fmrec_sigmoid_many_##T##SUF(br, bp, m);                                            \
        for (; t + 4 <= m; t += 4) {                                                       \
            VT x = FMREC_LD(VT, bx + t), yv = FMREC_LD(VT, by + t);                        \
            VT q = lin ? x : FMREC_LD(VT, bqf + t), s = unit ? x : FMREC_LD(VT, bs + t);   \
            fmrec_d4 p = FMREC_LD(fmrec_d4, bp + t);                                     \
            FMREC_LOGISTIC_TERMS(fmrec_d4, FMREC_L4D, FMREC_FLOOR_L4, x, q, vj, lin, p, yv, \
                                 s, unit, nl, dl)                                          \
        }                                                                                  \
        for (; t < m; t++) {                                                               \
            T s = unit ? 1 : bs[t], q = lin ? 0 : bqf[t];                                  \
            FMREC_LOGISTIC_TERMS(double, FMREC_TO_DOUBLE, FMREC_FLOOR_SCALAR, bx[t], q, vjf, \
                                 lin, bp[t], by[t], s, unit, nl[0], dl[0])                 \
        }                                                                                  \
        FMREC_SUMS_END                                                                     \
    }
    FMREC_SUMS_DEFS(float, fmrec_f4, _sse, )
    FMREC_SUMS_DEFS(double, fmrec_d4, _sse, )
    FMREC_SUMS_DEFS(float, fmrec_f4, _avx, FMREC_AVX)
    FMREC_SUMS_DEFS(double, fmrec_d4, _avx, FMREC_AVX)
    #define FMREC_SUMS_PICK(NAME) (fmrec_use_avx() ? NAME##_avx : NAME##_sse)
    #else  /* other compilers: the lanes one by one */
    #define FMREC_SUMS_DEFS(T, VT, SUF, ATTR)                                              \
    static void fmrec_sums_linear_##T##SUF(const T *bx, const T *bs, const T *br,         \
                                           Py_ssize_t m, int unit, double *num,            \
                                           double *den) {                                  \
        double nl[4] = {0}, dl[4] = {0}; Py_ssize_t t; int l;                              \
        for (t = 0; t < m; t++) {                                                          \
            T s = unit ? 1 : bs[t];                                                        \
            l = t < m - m % 4 ? (int)(t % 4) : 0;                                          \
            FMREC_LINEAR_TERMS(double, FMREC_TO_DOUBLE, FMREC_FLOOR_SCALAR, bx[t], br[t], s, \
                               unit, nl[l], dl[l])                                         \
        }                                                                                  \
        FMREC_SUMS_END                                                                     \
    }                                                                                      \
    static void fmrec_sums_factor_##T##SUF(const T *bx, const T *bs, const T *br,         \
                                           const T *bqf, T vjf, Py_ssize_t m, int unit,    \
                                           double *num, double *den) {                     \
        double nl[4] = {0}, dl[4] = {0}; Py_ssize_t t; int l;                              \
        for (t = 0; t < m; t++) {                                                          \
            T s = unit ? 1 : bs[t];                                                        \
            l = t < m - m % 4 ? (int)(t % 4) : 0;                                          \
            FMREC_FACTOR_TERMS(double, FMREC_TO_DOUBLE, FMREC_FLOOR_SCALAR, bx[t], bqf[t], \
                               vjf, br[t], s, unit, nl[l], dl[l])                          \
        }                                                                                  \
        FMREC_SUMS_END                                                                     \
    }                                                                                      \
    static void fmrec_sums_logistic_##T##SUF(const T *bx, const T *bs, const T *br,       \
                                             const T *by, const T *bqf, T vjf,             \
                                             Py_ssize_t m, int unit, double *bp,           \
                                             double *num, double *den) {                   \
        double nl[4] = {0}, dl[4] = {0}; Py_ssize_t t; int l, lin = bqf == NULL;           \
        fmrec_sigmoid_many_##T(br, bp, m);                                                 \
        for (t = 0; t < m; t++) {                                                          \
            T s = unit ? 1 : bs[t], q = lin ? 0 : bqf[t];                                  \
            l = t < m - m % 4 ? (int)(t % 4) : 0;                                          \
            FMREC_LOGISTIC_TERMS(double, FMREC_TO_DOUBLE, FMREC_FLOOR_SCALAR, bx[t], q, vjf, \
                                 lin, bp[t], by[t], s, unit, nl[l], dl[l])                 \
        }                                                                                  \
        FMREC_SUMS_END                                                                     \
    }
    FMREC_SUMS_DEFS(float, float, _sse, )
    FMREC_SUMS_DEFS(double, double, _sse, )
    #define FMREC_SUMS_PICK(NAME) NAME##_sse
    #endif
    static inline void fmrec_sums_linear_float(const float *bx, const float *bs,
                                               const float *br, Py_ssize_t m, int unit,
                                               double *num, double *den) {
        FMREC_SUMS_PICK(fmrec_sums_linear_float)(bx, bs, br, m, unit, num, den);
    }
    static inline void fmrec_sums_linear_double(const double *bx, const double *bs,
                                                const double *br, Py_ssize_t m, int unit,
                                                double *num, double *den) {
        FMREC_SUMS_PICK(fmrec_sums_linear_double)(bx, bs, br, m, unit, num, den);
    }
    static inline void fmrec_sums_factor_float(const float *bx, const float *bs,
                                               const float *br, const float *bqf, float vjf,
                                               Py_ssize_t m, int unit, double *num,
                                               double *den) {
        FMREC_SUMS_PICK(fmrec_sums_factor_float)(bx, bs, br, bqf, vjf, m, unit, num, den);
    }
    static inline void fmrec_sums_factor_double(const double *bx, const double *bs,
                                                const double *br, const double *bqf,
                                                double vjf, Py_ssize_t m, int unit,
                                                double *num, double *den) {
        FMREC_SUMS_PICK(fmrec_sums_factor_double)(bx, bs, br, bqf, vjf, m, unit, num, den);
    }
    static inline void fmrec_sums_logistic_float(const float *bx, const float *bs,
                                                 const float *br, const float *by,
                                                 const float *bqf, float vjf, Py_ssize_t m,
                                                 int unit, double *bp, double *num,
                                                 double *den) {
        FMREC_SUMS_PICK(fmrec_sums_logistic_float)(bx, bs, br, by, bqf, vjf, m, unit, bp,
                                                   num, den);
    }
    static inline void fmrec_sums_logistic_double(const double *bx, const double *bs,
                                                  const double *br, const double *by,
                                                  const double *bqf, double vjf,
                                                  Py_ssize_t m, int unit, double *bp,
                                                  double *num, double *den) {
        FMREC_SUMS_PICK(fmrec_sums_logistic_double)(bx, bs, br, by, bqf, vjf, m, unit, bp,
                                                    num, den);
    }
    """
    void sums_linear_f "fmrec_sums_linear_float"(const float* bx, const float* bs, const float* br, Py_ssize_t m, int unit, double* num, double* den) noexcept nogil
    void sums_linear_d "fmrec_sums_linear_double"(const double* bx, const double* bs, const double* br, Py_ssize_t m, int unit, double* num, double* den) noexcept nogil
    void sums_factor_f "fmrec_sums_factor_float"(const float* bx, const float* bs, const float* br, const float* bqf, float vjf, Py_ssize_t m, int unit, double* num, double* den) noexcept nogil
    void sums_factor_d "fmrec_sums_factor_double"(const double* bx, const double* bs, const double* br, const double* bqf, double vjf, Py_ssize_t m, int unit, double* num, double* den) noexcept nogil
    void sums_logistic_f "fmrec_sums_logistic_float"(const float* bx, const float* bs, const float* br, const float* by, const float* bqf, float vjf, Py_ssize_t m, int unit, double* bp, double* num, double* den) noexcept nogil
    void sums_logistic_d "fmrec_sums_logistic_double"(const double* bx, const double* bs, const double* br, const double* by, const double* bqf, double vjf, Py_ssize_t m, int unit, double* bp, double* num, double* den) noexcept nogil


cdef inline void sums_linear(const floating* bx, const floating* bs, const floating* br,
                             Py_ssize_t m, bint unit, double* num, double* den) noexcept nogil:
    """num += sum_t s_t r_t x_t and den += sum_t s_t x_t^2 (square loss; s_t = 1 if ``unit``)."""
    if floating is float:
        sums_linear_f(bx, bs, br, m, unit, num, den)
    else:
        sums_linear_d(bx, bs, br, m, unit, num, den)


cdef inline void sums_factor(const floating* bx, const floating* bs, const floating* br,
                             const floating* bqf, floating vjf, Py_ssize_t m, bint unit,
                             double* num, double* den) noexcept nogil:
    """num += sum_t s_t r_t h_t and den += sum_t s_t h_t^2 with h_t = x_t (q_tf - v_jf x_t)."""
    if floating is float:
        sums_factor_f(bx, bs, br, bqf, vjf, m, unit, num, den)
    else:
        sums_factor_d(bx, bs, br, bqf, vjf, m, unit, num, den)


cdef inline void sums_logistic(const floating* bx, const floating* bs, const floating* br,
                               const floating* by, const floating* bqf, floating vjf,
                               Py_ssize_t m, bint unit, double* bp, double* num,
                               double* den) noexcept nogil:
    """num += sum_t s_t g_t h_t and den += sum_t s_t c_t h_t^2 under the logistic loss, with
    g_t = sigmoid(r_t) - y_t, c_t = logistic_curvature(sigmoid(r_t)) and
    h_t = x_t (q_tf - v_jf x_t), or x_t when ``bqf`` is NULL (the linear weight).
    ``bp``: scratch for m doubles (the sigmoids)."""
    if floating is float:
        sums_logistic_f(bx, bs, br, by, bqf, vjf, m, unit, bp, num, den)
    else:
        sums_logistic_d(bx, bs, br, by, bqf, vjf, m, unit, bp, num, den)


cdef inline Py_ssize_t scratch_head(Py_ssize_t k, Py_ssize_t stride,
                                    Py_ssize_t itemsize) noexcept nogil:
    """Bytes of update_column's (4 + k) * stride gathered values, rounded up to 64: the
    logistic loss's stride doubles of sigmoids follow."""
    return ((4 + k) * stride * itemsize + 63) // 64 * 64


cdef inline double output_of(int loss, floating r, floating y) noexcept nogil:
    return r + y if loss == SQUARE else r


cdef inline void row_to_column(const floating* row, floating* column, Py_ssize_t stride,
                               Py_ssize_t k) noexcept nogil:
    """column[f * stride] = row[f] for f < k: a row of the caches into the factor-major
    scratch, eight factors a pass (a pass per factor cost three times the copies' own
    instructions)."""
    cdef Py_ssize_t f = 0
    cdef floating* c
    while f + 8 <= k:
        c = column + f * stride
        c[0] = row[f]
        c[stride] = row[f + 1]
        c[2 * stride] = row[f + 2]
        c[3 * stride] = row[f + 3]
        c[4 * stride] = row[f + 4]
        c[5 * stride] = row[f + 5]
        c[6 * stride] = row[f + 6]
        c[7 * stride] = row[f + 7]
        f += 8
    while f < k:
        column[f * stride] = row[f]
        f += 1


cdef inline void column_to_row(const floating* column, floating* row, Py_ssize_t stride,
                               Py_ssize_t k) noexcept nogil:
    """``row_to_column`` backwards: row[f] = column[f * stride] for f < k."""
    cdef Py_ssize_t f = 0
    cdef const floating* c
    while f + 8 <= k:
        c = column + f * stride
        row[f] = c[0]
        row[f + 1] = c[stride]
        row[f + 2] = c[2 * stride]
        row[f + 3] = c[3 * stride]
        row[f + 4] = c[4 * stride]
        row[f + 5] = c[5 * stride]
        row[f + 6] = c[6 * stride]
        row[f + 7] = c[7 * stride]
        f += 8
    while f < k:
        row[f] = column[f * stride]
        f += 1


cdef inline void update_column(
        Py_ssize_t j, const index_t* indptr, const index_t* indices, const floating* data,
        const uint8_t* codes, const floating* y, const floating* sample_weight, int loss, bint unit,
        floating* w, floating* V, Py_ssize_t k, floating* r, floating* q,
        const floating* reg_linear, const floating* reg_factors, bint fit_linear,
        Py_ssize_t prefetch_stop, floating* scratch, Py_ssize_t stride,
        const Gibbs* gb) noexcept nogil:
    """Update w_j, then v_j1..v_jk, on the gathered rows of column j; write the caches back.

    ``scratch`` holds (4 + k) * stride elements, stride >= the column's length, then (logistic
    loss) stride doubles at byte ``scratch_head(k, stride, sizeof(floating))``. With ``gb``
    (square loss only) each coordinate is drawn from its Gibbs conditional instead.
    """
    cdef Py_ssize_t start = indptr[j], m = indptr[j + 1] - start
    cdef Py_ssize_t i, p, t, f
    cdef bint square = loss == SQUARE
    cdef double num, den, delta
    cdef floating* bx = scratch
    cdef floating* bs = bx + stride
    cdef floating* by = bs + stride
    cdef floating* br = by + stride
    cdef floating* bq = br + stride      # factor-major: bq[f * m + t]
    cdef double* bp = <double*> (<char*> scratch + scratch_head(k, stride, sizeof(floating)))
    cdef floating* bqf
    cdef floating vjf, fdelta
    cdef double alpha = 1, lam, mu = 0
    cdef const double* z = NULL
    cdef const double* pr = NULL
    if gb != NULL:
        alpha = gb.alpha
        z = gb.normals + 1 + j * (k + 1)
        pr = gb.prior + gb.group[j] * gb.prior_stride
    if m == 0 and gb != NULL:
        # No data: the conditional is the prior.
        if fit_linear:
            w[j] = <floating> (pr[1] + z[0] / sqrt(pr[0]))
        for f in range(k):
            V[j * k + f] = <floating> (pr[2 + k + f] + z[1 + f] / sqrt(pr[2 + f]))
        return
    if m == 0:
        # No data: the penalty alone is minimized at zero.
        if reg_linear[j] > 0 and fit_linear:
            w[j] = 0
        if reg_factors[j] > 0:
            for f in range(k):
                V[j * k + f] = 0
        return
    # the column's values: sequential, one of three storage forms (see als_sweep)
    if codes != NULL:
        for t in range(m):
            bx[t] = data[codes[start + t]]
    elif data != NULL:
        memcpy(bx, data + start, m * sizeof(floating))
    else:
        for t in range(m):
            bx[t] = 1
    # gather the rows' caches; the prefetch runs on into the next columns, mostly short
    for t in range(m):
        p = start + t
        if p + AHEAD < prefetch_stop:
            prefetch(q + indices[p + AHEAD] * k)
            prefetch(r + indices[p + AHEAD])
            if not unit:
                prefetch(sample_weight + indices[p + AHEAD])
        i = indices[p]
        if not unit:
            bs[t] = sample_weight[i]
        if not square:
            by[t] = y[i]
        br[t] = r[i]
        row_to_column(q + i * k, bq + t, m, k)

    if fit_linear:
        if gb != NULL:
            lam = pr[0]
            mu = pr[1]
        else:
            lam = reg_linear[j]
        if square:
            num = 0
            den = 0
            sums_linear(bx, bs, br, m, unit, &num, &den)
            if gb != NULL:
                num = alpha * num + lam * (w[j] - mu)
                den = alpha * den + lam
            else:  # the same bits as starting the sums at reg * w_j (a `floating` product)
                num = num + reg_linear[j] * w[j]
                den = den + reg_linear[j]
        else:
            num = reg_linear[j] * w[j]
            den = reg_linear[j]
            sums_logistic(bx, bs, br, by, NULL, 0, m, unit, bp, &num, &den)
        if den > 0:
            delta = -num / den
            if z != NULL:
                delta = delta + z[0] / sqrt(den)
            w[j] += <floating> delta
            fdelta = <floating> delta
            for t in range(m):
                br[t] += fdelta * bx[t]

    for f in range(k):
        vjf = V[j * k + f]
        bqf = bq + f * m
        if gb != NULL:
            lam = pr[2 + f]
            mu = pr[2 + k + f]
        else:
            lam = reg_factors[j]
        if square:
            num = 0
            den = 0
            sums_factor(bx, bs, br, bqf, vjf, m, unit, &num, &den)
            if gb != NULL:
                num = alpha * num + lam * (vjf - mu)
                den = alpha * den + lam
            else:
                num = num + reg_factors[j] * vjf
                den = den + reg_factors[j]
        else:
            num = reg_factors[j] * vjf
            den = reg_factors[j]
            sums_logistic(bx, bs, br, by, bqf, vjf, m, unit, bp, &num, &den)
        if den > 0:
            delta = -num / den
            if z != NULL:
                delta = delta + z[1 + f] / sqrt(den)
            V[j * k + f] = vjf + <floating> delta
            fdelta = <floating> delta
            for t in range(m):
                br[t] += fdelta * bx[t] * (bqf[t] - vjf * bx[t])
                bqf[t] += fdelta * bx[t]

    # scatter
    for t in range(m):
        i = indices[start + t]
        r[i] = br[t]
        column_to_row(bq + t, q + i * k, m, k)


def conflict_free_blocks(const index_t[::1] indptr, const index_t[::1] indices,
                         Py_ssize_t n_rows):
    """Split the columns into consecutive blocks in which no row has two non-zeros.

    Columns of one block touch disjoint rows, so their coordinate updates commute exactly and
    can run in parallel with the same result as in order. One-hot fields (user ids, item
    ids, …) each fall into one block. Returns the block boundaries (int64, starts with 0 and
    ends with the number of columns). O(nnz).
    """
    cdef Py_ssize_t d = indptr.shape[0] - 1, j, p, block = 0
    cdef bint conflict
    owner_arr = np.full(n_rows, -1, dtype=np.int64)
    cdef int64_t[::1] owner = owner_arr
    starts = [0]
    with nogil:
        for j in range(d):
            conflict = False
            for p in range(indptr[j], indptr[j + 1]):
                if owner[indices[p]] == block:
                    conflict = True
                    break
            if conflict:
                block += 1
                with gil:
                    starts.append(j)
            for p in range(indptr[j], indptr[j + 1]):
                owner[indices[p]] = block
    starts.append(d)
    return np.asarray(starts, dtype=np.int64)


def als_sweep(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data,
              const uint8_t[::1] codes, const floating[::1] y, const floating[::1] sample_weight, int loss,
              floating[::1] w0, floating[::1] w, floating[:, ::1] V,
              floating[::1] r, floating[:, ::1] q,
              double reg_bias, const floating[::1] reg_linear, const floating[::1] reg_factors,
              bint fit_intercept, bint fit_linear,
              const int64_t[::1] blocks, int n_threads, const uint8_t[::1] skip=None,
              const double[::1] normals=None, const int32_t[::1] groups=None,
              const double[:, ::1] prior=None, double alpha=1.0, double w0_mean=0.0,
              Py_ssize_t parallel_min_nnz=PARALLEL_MIN_NNZ):
    """Update w0, then every column's w_j and v_j1..v_jk, each by its exact minimizer (square
    loss) or a Newton step (logistic loss), given the caches from ``compute_caches``.

    ``reg_linear[j]`` and ``reg_factors[j]`` are the per-feature penalties: the objective is
    sum_i s_i loss_i + 0.5 * (reg_bias w0^2 + sum_j reg_linear[j] w_j^2 + reg_factors[j] |v_j|^2).
    The stored values come in one of three forms: ``data`` with one value per non-zero
    (``codes`` empty); ``codes`` (one byte per non-zero) indexing the table ``data``, for
    matrices with few distinct values; or both empty, every value 1 (one-hot columns).
    ``blocks`` (from ``conflict_free_blocks``, or [0, n_columns]) lets ``n_threads`` threads
    share the columns of a block; the result is the same for any number of threads.
    ``skip`` (one byte per column, optional): columns marked 1 are left alone, e.g. those a
    relation block updates (fmrec.solvers._blocks).
    Gibbs sampling (square loss; see the ``Gibbs`` struct): ``normals`` (1 + d * (k + 1)
    standard normal draws), ``groups`` (int32 group of each column), ``prior`` (one row
    [lambda_w, mu_w, lambda_v1..k, mu_v1..k] per group) and the noise precision ``alpha``
    turn every update into a draw from the coordinate's full conditional; w0 has the prior
    N(w0_mean, 1 / reg_bias).
    Returns (sum_i s_i loss_i after the sweep, sum_i s_i, 0 or 1 if a value became non-finite).
    """
    cdef Py_ssize_t n = r.shape[0], d = indptr.shape[0] - 1, k = V.shape[1]
    cdef Gibbs gibbs
    cdef const Gibbs* gb = NULL
    cdef Py_ssize_t i, j, b, lo, hi, stride = 1, nnz_all = indptr[d], per_thread
    cdef Py_ssize_t n_blocks = blocks.shape[0] - 1
    cdef bint unit = True
    cdef double num, den, st, delta, loss_sum = 0, weight_sum = 0
    cdef floating* scratch
    cdef floating* own
    cdef floating* pool = NULL
    cdef int bad = 0
    cdef const index_t* ip = &indptr[0]
    cdef const index_t* ix = &indices[0] if indices.shape[0] > 0 else NULL
    cdef const floating* xs = &data[0] if data.shape[0] > 0 else NULL
    cdef const uint8_t* cs = &codes[0] if codes.shape[0] > 0 else NULL
    cdef const floating* ys = &y[0]
    cdef const floating* sw = &sample_weight[0]
    cdef floating* wp = &w[0]
    cdef floating* Vp = &V[0, 0]
    cdef floating* rp = &r[0]
    cdef floating* qp = &q[0, 0]
    cdef const floating* rl = &reg_linear[0]
    cdef const floating* rf = &reg_factors[0]
    cdef const uint8_t* sk = NULL

    if skip is not None and skip.shape[0] > 0:
        if skip.shape[0] != d:
            raise ValueError("skip must hold one byte per column")
        sk = &skip[0]
    if normals is not None and normals.shape[0] > 0:
        if loss != SQUARE:
            raise ValueError("Gibbs sampling needs the square loss")
        if normals.shape[0] != 1 + d * (k + 1):
            raise ValueError("normals must hold 1 + n_columns * (k + 1) draws")
        if groups is None or groups.shape[0] != d:
            raise ValueError("groups must hold one group per column")
        if prior is None or prior.shape[1] != 2 + 2 * k:
            raise ValueError("prior must have 2 + 2k columns")
        for j in range(d):
            if groups[j] < 0 or groups[j] >= prior.shape[0]:
                raise ValueError(f"groups[{j}] = {groups[j]} has no row in prior")
        for i in range(prior.shape[0]):
            if not prior[i, 0] > 0:
                raise ValueError("prior precisions must be positive")
            for j in range(k):
                if not prior[i, 2 + j] > 0:
                    raise ValueError("prior precisions must be positive")
        gibbs.normals = &normals[0]
        gibbs.group = &groups[0] if d > 0 else NULL
        gibbs.prior = &prior[0, 0]
        gibbs.prior_stride = prior.shape[1]
        gibbs.alpha = alpha
        gb = &gibbs
    if codes.shape[0] not in (0, nnz_all):
        raise ValueError("codes must be empty or hold one code per non-zero")
    if cs == NULL and data.shape[0] not in (0, nnz_all):
        raise ValueError("data must be empty (all ones) or hold one value per non-zero")
    if cs != NULL and data.shape[0] < 256:
        for i in range(nnz_all):
            if codes[i] >= data.shape[0]:
                raise ValueError("a code points past the value table")
    if blocks.shape[0] < 2 or blocks[0] != 0 or blocks[n_blocks] != d:
        raise ValueError("blocks must run from 0 to the number of columns")
    for j in range(d):
        if indptr[j + 1] - indptr[j] + 1 > stride:
            stride = indptr[j + 1] - indptr[j] + 1
    # All-ones sample weights (the usual case) need neither gathering nor multiplying:
    # one sequential pass over n is cheap next to the nnz random gathers it saves.
    for i in range(n):
        if sample_weight[i] != 1:
            unit = False
            break
    per_thread = scratch_head(k, stride, sizeof(floating)) + (0 if loss == SQUARE else 8 * stride)
    per_thread = per_thread // sizeof(floating)
    scratch = <floating*> malloc(per_thread * sizeof(floating))
    if scratch == NULL:
        raise MemoryError("ALS scratch")
    if n_threads > 1:
        pool = <floating*> malloc(n_threads * per_thread * sizeof(floating))
        if pool == NULL:
            free(scratch)
            raise MemoryError("ALS scratch")
    try:
        with nogil:
            if fit_intercept and gb != NULL:
                num = 0
                den = 0
                for i in range(n):
                    num = num + sample_weight[i] * r[i]
                    den = den + sample_weight[i]
                num = alpha * num + reg_bias * (w0[0] - w0_mean)
                den = alpha * den + reg_bias
                if den > 0:
                    delta = -num / den + gibbs.normals[0] / sqrt(den)
                    w0[0] += <floating> delta
                    for i in range(n):
                        r[i] += <floating> delta
            elif fit_intercept:
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

            for b in range(n_blocks):
                lo = blocks[b]
                hi = blocks[b + 1]
                # a parallel region per block only pays when the block holds enough work:
                # long-tailed data split into thousands of small blocks, and on a busy
                # machine every fork/join can wait for a time slice
                if (n_threads > 1 and hi - lo >= 4 * n_threads
                        and ip[hi] - ip[lo] >= parallel_min_nnz):
                    # one scratch per thread for the whole sweep: a malloc per parallel block
                    # (thousands of blocks on long-tailed data, each scratch as long as the
                    # most popular column) cost more than the updates
                    with parallel(num_threads=n_threads):
                        for j in prange(lo, hi, schedule="dynamic", chunksize=8):
                            if sk != NULL and sk[j]:
                                continue
                            own = pool + threadid() * per_thread
                            update_column(j, ip, ix, xs, cs, ys, sw, loss, unit, wp, Vp, k, rp,
                                          qp, rl, rf, fit_linear, nnz_all, own, stride, gb)
                else:
                    for j in range(lo, hi):
                        if sk != NULL and sk[j]:
                            continue
                        update_column(j, ip, ix, xs, cs, ys, sw, loss, unit, wp, Vp, k, rp, qp,
                                      rl, rf, fit_linear, nnz_all, scratch, stride, gb)

            for i in range(n):
                st = sample_weight[i]
                loss_sum = loss_sum + st * loss_value(loss, output_of(loss, r[i], y[i]), y[i])
                weight_sum = weight_sum + st
            if not isfinite(loss_sum):
                bad = 1
    finally:
        free(scratch)
        free(pool)
    return loss_sum, weight_sum, bad


# Relation blocks (fmrec.design): a block's column j holds, for each entity u (a user, an
# item) with x_uj != 0, the same value in every sample row of u. Its coordinates are updated
# from per-entity sums of the rows' loss gradient g and curvature c, never from the rows
# themselves, so a pass costs O(nnz of the block) however many rows share each entity. The
# loss is modelled by its quadratic at the start of the pass (g moves by c * change of the
# output): exact for the square loss, one Newton step per coordinate for the logistic loss.


def block_linear_pass(const index_t[::1] indptr, const index_t[::1] indices,
                      const floating[::1] data, floating[::1] w, const floating[::1] reg,
                      double[::1] G, const double[::1] C, const double[::1] mu=None,
                      const double[::1] z=None, double alpha=1.0):
    """Update the block's linear weights w_j in column order.

    ``indptr``/``indices``/``data``: the block in CSC (rows are entities). G[u] = sum of s*g
    over u's rows, C[u] = sum of s*c; G is kept current as the weights move.
    Gibbs sampling (square loss): with ``z`` (one standard normal per column), w_j is drawn
    from its conditional under the prior N(mu[j], 1 / reg[j]) and noise precision ``alpha``.
    """
    cdef Py_ssize_t d = indptr.shape[0] - 1, j, p, u
    cdef double num, den, delta, x, step
    cdef bint gibbs = z is not None and z.shape[0] > 0
    if gibbs and (z.shape[0] != d or mu is None or mu.shape[0] != d):
        raise ValueError("mu and z must hold one value per column")
    with nogil:
        for j in range(d):
            if indptr[j] == indptr[j + 1]:
                if gibbs:
                    w[j] = <floating> (mu[j] + z[j] / sqrt(reg[j]))
                elif reg[j] > 0:
                    w[j] = 0
                continue
            if gibbs:
                num = 0
                den = 0
            else:
                num = reg[j] * w[j]
                den = reg[j]
            for p in range(indptr[j], indptr[j + 1]):
                u = indices[p]
                x = data[p]
                num = num + x * G[u]
                den = den + x * x * C[u]
            if gibbs:
                num = alpha * num + reg[j] * (w[j] - mu[j])
                den = alpha * den + reg[j]
            if den > 0:
                x = w[j]
                step = -num / den
                if gibbs:
                    step = step + z[j] / sqrt(den)
                w[j] = <floating> (x + step)
                delta = <double> w[j] - x    # the step actually stored
                for p in range(indptr[j], indptr[j + 1]):
                    u = indices[p]
                    G[u] += delta * data[p] * C[u]


def block_factor_pass(const index_t[::1] indptr, const index_t[::1] indices,
                      const floating[::1] data, floating[:, ::1] V, Py_ssize_t f,
                      const floating[::1] reg, double[::1] qB, double[::1] G, double[::1] GQ,
                      const double[::1] C, const double[::1] A, const double[::1] A2,
                      const double[::1] mu=None, const double[::1] z=None, double alpha=1.0,
                      double[::1] sq_change=None):
    """Update the block's factors v_jf (one f) in column order.

    Per entity u, with t_r = q_rf minus the block's own share of it (the rest of row r):
    qB[u] = the block's share sum_j v_jf x_uj, G = sum s*g, GQ = sum s*g*t, C = sum s*c,
    A = sum s*c*t, A2 = sum s*c*t^2 over u's rows. For column j and entity u, every row's
    derivative is h = x_uj (t_r + a_u) with a_u = qB[u] - v_jf x_uj, so the Newton sums are
    sum s g h = x (GQ + a G) and sum s c h^2 = x^2 (A2 + 2 a A + a^2 C). qB, G and GQ are
    kept current; C, A, A2 do not move within the pass.
    Gibbs sampling: as in ``block_linear_pass`` (``mu``, ``z``, ``alpha`` for factor f).
    ``sq_change`` (optional, per entity): gets sum_j x_uj^2 (v_jf new^2 - v_jf old^2) added,
    the change of the block's own squared term.
    """
    cdef Py_ssize_t d = indptr.shape[0] - 1, j, p, u
    cdef double num, den, delta, x, a, v, dsq
    cdef bint gibbs = z is not None and z.shape[0] > 0
    cdef bint track = sq_change is not None and sq_change.shape[0] > 0
    if gibbs and (z.shape[0] != d or mu is None or mu.shape[0] != d):
        raise ValueError("mu and z must hold one value per column")
    with nogil:
        for j in range(d):
            if indptr[j] == indptr[j + 1]:
                if gibbs:
                    V[j, f] = <floating> (mu[j] + z[j] / sqrt(reg[j]))
                elif reg[j] > 0:
                    V[j, f] = 0
                continue
            v = V[j, f]
            if gibbs:
                num = 0
                den = 0
            else:
                num = reg[j] * v
                den = reg[j]
            for p in range(indptr[j], indptr[j + 1]):
                u = indices[p]
                x = data[p]
                a = qB[u] - v * x
                num = num + x * (GQ[u] + a * G[u])
                den = den + x * x * (A2[u] + 2 * a * A[u] + a * a * C[u])
            if gibbs:
                num = alpha * num + reg[j] * (v - mu[j])
                den = alpha * den + reg[j]
            if den > 0:
                delta = -num / den
                if gibbs:
                    delta = delta + z[j] / sqrt(den)
                V[j, f] = <floating> (v + delta)
                delta = <double> V[j, f] - v    # the step actually stored
                dsq = <double> V[j, f] * <double> V[j, f] - v * v
                for p in range(indptr[j], indptr[j + 1]):
                    u = indices[p]
                    x = data[p]
                    a = qB[u] - v * x
                    G[u] += delta * x * (A[u] + a * C[u])
                    GQ[u] += delta * x * (A2[u] + a * A[u])
                    qB[u] += delta * x
                    if track:
                        sq_change[u] += x * x * dsq


def block_entity_sums(const int64_t[::1] index, const floating[::1] r, const floating[::1] y,
                      const floating[::1] sample_weight, int loss, const floating[:, ::1] q,
                      Py_ssize_t f, const double[::1] qB, double[::1] G, double[::1] GQ,
                      double[::1] C, double[::1] A, double[::1] A2):
    """Add every row's s*g and s*c (and, for f >= 0, their products with t = q_if - qB[u] and
    s*c*t^2) to its entity u = index[i]: the sums block_factor_pass and block_linear_pass
    read. r is the ALS cache (see the module comment). With f < 0 only G and C are filled.
    """
    cdef Py_ssize_t n = index.shape[0], i, u, cur = -1, chunk = 0
    cdef double g, c, t, s, pt, qb = 0
    # the logistic loss's sigmoids, SIGMOID_CHUNK rows at a time (see sigmoid_many)
    cdef double p[SIGMOID_CHUNK]
    # Sums of the current run of rows of one entity, kept in registers: rows usually come
    # grouped by user, and adding into G[u] row after row would chain every add through
    # memory.
    cdef double sg = 0, sc = 0, sgq = 0, sa = 0, sa2 = 0
    with nogil:
        for i in range(n):
            u = index[i]
            if u != cur:
                cur = u
                sg = sc = sgq = sa = sa2 = 0
                if f >= 0:
                    qb = qB[u]
            s = sample_weight[i]
            if loss == SQUARE:
                g = s * r[i]
                c = s
            else:
                if i == chunk:
                    chunk = min(n, i + SIGMOID_CHUNK)
                    sigmoid_many(&r[i], p, chunk - i)
                pt = p[i % SIGMOID_CHUNK]
                g = s * (pt - y[i])
                c = s * logistic_curvature(pt)
            sg += g
            sc += c
            if f >= 0:
                t = q[i, f] - qb
                sgq += g * t
                sa += c * t
                sa2 += c * t * t
            if i + 1 == n or index[i + 1] != u:  # the run ends: add it to its entity
                G[u] += sg
                C[u] += sc
                if f >= 0:
                    GQ[u] += sgq
                    A[u] += sa
                    A2[u] += sa2


def block_push(const int64_t[::1] index, floating[::1] r, floating[:, ::1] q, Py_ssize_t f,
               const double[::1] qB_old, const double[::1] dq, const double[::1] own):
    """Bring the row caches up to date after a block pass: r_i += t_i dq[u] + own[u] and
    q_if += dq[u], t_i = q_if - qB_old[u] (f >= 0); or r_i += own[u] alone (f < 0)."""
    cdef Py_ssize_t n = index.shape[0], i, u
    cdef double t
    with nogil:
        if f < 0:
            for i in range(n):
                r[i] += <floating> own[index[i]]
        else:
            for i in range(n):
                u = index[i]
                t = q[i, f] - qB_old[u]
                r[i] += <floating> (t * dq[u] + own[u])
                q[i, f] += <floating> dq[u]


# A whole block sweep under the square loss, touching the rows twice (not 2(k + 1) times).
#
# For a row i of entity u, with t_i the rest of its factor sums (q_i minus the block's share
# qB_u), the block's coordinates change the residual by
#     dr_i = dL_u + sum_f t_if dqB_uf
# where dL_u (the change of the block's linear and own pairwise terms) and dqB_u depend on
# the entity only: t does not move while the block is swept. So every sum a coordinate's
# conditional reads stays a linear function of per-entity statistics taken once, before the
# sweep:  C = sum s, G = sum s r, A_f = sum s t_f, GQ_f = sum s r t_f, M_fg = sum s t_f t_g
# (the second moments make factor g's GQ_g current after factor f moved:
# GQ_g += A_g dL + M_fg dqB_f). One row pass fills them, the coordinates are drawn (or
# minimized) in the per-pass order of block_linear_pass / block_factor_pass from them
# alone, and one row pass pushes r_i += dL_u + t_i . dqB_u, q_i += dqB_u. Same conditionals,
# same order; only the rounding differs (the row caches are rounded once per sweep).
#
# The workspace holds three regions of per-entity records, each compact for the loop that
# visits the entities at random:
#   pass records (PASS_SIZE doubles: one cache line), what a column pass reads and updates;
#   push records [dL so far, qB at the start (k), its change (k)], what the final row pass
#   reads;
#   statistics [A_f (k), GQ_f (k), M (k x k, upper triangle filled)].
#
# Within a factor pass only qB_f and dL move per non-zero: every row of entity u has moved by
# dL + t_f (qB_f - qB_f at the pass's start), so G = G0 + A_f D + C dL and GQ_f = GQ0 + M_ff D
# + A_f dL (D = qB_f - its start) are formed where read, and fixed up once per entity after
# the pass. (The linear pass keeps G itself current: there D = 0.)
cdef enum:
    PASS_SIZE = 8   # C, G (G0: at the pass's start), this pass's A_f, GQ_f (GQ0), M_ff,
    P_C = 0         # qB_f now, dL, qB_f at the pass's start
    P_G = 1
    P_A = 2
    P_GQ = 3
    P_M = 4
    P_QB = 5
    P_DL = 6
    P_QB0 = 7


# Four rows' contributions to their entity's running sums acc = [C, G, A (k), GQ (k), M
# (k x k, the upper triangle filled)]; t holds the rows' rests one after the other (4 x k).
# Four at a time, every sum is loaded and stored once per four rows. In C with restrict: in
# Cython the compiler would have to assume that a store into acc may change t.
cdef enum:
    MOMENT_ROWS = 4

cdef extern from *:
    """
    static inline void fmrec_block_moments_any(double *restrict acc,
                                               const double *restrict t,
                                               const double *restrict s,
                                               const double *restrict ri, Py_ssize_t k) {
        double *A = acc + 2, *GQ = acc + 2 + k, *M = acc + 2 + 2 * k;
        const double *t0 = t, *t1 = t + k, *t2 = t + 2 * k, *t3 = t + 3 * k;
        Py_ssize_t f, g;
        acc[0] += (s[0] + s[1]) + (s[2] + s[3]);
        acc[1] += (s[0] * ri[0] + s[1] * ri[1]) + (s[2] * ri[2] + s[3] * ri[3]);
        for (f = 0; f < k; f++) {
            double x0 = s[0] * t0[f], x1 = s[1] * t1[f], x2 = s[2] * t2[f], x3 = s[3] * t3[f];
            A[f] += (x0 + x1) + (x2 + x3);
            GQ[f] += (x0 * ri[0] + x1 * ri[1]) + (x2 * ri[2] + x3 * ri[3]);
            for (g = f; g < k; g++)
                M[f * k + g] += (x0 * t0[g] + x1 * t1[g]) + (x2 * t2[g] + x3 * t3[g]);
        }
    }
    #if defined(__SSE2__) || defined(_M_X64)
    #include <emmintrin.h>
    /* k = 8 (the default) with SSE2 (every x86-64), two columns of M at a time: the same
       operations in the same order per element as above (so the same bits), about half
       the instructions of the compiler's mostly scalar code */
    static inline void fmrec_block_moments8(double *restrict acc, const double *restrict t,
                                            const double *restrict s,
                                            const double *restrict ri) {
        double *M = acc + 18;
        const __m128d s0 = _mm_set1_pd(s[0]), s1 = _mm_set1_pd(s[1]),
                      s2 = _mm_set1_pd(s[2]), s3 = _mm_set1_pd(s[3]);
        const __m128d r0 = _mm_set1_pd(ri[0]), r1 = _mm_set1_pd(ri[1]),
                      r2 = _mm_set1_pd(ri[2]), r3 = _mm_set1_pd(ri[3]);
        int f, g;
        acc[0] += (s[0] + s[1]) + (s[2] + s[3]);
        acc[1] += (s[0] * ri[0] + s[1] * ri[1]) + (s[2] * ri[2] + s[3] * ri[3]);
        for (g = 0; g < 8; g += 2) {
            __m128d x0 = _mm_mul_pd(s0, _mm_loadu_pd(t + g)),
                    x1 = _mm_mul_pd(s1, _mm_loadu_pd(t + 8 + g)),
                    x2 = _mm_mul_pd(s2, _mm_loadu_pd(t + 16 + g)),
                    x3 = _mm_mul_pd(s3, _mm_loadu_pd(t + 24 + g));
            _mm_storeu_pd(acc + 2 + g, _mm_add_pd(_mm_loadu_pd(acc + 2 + g),
                _mm_add_pd(_mm_add_pd(x0, x1), _mm_add_pd(x2, x3))));
            _mm_storeu_pd(acc + 10 + g, _mm_add_pd(_mm_loadu_pd(acc + 10 + g),
                _mm_add_pd(_mm_add_pd(_mm_mul_pd(x0, r0), _mm_mul_pd(x1, r1)),
                           _mm_add_pd(_mm_mul_pd(x2, r2), _mm_mul_pd(x3, r3)))));
        }
        for (f = 0; f < 8; f++) {
            const __m128d x0 = _mm_set1_pd(s[0] * t[f]), x1 = _mm_set1_pd(s[1] * t[8 + f]),
                          x2 = _mm_set1_pd(s[2] * t[16 + f]),
                          x3 = _mm_set1_pd(s[3] * t[24 + f]);
            for (g = f & ~1; g < 8; g += 2) {  /* from the diagonal's pair on */
                __m128d p = _mm_add_pd(
                    _mm_add_pd(_mm_mul_pd(x0, _mm_loadu_pd(t + g)),
                               _mm_mul_pd(x1, _mm_loadu_pd(t + 8 + g))),
                    _mm_add_pd(_mm_mul_pd(x2, _mm_loadu_pd(t + 16 + g)),
                               _mm_mul_pd(x3, _mm_loadu_pd(t + 24 + g))));
                _mm_storeu_pd(M + 8 * f + g, _mm_add_pd(_mm_loadu_pd(M + 8 * f + g), p));
            }
        }
    }
    #endif
    /* Four rows (pointers into q; padding rows may point anywhere finite, their s and ri
       being 0) of an entity whose block share is qb: their rests t = q - qb into t (4 x k),
       then their moments. For k = 8 the rests are written as the pairs the moments read:
       loads that span two scalar stores would wait for both (no store forwarding). */
    #if defined(__SSE2__) || defined(_M_X64)
    #define FMREC_PAIR_float(p) \
        _mm_cvtps_pd(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(p))))
    #define FMREC_PAIR_double(p) _mm_loadu_pd(p)
    #define FMREC_RESTS8(T)                                                                   \
        if (k == 8) {                                                                         \
            for (b = 0; b < 4; b++)                                                           \
                for (f = 0; f < 8; f += 2)                                                    \
                    _mm_storeu_pd(t + 8 * b + f, _mm_sub_pd(FMREC_PAIR_##T(rows[b] + f),      \
                                                            _mm_loadu_pd(qb + f)));           \
            fmrec_block_moments8(acc, t, s, ri);                                              \
            return;                                                                           \
        }
    #else
    #define FMREC_RESTS8(T)
    #endif
    #define FMREC_MOMENT_ROWS(T)                                                              \
    static inline void fmrec_moment_rows_##T(double *restrict acc, double *restrict t,       \
                                             const T **rows, const double *restrict qb,      \
                                             const double *restrict s,                       \
                                             const double *restrict ri, Py_ssize_t k) {      \
        Py_ssize_t b, f;                                                                      \
        FMREC_RESTS8(T)                                                                       \
        for (b = 0; b < 4; b++)                                                               \
            for (f = 0; f < k; f++)                                                           \
                t[b * k + f] = rows[b][f] - qb[f];                                            \
        fmrec_block_moments_any(acc, t, s, ri, k);                                            \
    }
    FMREC_MOMENT_ROWS(float)
    FMREC_MOMENT_ROWS(double)
    """
    void moment_rows_f "fmrec_moment_rows_float"(double* acc, double* t, const float** rows,
                                                 const double* qb, const double* s,
                                                 const double* ri, Py_ssize_t k) noexcept nogil
    void moment_rows_d "fmrec_moment_rows_double"(double* acc, double* t,
                                                  const double** rows, const double* qb,
                                                  const double* s, const double* ri,
                                                  Py_ssize_t k) noexcept nogil


# The final row pass for one row: q_i += dqB_u and dr_i = dL_u + t_i . dqB_u returned, from
# the entity's push record pu = [dL, qB at the start (k), dqB (k)]; four partial sums (a
# chain of k adds otherwise); k = 8 in SSE2 (pairs).
cdef extern from *:
    """
    #define FMREC_PUSH_ROW(T)                                                                  \
    static inline double fmrec_push_row_any_##T(T *restrict q, const double *restrict pu,    \
                                                Py_ssize_t k) {                              \
        const double *qb = pu + 1, *dq = pu + 1 + k;                                          \
        double d0 = 0, d1 = 0, d2 = 0, d3 = 0;                                                \
        Py_ssize_t f = 0;                                                                     \
        for (; f + 4 <= k; f += 4) {                                                          \
            d0 += (q[f] - qb[f]) * dq[f];                                                     \
            d1 += (q[f + 1] - qb[f + 1]) * dq[f + 1];                                         \
            d2 += (q[f + 2] - qb[f + 2]) * dq[f + 2];                                         \
            d3 += (q[f + 3] - qb[f + 3]) * dq[f + 3];                                         \
        }                                                                                     \
        for (; f < k; f++) d0 += (q[f] - qb[f]) * dq[f];                                      \
        for (f = 0; f < k; f++) q[f] += (T) dq[f];                                            \
        return pu[0] + ((d0 + d1) + (d2 + d3));                                               \
    }                                                                                         \
    static inline double fmrec_push_row_##T(T *restrict q, const double *restrict pu,        \
                                            Py_ssize_t k) {                                  \
        FMREC_PUSH8_##T                                                                       \
        return fmrec_push_row_any_##T(q, pu, k);                                              \
    }
    #if defined(__SSE2__) || defined(_M_X64)
    #include <emmintrin.h>
    /* k = 8 with SSE2: t_i . dqB in pairs, q_i += dqB four floats (two doubles) at a time */
    static inline double fmrec_push_dot8(__m128d t01, __m128d t23, __m128d t45, __m128d t67,
                                         const double *pu) {
        const double *dq = pu + 9;
        __m128d lo = _mm_add_pd(_mm_mul_pd(t01, _mm_loadu_pd(dq)),
                                _mm_mul_pd(t45, _mm_loadu_pd(dq + 4)));
        __m128d hi = _mm_add_pd(_mm_mul_pd(t23, _mm_loadu_pd(dq + 2)),
                                _mm_mul_pd(t67, _mm_loadu_pd(dq + 6)));
        lo = _mm_add_pd(lo, hi);
        return pu[0] + _mm_cvtsd_f64(_mm_add_sd(lo, _mm_unpackhi_pd(lo, lo)));
    }
    #define FMREC_PUSH8_float                                                                  \
        if (k == 8) {                                                                         \
            const double *qb = pu + 1, *dq = pu + 9;                                          \
            __m128 q03 = _mm_loadu_ps(q), q47 = _mm_loadu_ps(q + 4);                          \
            double dr = fmrec_push_dot8(                                                      \
                _mm_sub_pd(_mm_cvtps_pd(q03), _mm_loadu_pd(qb)),                              \
                _mm_sub_pd(_mm_cvtps_pd(_mm_movehl_ps(q03, q03)), _mm_loadu_pd(qb + 2)),      \
                _mm_sub_pd(_mm_cvtps_pd(q47), _mm_loadu_pd(qb + 4)),                          \
                _mm_sub_pd(_mm_cvtps_pd(_mm_movehl_ps(q47, q47)), _mm_loadu_pd(qb + 6)), pu); \
            _mm_storeu_ps(q, _mm_add_ps(q03, _mm_movelh_ps(_mm_cvtpd_ps(_mm_loadu_pd(dq)),    \
                                                           _mm_cvtpd_ps(_mm_loadu_pd(dq + 2))))); \
            _mm_storeu_ps(q + 4, _mm_add_ps(q47,                                              \
                _mm_movelh_ps(_mm_cvtpd_ps(_mm_loadu_pd(dq + 4)),                             \
                              _mm_cvtpd_ps(_mm_loadu_pd(dq + 6)))));                          \
            return dr;                                                                        \
        }
    #define FMREC_PUSH8_double                                                                 \
        if (k == 8) {                                                                         \
            const double *qb = pu + 1, *dq = pu + 9;                                          \
            __m128d q0 = _mm_loadu_pd(q), q1 = _mm_loadu_pd(q + 2),                           \
                    q2 = _mm_loadu_pd(q + 4), q3 = _mm_loadu_pd(q + 6);                       \
            double dr = fmrec_push_dot8(_mm_sub_pd(q0, _mm_loadu_pd(qb)),                     \
                                        _mm_sub_pd(q1, _mm_loadu_pd(qb + 2)),                 \
                                        _mm_sub_pd(q2, _mm_loadu_pd(qb + 4)),                 \
                                        _mm_sub_pd(q3, _mm_loadu_pd(qb + 6)), pu);            \
            _mm_storeu_pd(q, _mm_add_pd(q0, _mm_loadu_pd(dq)));                               \
            _mm_storeu_pd(q + 2, _mm_add_pd(q1, _mm_loadu_pd(dq + 2)));                       \
            _mm_storeu_pd(q + 4, _mm_add_pd(q2, _mm_loadu_pd(dq + 4)));                       \
            _mm_storeu_pd(q + 6, _mm_add_pd(q3, _mm_loadu_pd(dq + 6)));                       \
            return dr;                                                                        \
        }
    #else
    #define FMREC_PUSH8_float
    #define FMREC_PUSH8_double
    #endif
    FMREC_PUSH_ROW(float)
    FMREC_PUSH_ROW(double)
    """
    double push_row_f "fmrec_push_row_float"(float* q, const double* pu,
                                             Py_ssize_t k) noexcept nogil
    double push_row_d "fmrec_push_row_double"(double* q, const double* pu,
                                              Py_ssize_t k) noexcept nogil


# A factor pass's sums over one column, num += sum x (GQ + a G) and den += sum x^2 (M + 2 a A
# + a^2 C) with a = qB - v x, G and GQ formed from the pass record (see PASS_SIZE), over the
# records of its entities (idx, m of them, values x): two lanes (even and odd positions; num
# and den arrive in lane 0 and leave as lane 0 + lane 1), in SSE2 one record pair per
# instruction, the same bits as the scalar loop.
cdef extern from *:
    """
    #define FMREC_PASS_TERMS(r, x, v, n, d) {                                                 \
        double D_ = r[5] - r[7], a_ = r[5] - v * x;                                           \
        double G_ = (r[1] + r[2] * D_) + r[0] * r[6];                                         \
        double GQ_ = (r[3] + r[4] * D_) + r[2] * r[6];                                        \
        n = n + x * (GQ_ + a_ * G_);                                                          \
        d = d + x * x * ((r[4] + 2 * a_ * r[2]) + a_ * a_ * r[0]);                            \
    }
    #define FMREC_PASS_SUMS(I, T)                                                             \
    static inline void fmrec_pass_sums_##I##_##T(const double *restrict pas,                 \
                                                 const I *restrict idx,                      \
                                                 const T *restrict x, Py_ssize_t m,          \
                                                 double v, double *num, double *den) {       \
        Py_ssize_t p = 0;                                                                     \
        double n0 = *num, d0 = *den, n1 = 0, d1 = 0;                                          \
        FMREC_PASS_SUMS2_##T                                                                  \
        for (; p + 1 < m; p += 2) {                                                           \
            const double *r0 = pas + (Py_ssize_t) idx[p] * 8;                                 \
            const double *r1 = pas + (Py_ssize_t) idx[p + 1] * 8;                             \
            double x0 = x[p], x1 = x[p + 1];                                                  \
            FMREC_PASS_TERMS(r0, x0, v, n0, d0)                                               \
            FMREC_PASS_TERMS(r1, x1, v, n1, d1)                                               \
        }                                                                                     \
        if (p < m) {                                                                          \
            const double *r0 = pas + (Py_ssize_t) idx[p] * 8;                                 \
            double x0 = x[p];                                                                 \
            FMREC_PASS_TERMS(r0, x0, v, n0, d0)                                               \
        }                                                                                     \
        *num = n0 + n1;                                                                       \
        *den = d0 + d1;                                                                       \
    }
    #if defined(__SSE2__) || defined(_M_X64)
    #include <emmintrin.h>
    #define FMREC_XPAIR_float(p) \
        _mm_cvtps_pd(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(p))))
    #define FMREC_XPAIR_double(p) _mm_loadu_pd(p)
    /* the record fields come in pairs (C, G0), (A, GQ0), (M, qB), (dL, qB0): two loads and
       two unpacks give each field of both entities */
    #define FMREC_PASS_SUMS2(T)                                                               \
        {                                                                                     \
            const __m128d vv = _mm_set1_pd(v), two = _mm_set1_pd(2.0);                        \
            __m128d nv = _mm_set_pd(0.0, n0), dv = _mm_set_pd(0.0, d0);                       \
            for (; p + 1 < m; p += 2) {                                                       \
                const double *r0 = pas + (Py_ssize_t) idx[p] * 8;                             \
                const double *r1 = pas + (Py_ssize_t) idx[p + 1] * 8;                         \
                __m128d u0 = _mm_loadu_pd(r0), u1 = _mm_loadu_pd(r1);                         \
                __m128d C = _mm_unpacklo_pd(u0, u1), G0 = _mm_unpackhi_pd(u0, u1);            \
                __m128d A, GQ0, M, QB, DL, QB0, D, G, GQ, xv, a;                              \
                u0 = _mm_loadu_pd(r0 + 2); u1 = _mm_loadu_pd(r1 + 2);                         \
                A = _mm_unpacklo_pd(u0, u1); GQ0 = _mm_unpackhi_pd(u0, u1);                   \
                u0 = _mm_loadu_pd(r0 + 4); u1 = _mm_loadu_pd(r1 + 4);                         \
                M = _mm_unpacklo_pd(u0, u1); QB = _mm_unpackhi_pd(u0, u1);                    \
                u0 = _mm_loadu_pd(r0 + 6); u1 = _mm_loadu_pd(r1 + 6);                         \
                DL = _mm_unpacklo_pd(u0, u1); QB0 = _mm_unpackhi_pd(u0, u1);                  \
                xv = FMREC_XPAIR_##T(x + p);                                                  \
                D = _mm_sub_pd(QB, QB0);                                                      \
                a = _mm_sub_pd(QB, _mm_mul_pd(vv, xv));                                       \
                G = _mm_add_pd(_mm_add_pd(G0, _mm_mul_pd(A, D)), _mm_mul_pd(C, DL));          \
                GQ = _mm_add_pd(_mm_add_pd(GQ0, _mm_mul_pd(M, D)), _mm_mul_pd(A, DL));        \
                nv = _mm_add_pd(nv, _mm_mul_pd(xv, _mm_add_pd(GQ, _mm_mul_pd(a, G))));        \
                dv = _mm_add_pd(dv, _mm_mul_pd(_mm_mul_pd(xv, xv),                            \
                    _mm_add_pd(_mm_add_pd(M, _mm_mul_pd(_mm_mul_pd(two, a), A)),              \
                               _mm_mul_pd(_mm_mul_pd(a, a), C))));                            \
            }                                                                                 \
            n0 = _mm_cvtsd_f64(nv); n1 = _mm_cvtsd_f64(_mm_unpackhi_pd(nv, nv));              \
            d0 = _mm_cvtsd_f64(dv); d1 = _mm_cvtsd_f64(_mm_unpackhi_pd(dv, dv));              \
        }
    #define FMREC_PASS_SUMS2_float FMREC_PASS_SUMS2(float)
    #define FMREC_PASS_SUMS2_double FMREC_PASS_SUMS2(double)
    #else
    #define FMREC_PASS_SUMS2_float
    #define FMREC_PASS_SUMS2_double
    #endif
    FMREC_PASS_SUMS(int32_t, float)
    FMREC_PASS_SUMS(int32_t, double)
    FMREC_PASS_SUMS(int64_t, float)
    FMREC_PASS_SUMS(int64_t, double)
    """
    void pass_sums_if "fmrec_pass_sums_int32_t_float"(
        const double* pas, const int32_t* idx, const float* x, Py_ssize_t m, double v,
        double* num, double* den) noexcept nogil
    void pass_sums_id "fmrec_pass_sums_int32_t_double"(
        const double* pas, const int32_t* idx, const double* x, Py_ssize_t m, double v,
        double* num, double* den) noexcept nogil
    void pass_sums_lf "fmrec_pass_sums_int64_t_float"(
        const double* pas, const int64_t* idx, const float* x, Py_ssize_t m, double v,
        double* num, double* den) noexcept nogil
    void pass_sums_ld "fmrec_pass_sums_int64_t_double"(
        const double* pas, const int64_t* idx, const double* x, Py_ssize_t m, double v,
        double* num, double* den) noexcept nogil


# y += x v over k doubles (restrict, k = 8 as a constant: the compiler pairs them).
cdef extern from *:
    """
    static inline void fmrec_axpy_any(double *restrict y, const double *restrict v, double x,
                                      Py_ssize_t k) {
        Py_ssize_t f;
        for (f = 0; f < k; f++) y[f] += x * v[f];
    }
    static inline void fmrec_axpy(double *restrict y, const double *restrict v, double x,
                                  Py_ssize_t k) {
        if (k == 8) fmrec_axpy_any(y, v, x, 8);
        else fmrec_axpy_any(y, v, x, k);
    }
    """
    void axpy "fmrec_axpy"(double* y, const double* v, double x, Py_ssize_t k) noexcept nogil


def block_record_size(Py_ssize_t k):
    """Doubles per entity in ``block_sweep``'s workspace."""
    return PASS_SIZE + (1 + 2 * k) + (2 * k + k * k)


def block_workspace_size(Py_ssize_t n_entities, Py_ssize_t k):
    """Length of ``block_sweep``'s workspace (float64): the records, plus room to start
    them on a cache line."""
    return n_entities * block_record_size(k) + PASS_SIZE


def block_sweep(const index_t[::1] indptr, const index_t[::1] indices,
                const floating[::1] data, const int64_t[::1] index,
                const int64_t[::1] order, const int64_t[::1] starts, floating[::1] r,
                floating[:, ::1] q, const floating[::1] sample_weight, floating[::1] w,
                floating[:, ::1] V, bint fit_linear, double[::1] work,
                const floating[::1] reg_linear=None, const floating[::1] reg_factors=None,
                Py_ssize_t col0=0, const double[::1] normals=None,
                const int32_t[::1] groups=None, const double[:, ::1] prior=None,
                double alpha=1.0):
    """Sweep one relation block under the square loss: its w_j in column order, then v_j1
    for every j, then v_j2, ..., each by its exact minimizer (ALS) or Gibbs draw; returns
    sum_i s_i r_i^2 after the sweep.

    ``indptr``/``indices``/``data``: the block in CSC (rows are entities); ``index[i]``: row
    i's entity; ``order``: the rows sorted by entity, entity u's being
    ``order[starts[u]:starts[u + 1]]``; ``r``, ``q``: the ALS caches (residual, factor sums
    with the block's share), brought up to date; ``w``, ``V``: the block's columns of the
    parameters (views); ``work``: float64 scratch of ``block_workspace_size(n_entities, k)``.
    ALS:
    ``reg_linear``, ``reg_factors`` (the block's columns). Gibbs sampling (see the ``Gibbs``
    struct; all three given): ``normals``, ``groups`` and ``prior`` as for ``als_sweep``,
    over all columns, the block's first column being column ``col0``; noise precision
    ``alpha``.
    """
    cdef Py_ssize_t n = index.shape[0], d = indptr.shape[0] - 1, k = V.shape[1]
    cdef Py_ssize_t n_e = starts.shape[0] - 1
    cdef Py_ssize_t PU = 1 + 2 * k, PS = 2 * k + k * k, NA = 2 + PS
    cdef Py_ssize_t i, j, p, u, f, g, m, b
    cdef double s, ri, x, a, v, num, den, lam, mu, delta, dx, dq, dl, dr, loss_sum = 0
    cdef double sb[MOMENT_ROWS]
    cdef double rb[MOMENT_ROWS]
    cdef const floating* rows[MOMENT_ROWS]
    cdef double* pas
    cdef double* push
    cdef double* stat
    cdef double* pr
    cdef double* pu
    cdef double* st
    cdef double* acc
    cdef double* t
    cdef const floating* qi
    cdef floating* qw
    cdef const double* pri = NULL
    cdef const double* z = NULL
    cdef bint gibbs = normals is not None and normals.shape[0] > 0
    if starts.shape[0] < 1 or work.shape[0] < block_workspace_size(starts.shape[0] - 1, k):
        raise ValueError("work must hold block_workspace_size(n_entities, k) values")
    if w.shape[0] != d or V.shape[0] != d or r.shape[0] != n or q.shape[0] != n:
        raise ValueError("w, V must hold the block's columns and r, q one row per sample")
    if order.shape[0] != n or starts[n_e] != n:
        raise ValueError("order and starts must list every row by entity")
    if gibbs:
        if normals.shape[0] < 1 + (col0 + d) * (k + 1) or groups is None \
                or groups.shape[0] < col0 + d or prior is None or prior.shape[1] != 2 + 2 * k:
            raise ValueError("normals, groups and prior must cover the block's columns")
        for j in range(col0, col0 + d):
            if groups[j] < 0 or groups[j] >= prior.shape[0]:
                raise ValueError(f"groups[{j}] = {groups[j]} has no row in prior")
    elif reg_linear is None or reg_factors is None or reg_linear.shape[0] != d \
            or reg_factors.shape[0] != d:
        raise ValueError("reg_linear and reg_factors must hold one value per block column")
    if n_e == 0 and indptr[d] > 0:
        raise ValueError("work must hold one record per entity")
    # t: four rows' rests (4 x k); acc: one entity's running sums [C, G, statistics]
    t = <double*> malloc((MOMENT_ROWS * k + NA) * sizeof(double))
    if t == NULL:
        raise MemoryError("block sweep scratch")
    acc = t + MOMENT_ROWS * k
    # the pass records start on a cache line (one line each)
    pas = &work[0]
    pas = pas + ((64 - (<size_t> pas) % 64) % 64) // sizeof(double)
    push = pas + n_e * PASS_SIZE
    stat = push + n_e * PU
    try:
        with nogil:
            if n_e > 0:
                memset(pas, 0, n_e * (PASS_SIZE + PU) * sizeof(double))
            # the block's share of every entity's factor sums
            for j in range(d):
                for f in range(k):
                    t[f] = V[j, f]
                for p in range(indptr[j], indptr[j + 1]):
                    axpy(push + indices[p] * PU + 1, t, data[p], k)
            # the statistics, entity by entity (their sums stay in L1, the rows are gathered)
            for u in range(n_e):
                pu = push + u * PU
                for m in range(NA):
                    acc[m] = 0
                for p in range(starts[u], starts[u + 1], 4):  # MOMENT_ROWS
                    for b in range(MOMENT_ROWS):
                        if p + b < starts[u + 1]:
                            if p + b + AHEAD < n:  # the rows come in entity order, at random
                                i = order[p + b + AHEAD]
                                prefetch(&q[i, 0])
                                prefetch(&r[i])
                            i = order[p + b]
                            sb[b] = sample_weight[i]
                            rb[b] = r[i]
                            rows[b] = &q[i, 0]
                        else:  # past the entity's rows: adds nothing
                            sb[b] = 0
                            rb[b] = 0
                            rows[b] = rows[0]
                    if floating is float:
                        moment_rows_f(acc, t, rows, pu + 1, sb, rb, k)
                    else:
                        moment_rows_d(acc, t, rows, pu + 1, sb, rb, k)
                pr = pas + u * PASS_SIZE
                pr[P_C] = acc[0]
                pr[P_G] = acc[1]
                memcpy(stat + u * PS, acc + 2, PS * sizeof(double))

            if fit_linear:
                for j in range(d):
                    if gibbs:
                        pri = &prior[groups[col0 + j], 0]
                        lam = pri[0]
                        mu = pri[1]
                        z = &normals[1 + (col0 + j) * (k + 1)]
                    else:
                        lam = reg_linear[j]
                    if indptr[j] == indptr[j + 1]:
                        if gibbs:
                            w[j] = <floating> (mu + z[0] / sqrt(lam))
                        elif lam > 0:
                            w[j] = 0
                        continue
                    if gibbs:
                        num = 0
                        den = 0
                    else:
                        num = lam * w[j]
                        den = lam
                    for p in range(indptr[j], indptr[j + 1]):
                        pr = pas + indices[p] * PASS_SIZE
                        x = data[p]
                        num = num + x * pr[P_G]
                        den = den + x * x * pr[P_C]
                    if gibbs:
                        num = alpha * num + lam * (w[j] - mu)
                        den = alpha * den + lam
                    if den > 0:
                        v = w[j]
                        delta = -num / den
                        if gibbs:
                            delta = delta + z[0] / sqrt(den)
                        w[j] = <floating> (v + delta)
                        delta = <double> w[j] - v    # the step actually stored
                        for p in range(indptr[j], indptr[j + 1]):
                            pr = pas + indices[p] * PASS_SIZE
                            dx = delta * data[p]
                            pr[P_G] += dx * pr[P_C]
                            pr[P_DL] += dx
                for u in range(n_e):
                    st = stat + u * PS
                    pr = pas + u * PASS_SIZE
                    dl = pr[P_DL]
                    for g in range(k):
                        st[k + g] += st[g] * dl
                    push[u * PU] += dl
                    pr[P_DL] = 0

            for f in range(k):
                for u in range(n_e):
                    st = stat + u * PS
                    pr = pas + u * PASS_SIZE
                    pr[P_A] = st[f]
                    pr[P_GQ] = st[k + f]
                    pr[P_M] = st[2 * k + f * k + f]
                    pr[P_QB] = push[u * PU + 1 + f]
                    pr[P_QB0] = pr[P_QB]
                    pr[P_DL] = 0
                for j in range(d):
                    if gibbs:
                        pri = &prior[groups[col0 + j], 0]
                        lam = pri[2 + f]
                        mu = pri[2 + k + f]
                        z = &normals[2 + (col0 + j) * (k + 1) + f]
                    else:
                        lam = reg_factors[j]
                    if indptr[j] == indptr[j + 1]:
                        if gibbs:
                            V[j, f] = <floating> (mu + z[0] / sqrt(lam))
                        elif lam > 0:
                            V[j, f] = 0
                        continue
                    v = V[j, f]
                    if gibbs:
                        num = 0
                        den = 0
                    else:
                        num = lam * v
                        den = lam
                    p = indptr[j]
                    m = indptr[j + 1] - p
                    if index_t is int32_t:
                        if floating is float:
                            pass_sums_if(pas, &indices[p], &data[p], m, v, &num, &den)
                        else:
                            pass_sums_id(pas, &indices[p], &data[p], m, v, &num, &den)
                    else:
                        if floating is float:
                            pass_sums_lf(pas, &indices[p], &data[p], m, v, &num, &den)
                        else:
                            pass_sums_ld(pas, &indices[p], &data[p], m, v, &num, &den)
                    if gibbs:
                        num = alpha * num + lam * (v - mu)
                        den = alpha * den + lam
                    if den > 0:
                        delta = -num / den
                        if gibbs:
                            delta = delta + z[0] / sqrt(den)
                        V[j, f] = <floating> (v + delta)
                        delta = <double> V[j, f] - v    # the step actually stored
                        # each row of u moves by dx (t_f + a): qB_f and dL follow
                        for p in range(indptr[j], indptr[j + 1]):
                            pr = pas + indices[p] * PASS_SIZE
                            x = data[p]
                            dx = delta * x
                            pr[P_DL] += dx * (pr[P_QB] - v * x)
                            pr[P_QB] += dx
                # G, and the later factors' GQ_g, after this pass's change (M_fg, g > f: row f)
                for u in range(n_e):
                    st = stat + u * PS
                    pr = pas + u * PASS_SIZE
                    pu = push + u * PU
                    dq = pr[P_QB] - pu[1 + f]
                    pu[1 + k + f] = dq
                    dl = pr[P_DL]
                    pr[P_G] = (pr[P_G] + pr[P_A] * dq) + pr[P_C] * dl
                    for g in range(f + 1, k):
                        st[k + g] += st[g] * dl + st[2 * k + f * k + g] * dq
                    pu[0] += dl

            # push the entities' changes to their rows
            for i in range(n):
                pu = push + index[i] * PU
                if floating is float:
                    dr = push_row_f(&q[i, 0], pu, k)
                else:
                    dr = push_row_d(&q[i, 0], pu, k)
                ri = r[i] + <floating> dr
                r[i] = <floating> ri
                loss_sum = loss_sum + sample_weight[i] * ri * ri
    finally:
        free(t)
    return loss_sum


def block_add_to_caches(const index_t[::1] indptr, const index_t[::1] indices,
                        const floating[::1] data, const int64_t[::1] index,
                        const floating[::1] w, const floating[:, ::1] V, floating[::1] r,
                        floating[:, ::1] q, double[::1] work, Py_ssize_t n_entities):
    """Add one relation block's share of every row's output to r and of its factor sums to q
    (the caches of the other parts already in r and q).

    ``indptr``/``indices``/``data``: the block in CSC (rows are entities); ``w``, ``V``: the
    block's columns; ``work``: float64 scratch of n_entities * (k + 1) values or more. Row i of entity u gets
    r_i += lin_u + q_i . qB_u + own_u (q_i before the update) and q_i += qB_u, where lin_u,
    qB_u and the block's own pairwise term own_u = ½ Σ_f (qB_uf² − Σ_j v_jf² x_uj²) are
    computed once per entity.
    """
    cdef Py_ssize_t n = index.shape[0], d = indptr.shape[0] - 1, k = V.shape[1]
    cdef Py_ssize_t n_e = n_entities, i, j, p, u, f
    cdef double x, xv, s2, dr
    cdef double* rec
    cdef floating* qi
    if work.shape[0] < n_e * (k + 1) or w.shape[0] != d or V.shape[0] != d:
        raise ValueError("work must hold n_entities * (k + 1) values and w, V the block's "
                         "columns")
    if r.shape[0] != n or q.shape[0] != n:
        raise ValueError("r and q must hold one row per sample")
    if n_e == 0:
        return
    with nogil:
        # per entity: [own term, qB_1..k]; the own term first collects lin - ½ Σ v² x²
        for u in range(n_e * (k + 1)):
            work[u] = 0
        for j in range(d):
            for p in range(indptr[j], indptr[j + 1]):
                rec = &work[indices[p] * (k + 1)]
                x = data[p]
                s2 = 0
                for f in range(k):
                    xv = x * V[j, f]
                    rec[1 + f] += xv
                    s2 = s2 + xv * xv
                rec[0] += x * w[j] - 0.5 * s2
        for u in range(n_e):
            rec = &work[u * (k + 1)]
            s2 = 0
            for f in range(k):
                s2 = s2 + rec[1 + f] * rec[1 + f]
            rec[0] += 0.5 * s2
        for i in range(n):
            rec = &work[index[i] * (k + 1)]
            qi = &q[i, 0]
            dr = rec[0]
            for f in range(k):
                dr = dr + qi[f] * rec[1 + f]
                qi[f] += <floating> rec[1 + f]
            r[i] += <floating> dr
