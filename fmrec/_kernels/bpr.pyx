# BPR (Bayesian Personalized Ranking) epochs of an FM over (user row, item row) pairs, and the
# negative sampler they use. Hogwild over the positives when n_threads > 1.
#
# A triple (u, i, j) compares the FM outputs of the rows z = U[u] + I[i] and z' = U[u] + I[j].
# Its three sparse rows are merged by column into (col, a, b, c) = (U[u]_col, I[i]_col,
# I[j]_col), so a column shared by several of them (an item attribute both items have, or a
# user column that also appears in an item row) is handled exactly, and stepped once.
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport sqrt, isfinite, exp, fabs, log1p
from libc.stdlib cimport malloc, free, realloc
from libc.string cimport memcpy, memset
from libc.stdint cimport uint64_t, int64_t, int32_t

import numpy as np

from fmrec._kernels._common cimport floating, index_t, prefetch

# How far ahead (in positives of the epoch's order) memory is requested: first the positive's
# user and item, then their rows' offsets, then the rows' columns, then the rows of V (and of
# its accumulator) they touch. A large model's rows are cache misses otherwise.
cdef enum:
    AHEAD_PAIR = 16
    AHEAD_PTR = 12
    AHEAD_IDX = 8
    AHEAD_PARAMS = 4
    SEEN_LINES = 8

# A thread adds what it changed in its copies of the hot columns to the shared parameters
# after this many of its positives (see Replica). Merging every 128, 512 or 2048 positives
# ran two threads equally fast on the demo's feature ranker; the fewer, the sooner the other
# threads see the steps.
cdef enum:
    HOT_MERGE_EVERY = 512

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


# Reductions over the k factors and the one-hot step's row update, in C.
#
# A plain `for f: s += a[f] * b[f]` runs scalar: without -ffast-math the compiler may not
# reorder a floating-point sum. The reductions keep 8 independent partial sums in the
# parameters' own type (lane l sums the terms of the factors f with f % 8 == l), combined in
# double as ((0+4) + (1+5)) + ((2+6) + (3+7)), so they vectorise and give the same bits
# wherever they are called: the one-hot fast path relies on that to match the general path.
# (float lanes, not double ones: widening every product cost more instructions than the rest
# of a candidate's scoring; 8 terms to a lane keep the sum within float rounding.)
#
# The update of v_u, v_i, v_j (and of their AdaGrad sums; acc_u NULL for plain SGD) has six
# row pointers, too many for the compiler's alias checks, so it is written on vectors, as are
# the general path's y += a x and its step of one column's factors (the compiler left those
# on 4-lane SSE2 behind alias checks). The factors past the last whole vector run one by one.
# Every lane does exactly the scalar operations of the general path, in its order.
#
# With GCC/Clang on x86-64 each helper exists twice: on 16-byte vectors (SSE2, the portable
# baseline) and on 32-byte ones (AVX, picked at run time by _common.pxd's fmrec_use_avx when
# the CPU has it; FMREC_NO_AVX=1 in the environment turns it off). AVX halves the vector
# instructions; the two give the same bits, since neither contracts to FMA and the lanes are
# the same.
cdef extern from *:
    """
    #include <string.h>
    #include <stdlib.h>
    #include <math.h>

    #define FMREC_TERM_DOT(f) (a[f] * b[f])
    #define FMREC_TERM_DOT_DIFF(f) (a[f] * (b[f] - c[f]))
    /* The factors past the last multiple of 8 into lanes t, then the fixed combination. */
    #define FMREC_COMBINE8(t)                                                              \
        ((((double)t[0] + (double)t[4]) + ((double)t[1] + (double)t[5]))                   \
         + (((double)t[2] + (double)t[6]) + ((double)t[3] + (double)t[7])))
    #define FMREC_REDUCE_END(T, TERM)                                                      \
        for (l = 0; f < k; f++, l++) t[l] += TERM(f);                                      \
        return FMREC_COMBINE8(t);
    /* One of fmrec_dot4's sums: lanes S, then a's factors past f times B's, combined. */
    #define FMREC_DOT_END(T, S, B)                                                         \
        ({ T t_[8]; int l_; Py_ssize_t e_ = f;                                            \
           memcpy(t_, S, sizeof t_);                                                       \
           for (l_ = 0; e_ < k; e_++, l_++) t_[l_] += a[e_] * B[e_];                       \
           FMREC_COMBINE8(t_); })

    /* The update's arithmetic, on scalars or vectors alike. */
    #define FMREC_OH_BODY(VT)                                                              \
        VT qi = xi + xu, qj = xj + xu;                                                     \
        VT gu = gf * ((qi - xu) - (qj - xu)) + rv * xu;                                    \
        VT gi = gf * (qi - xi) + rv * xi;                                                  \
        VT gj = gf * (-(qj - xj)) + rv * xj;

    /* One factor f of each update on scalars: the plain path's loop bodies, and the vector
       paths' last factors past a whole vector (the same operations as a lane). */
    #define FMREC_OH_ELEM(T, SQRT)                                                          \
        {                                                                                  \
            T xu = vu[f], xi = vi[f], xj = vj[f];                                          \
            FMREC_OH_BODY(T)                                                               \
            if (acc_u != NULL) {                                                           \
                acc_u[f] += gu * gu; acc_i[f] += gi * gi; acc_j[f] += gj * gj;             \
                vu[f] = xu - lr * gu / SQRT(acc_u[f] + eps);                               \
                vi[f] = xi - lr * gi / SQRT(acc_i[f] + eps);                               \
                vj[f] = xj - lr * gj / SQRT(acc_j[f] + eps);                               \
            } else {                                                                       \
                vu[f] = xu - lr * gu; vi[f] = xi - lr * gi; vj[f] = xj - lr * gj;          \
            }                                                                              \
        }
    #define FMREC_AXPY_ELEM(T) y[f] = y[f] + a * x[f];
    /* fmrec_axpy_norm's factors past the last multiple of 8, then its sum of squares. */
    #define FMREC_AXPY_NORM_END(T)                                                         \
        for (l = 0; f < k; f++, l++) {                                                     \
            t[l] += x[f] * x[f];                                                           \
            FMREC_AXPY_ELEM(T)                                                             \
        }                                                                                  \
        return FMREC_COMBINE8(t);
    #define FMREC_COL_ELEM(T, SQRT)                                                         \
        {                                                                                  \
            T xs = v[f];                                                                   \
            T g = gf * (ab * (qi[f] - ab * xs) - ac * (qj[f] - ac * xs)) + rv * xs;       \
            if (acc != NULL) {                                                             \
                acc[f] = acc[f] + g * g;                                                   \
                v[f] = xs - lr * g / SQRT(acc[f] + eps);                                   \
            } else {                                                                       \
                v[f] = xs - lr * g;                                                        \
            }                                                                              \
        }

    #ifdef FMREC_SIMD
    #define FMREC_LANES(VT, T) ((int)(sizeof(VT) / sizeof(T)))

    /* --- reductions: SUF names the variant, ATTR its target, VT holds n lanes of T --- */
    #define FMREC_REDUCE_DEFS(T, SUF, ATTR, VT, SQRT)                                      \
    ATTR static double fmrec_dot_##T##SUF(const T *a, const T *b, Py_ssize_t k) {         \
        VT acc[8 / FMREC_LANES(VT, T)] = {{0}}; T t[8]; Py_ssize_t f = 0;                  \
        int l, h, n = FMREC_LANES(VT, T);                                                  \
        for (; f + 8 <= k; f += 8)                                                         \
            for (h = 0; h < 8; h += n)                                                     \
                acc[h / n] += FMREC_LD(VT, a + f + h) * FMREC_LD(VT, b + f + h);           \
        memcpy(t, acc, sizeof t);                                                          \
        FMREC_REDUCE_END(T, FMREC_TERM_DOT)                                                \
    }                                                                                      \
    ATTR static double fmrec_dot_diff_##T##SUF(const T *a, const T *b, const T *c,        \
                                               Py_ssize_t k) {                             \
        VT acc[8 / FMREC_LANES(VT, T)] = {{0}}; T t[8]; Py_ssize_t f = 0;                  \
        int l, h, n = FMREC_LANES(VT, T);                                                  \
        for (; f + 8 <= k; f += 8)                                                         \
            for (h = 0; h < 8; h += n)                                                     \
                acc[h / n] += FMREC_LD(VT, a + f + h)                                      \
                              * (FMREC_LD(VT, b + f + h) - FMREC_LD(VT, c + f + h));       \
        memcpy(t, acc, sizeof t);                                                          \
        FMREC_REDUCE_END(T, FMREC_TERM_DOT_DIFF)                                           \
    }                                                                                      \
    /* fmrec_dot of a with each of b0..b3, in one pass over a: each sum in its own lanes,   \
       with fmrec_dot's operations in fmrec_dot's order (the same bits). */                \
    ATTR static void fmrec_dot4_##T##SUF(const T *a, const T *b0, const T *b1,            \
                                         const T *b2, const T *b3, Py_ssize_t k,           \
                                         double *out) {                                    \
        VT s0[8 / FMREC_LANES(VT, T)] = {{0}}, s1[8 / FMREC_LANES(VT, T)] = {{0}};         \
        VT s2[8 / FMREC_LANES(VT, T)] = {{0}}, s3[8 / FMREC_LANES(VT, T)] = {{0}};         \
        Py_ssize_t f = 0; int h, n = FMREC_LANES(VT, T);                                   \
        for (; f + 8 <= k; f += 8)                                                         \
            for (h = 0; h < 8; h += n) {                                                   \
                VT av = FMREC_LD(VT, a + f + h);                                           \
                s0[h / n] += av * FMREC_LD(VT, b0 + f + h);                                \
                s1[h / n] += av * FMREC_LD(VT, b1 + f + h);                                \
                s2[h / n] += av * FMREC_LD(VT, b2 + f + h);                                \
                s3[h / n] += av * FMREC_LD(VT, b3 + f + h);                                \
            }                                                                              \
        out[0] = FMREC_DOT_END(T, s0, b0); out[1] = FMREC_DOT_END(T, s1, b1);              \
        out[2] = FMREC_DOT_END(T, s2, b2); out[3] = FMREC_DOT_END(T, s3, b3);              \
    }
    /* Each helper on 4 floats / 2 doubles (SSE2) and on 8 floats / 4 doubles (AVX). */
    #define FMREC_VARIANTS(DEFS)                                                           \
        DEFS(float, _sse, , fmrec_f4, sqrtf)                                               \
        DEFS(double, _sse, , fmrec_d2, sqrt)                                               \
        DEFS(float, _avx, FMREC_AVX, fmrec_f8, sqrtf)                                      \
        DEFS(double, _avx, FMREC_AVX, fmrec_d4, sqrt)
    /* Whole vectors of factors from f on, then the rest one by one. */
    #define FMREC_VECTORS_THEN_REST(T, VT, CHUNK, ELEM)                                    \
        for (; f + FMREC_LANES(VT, T) <= k; f += FMREC_LANES(VT, T)) CHUNK                 \
        for (; f < k; f++) ELEM
    FMREC_VARIANTS(FMREC_REDUCE_DEFS)

    /* --- the one-hot update --- */
    /* One vector of factors from f on (each memcpy of B = sizeof(VT) bytes, a constant, is
       one vector load or store; a variable size would call memcpy). */
    #define FMREC_OH_CHUNK(T, VT, SQRT)                                                    \
        {                                                                                  \
            const size_t B = sizeof(VT);                                                   \
            VT xu, xi, xj, au, ai, aj, r;                                                  \
            memcpy(&xu, vu + f, B); memcpy(&xi, vi + f, B); memcpy(&xj, vj + f, B);       \
            FMREC_OH_BODY(VT)                                                              \
            if (acc_u != NULL) {                                                           \
                memcpy(&au, acc_u + f, B); memcpy(&ai, acc_i + f, B);                      \
                memcpy(&aj, acc_j + f, B);                                                 \
                au = au + gu * gu; ai = ai + gi * gi; aj = aj + gj * gj;                   \
                memcpy(acc_u + f, &au, B); memcpy(acc_i + f, &ai, B);                      \
                memcpy(acc_j + f, &aj, B);                                                 \
                r = au + eps; for (l = 0; l < FMREC_LANES(VT, T); l++) r[l] = SQRT(r[l]);  \
                xu = xu - lr * gu / r;                                                     \
                r = ai + eps; for (l = 0; l < FMREC_LANES(VT, T); l++) r[l] = SQRT(r[l]);  \
                xi = xi - lr * gi / r;                                                     \
                r = aj + eps; for (l = 0; l < FMREC_LANES(VT, T); l++) r[l] = SQRT(r[l]);  \
                xj = xj - lr * gj / r;                                                     \
            } else {                                                                       \
                xu = xu - lr * gu; xi = xi - lr * gi; xj = xj - lr * gj;                   \
            }                                                                              \
            memcpy(vu + f, &xu, B); memcpy(vi + f, &xi, B); memcpy(vj + f, &xj, B);       \
        }
    #define FMREC_OH_DEFS(T, SUF, ATTR, VT, SQRT)                                          \
    ATTR static void fmrec_oh_update_##T##SUF(T *vu, T *vi, T *vj, T *acc_u, T *acc_i,    \
                                              T *acc_j, Py_ssize_t k, T gf, T rv, T lr,   \
                                              T eps) {                                     \
        Py_ssize_t f = 0; int l;                                                           \
        FMREC_VECTORS_THEN_REST(T, VT, FMREC_OH_CHUNK(T, VT, SQRT), FMREC_OH_ELEM(T, SQRT)) \
    }
    FMREC_VARIANTS(FMREC_OH_DEFS)

    /* --- the general path: y += a x, and the step of one column's factors --- */
    #define FMREC_AXPY_CHUNK(T, VT)                                                        \
        {                                                                                  \
            const size_t B = sizeof(VT);                                                   \
            VT xv, yv;                                                                     \
            memcpy(&xv, x + f, B); memcpy(&yv, y + f, B);                                  \
            yv = yv + a * xv;                                                              \
            memcpy(y + f, &yv, B);                                                         \
        }
    #define FMREC_COL_CHUNK(T, VT, SQRT)                                                   \
        {                                                                                  \
            const size_t B = sizeof(VT);                                                   \
            VT xv, pi, pj, av, g, r;                                                       \
            memcpy(&xv, v + f, B); memcpy(&pi, qi + f, B); memcpy(&pj, qj + f, B);        \
            g = gf * (ab * (pi - ab * xv) - ac * (pj - ac * xv)) + rv * xv;                \
            if (acc != NULL) {                                                             \
                memcpy(&av, acc + f, B);                                                   \
                av = av + g * g;                                                           \
                memcpy(acc + f, &av, B);                                                   \
                r = av + eps; for (l = 0; l < FMREC_LANES(VT, T); l++) r[l] = SQRT(r[l]);  \
                xv = xv - lr * g / r;                                                      \
            } else {                                                                       \
                xv = xv - lr * g;                                                          \
            }                                                                              \
            memcpy(v + f, &xv, B);                                                         \
        }
    #define FMREC_GENERAL_DEFS(T, SUF, ATTR, VT, SQRT)                                     \
    ATTR static void fmrec_axpy_##T##SUF(T *y, const T *x, Py_ssize_t k, T a) {           \
        Py_ssize_t f = 0;                                                                  \
        FMREC_VECTORS_THEN_REST(T, VT, FMREC_AXPY_CHUNK(T, VT), FMREC_AXPY_ELEM(T))        \
    }                                                                                      \
    /* y += a x, returning Σ x², summed as fmrec_dot's lanes sum it (the same bits). */     \
    ATTR static double fmrec_axpy_norm_##T##SUF(T *y, const T *x, Py_ssize_t k, T a) {    \
        VT acc[8 / FMREC_LANES(VT, T)] = {{0}}; T t[8]; Py_ssize_t f = 0;                  \
        int l, h, n = FMREC_LANES(VT, T);                                                  \
        for (; f + 8 <= k; f += 8)                                                         \
            for (h = 0; h < 8; h += n) {                                                   \
                VT xv = FMREC_LD(VT, x + f + h), yv = FMREC_LD(VT, y + f + h);             \
                acc[h / n] += xv * xv;                                                     \
                yv = yv + a * xv;                                                          \
                memcpy(y + f + h, &yv, sizeof(VT));                                        \
            }                                                                              \
        memcpy(t, acc, sizeof t);                                                          \
        FMREC_AXPY_NORM_END(T)                                                             \
    }                                                                                      \
    ATTR static void fmrec_col_update_##T##SUF(T *v, T *acc, const T *qi, const T *qj,    \
                                               Py_ssize_t k, T gf, T ab, T ac, T rv,      \
                                               T lr, T eps) {                              \
        Py_ssize_t f = 0; int l;                                                           \
        FMREC_VECTORS_THEN_REST(T, VT, FMREC_COL_CHUNK(T, VT, SQRT), FMREC_COL_ELEM(T, SQRT)) \
    }
    FMREC_VARIANTS(FMREC_GENERAL_DEFS)

    #define FMREC_DISPATCH(NAME) (fmrec_use_avx() ? NAME##_avx : NAME##_sse)
    static inline double fmrec_dot_float(const float *a, const float *b, Py_ssize_t k) {
        return FMREC_DISPATCH(fmrec_dot_float)(a, b, k);
    }
    static inline double fmrec_dot_double(const double *a, const double *b, Py_ssize_t k) {
        return FMREC_DISPATCH(fmrec_dot_double)(a, b, k);
    }
    static inline double fmrec_dot_diff_float(const float *a, const float *b, const float *c,
                                              Py_ssize_t k) {
        return FMREC_DISPATCH(fmrec_dot_diff_float)(a, b, c, k);
    }
    static inline double fmrec_dot_diff_double(const double *a, const double *b,
                                               const double *c, Py_ssize_t k) {
        return FMREC_DISPATCH(fmrec_dot_diff_double)(a, b, c, k);
    }
    static inline void fmrec_dot4_float(const float *a, const float *b0, const float *b1,
                                        const float *b2, const float *b3, Py_ssize_t k,
                                        double *out) {
        FMREC_DISPATCH(fmrec_dot4_float)(a, b0, b1, b2, b3, k, out);
    }
    static inline void fmrec_dot4_double(const double *a, const double *b0,
                                         const double *b1, const double *b2,
                                         const double *b3, Py_ssize_t k, double *out) {
        FMREC_DISPATCH(fmrec_dot4_double)(a, b0, b1, b2, b3, k, out);
    }
    static inline void fmrec_oh_update_float(float *vu, float *vi, float *vj, float *acc_u,
                                             float *acc_i, float *acc_j, Py_ssize_t k,
                                             float gf, float rv, float lr, float eps) {
        FMREC_DISPATCH(fmrec_oh_update_float)(vu, vi, vj, acc_u, acc_i, acc_j, k, gf, rv, lr,
                                              eps);
    }
    static inline void fmrec_oh_update_double(double *vu, double *vi, double *vj,
                                              double *acc_u, double *acc_i, double *acc_j,
                                              Py_ssize_t k, double gf, double rv, double lr,
                                              double eps) {
        FMREC_DISPATCH(fmrec_oh_update_double)(vu, vi, vj, acc_u, acc_i, acc_j, k, gf, rv,
                                               lr, eps);
    }
    static inline void fmrec_axpy_float(float *y, const float *x, Py_ssize_t k, float a) {
        FMREC_DISPATCH(fmrec_axpy_float)(y, x, k, a);
    }
    static inline void fmrec_axpy_double(double *y, const double *x, Py_ssize_t k, double a) {
        FMREC_DISPATCH(fmrec_axpy_double)(y, x, k, a);
    }
    static inline double fmrec_axpy_norm_float(float *y, const float *x, Py_ssize_t k,
                                               float a) {
        return FMREC_DISPATCH(fmrec_axpy_norm_float)(y, x, k, a);
    }
    static inline double fmrec_axpy_norm_double(double *y, const double *x, Py_ssize_t k,
                                                double a) {
        return FMREC_DISPATCH(fmrec_axpy_norm_double)(y, x, k, a);
    }
    static inline void fmrec_col_update_float(float *v, float *acc, const float *qi,
                                              const float *qj, Py_ssize_t k, float gf,
                                              float ab, float ac, float rv, float lr,
                                              float eps) {
        FMREC_DISPATCH(fmrec_col_update_float)(v, acc, qi, qj, k, gf, ab, ac, rv, lr, eps);
    }
    static inline void fmrec_col_update_double(double *v, double *acc, const double *qi,
                                               const double *qj, Py_ssize_t k, double gf,
                                               double ab, double ac, double rv, double lr,
                                               double eps) {
        FMREC_DISPATCH(fmrec_col_update_double)(v, acc, qi, qj, k, gf, ab, ac, rv, lr, eps);
    }
    static int fmrec_avx_in_use(void) { return fmrec_use_avx(); }

    #else  /* other compilers: plain loops, the same lanes and operations */
    #define FMREC_PLAIN_DEFS(T, SQRT)                                                       \
    static double fmrec_dot_##T(const T *a, const T *b, Py_ssize_t k) {                    \
        T t[8] = {0}; Py_ssize_t f = 0; int l;                                             \
        for (; f + 8 <= k; f += 8)                                                         \
            for (l = 0; l < 8; l++) t[l] += a[f + l] * b[f + l];                           \
        FMREC_REDUCE_END(T, FMREC_TERM_DOT)                                                \
    }                                                                                      \
    static double fmrec_dot_diff_##T(const T *a, const T *b, const T *c, Py_ssize_t k) {   \
        T t[8] = {0}; Py_ssize_t f = 0; int l;                                             \
        for (; f + 8 <= k; f += 8)                                                         \
            for (l = 0; l < 8; l++) t[l] += a[f + l] * (T)(b[f + l] - c[f + l]);           \
        FMREC_REDUCE_END(T, FMREC_TERM_DOT_DIFF)                                           \
    }                                                                                      \
    static void fmrec_dot4_##T(const T *a, const T *b0, const T *b1, const T *b2,         \
                               const T *b3, Py_ssize_t k, double *out) {                   \
        out[0] = fmrec_dot_##T(a, b0, k); out[1] = fmrec_dot_##T(a, b1, k);                \
        out[2] = fmrec_dot_##T(a, b2, k); out[3] = fmrec_dot_##T(a, b3, k);                \
    }                                                                                      \
    static void fmrec_oh_update_##T(T *vu, T *vi, T *vj, T *acc_u, T *acc_i, T *acc_j,    \
                                    Py_ssize_t k, T gf, T rv, T lr, T eps) {               \
        Py_ssize_t f;                                                                      \
        for (f = 0; f < k; f++) FMREC_OH_ELEM(T, SQRT)                                     \
    }                                                                                      \
    static void fmrec_axpy_##T(T *y, const T *x, Py_ssize_t k, T a) {                      \
        Py_ssize_t f;                                                                      \
        for (f = 0; f < k; f++) FMREC_AXPY_ELEM(T)                                         \
    }                                                                                      \
    static double fmrec_axpy_norm_##T(T *y, const T *x, Py_ssize_t k, T a) {               \
        T t[8] = {0}; Py_ssize_t f = 0; int l;                                             \
        for (; f + 8 <= k; f += 8)                                                         \
            for (l = 0; l < 8; l++) {                                                      \
                t[l] += x[f + l] * x[f + l];                                               \
                y[f + l] = y[f + l] + a * x[f + l];                                        \
            }                                                                              \
        FMREC_AXPY_NORM_END(T)                                                             \
    }                                                                                      \
    static void fmrec_col_update_##T(T *v, T *acc, const T *qi, const T *qj, Py_ssize_t k, \
                                     T gf, T ab, T ac, T rv, T lr, T eps) {                \
        Py_ssize_t f;                                                                      \
        for (f = 0; f < k; f++) FMREC_COL_ELEM(T, SQRT)                                    \
    }
    FMREC_PLAIN_DEFS(float, sqrtf)
    FMREC_PLAIN_DEFS(double, sqrt)
    static int fmrec_avx_in_use(void) { return 0; }
    #endif
    """
    double dot_f "fmrec_dot_float"(const float* a, const float* b, Py_ssize_t k) noexcept nogil
    double dot_d "fmrec_dot_double"(const double* a, const double* b, Py_ssize_t k) noexcept nogil
    double dot_diff_f "fmrec_dot_diff_float"(const float* a, const float* b, const float* c, Py_ssize_t k) noexcept nogil
    double dot_diff_d "fmrec_dot_diff_double"(const double* a, const double* b, const double* c, Py_ssize_t k) noexcept nogil
    void dot4_f "fmrec_dot4_float"(const float* a, const float* b0, const float* b1, const float* b2, const float* b3, Py_ssize_t k, double* out) noexcept nogil
    void dot4_d "fmrec_dot4_double"(const double* a, const double* b0, const double* b1, const double* b2, const double* b3, Py_ssize_t k, double* out) noexcept nogil
    void oh_update_f "fmrec_oh_update_float"(float* vu, float* vi, float* vj, float* acc_u, float* acc_i, float* acc_j, Py_ssize_t k, float gf, float rv, float lr, float eps) noexcept nogil
    void oh_update_d "fmrec_oh_update_double"(double* vu, double* vi, double* vj, double* acc_u, double* acc_i, double* acc_j, Py_ssize_t k, double gf, double rv, double lr, double eps) noexcept nogil
    void axpy_f "fmrec_axpy_float"(float* y, const float* x, Py_ssize_t k, float a) noexcept nogil
    void axpy_d "fmrec_axpy_double"(double* y, const double* x, Py_ssize_t k, double a) noexcept nogil
    double axpy_norm_f "fmrec_axpy_norm_float"(float* y, const float* x, Py_ssize_t k, float a) noexcept nogil
    double axpy_norm_d "fmrec_axpy_norm_double"(double* y, const double* x, Py_ssize_t k, double a) noexcept nogil
    void col_update_f "fmrec_col_update_float"(float* v, float* acc, const float* qi, const float* qj, Py_ssize_t k, float gf, float ab, float ac, float rv, float lr, float eps) noexcept nogil
    void col_update_d "fmrec_col_update_double"(double* v, double* acc, const double* qi, const double* qj, Py_ssize_t k, double gf, double ab, double ac, double rv, double lr, double eps) noexcept nogil
    int avx_in_use "fmrec_avx_in_use"() noexcept nogil


def simd_in_use() -> str:
    """Which variant of the factor loops runs here: "avx" or "sse2/plain" (for tests and
    benchmark reports)."""
    return "avx" if avx_in_use() else "sse2/plain"


cdef inline double dot(const floating* a, const floating* b, Py_ssize_t k) noexcept nogil:
    """Σ_f a[f] b[f], summed in 8 lanes of ``floating`` combined in double."""
    if floating is float:
        return dot_f(a, b, k)
    else:
        return dot_d(a, b, k)


cdef inline void dot4(const floating* a, const floating* b0, const floating* b1,
                      const floating* b2, const floating* b3, Py_ssize_t k,
                      double* out) noexcept nogil:
    """``dot`` of a with each of b0..b3 into out[0..3], the same bits, reading a once."""
    if floating is float:
        dot4_f(a, b0, b1, b2, b3, k, out)
    else:
        dot4_d(a, b0, b1, b2, b3, k, out)


cdef inline double dot_diff(const floating* a, const floating* b, const floating* c,
                            Py_ssize_t k) noexcept nogil:
    """Σ_f a[f] (b[f] - c[f]), summed in 8 lanes of ``floating`` combined in double."""
    if floating is float:
        return dot_diff_f(a, b, c, k)
    else:
        return dot_diff_d(a, b, c, k)


cdef inline void axpy(floating* y, const floating* x, Py_ssize_t k, floating a) noexcept nogil:
    """y[f] += a x[f], as the scalar loop computes it (lanes are independent)."""
    if floating is float:
        axpy_f(y, x, k, a)
    else:
        axpy_d(y, x, k, a)


cdef inline double axpy_norm(floating* y, const floating* x, Py_ssize_t k,
                             floating a) noexcept nogil:
    """``axpy(y, x, k, a)``, returning ``dot(x, x, k)`` (the same bits) from the same pass."""
    if floating is float:
        return axpy_norm_f(y, x, k, a)
    else:
        return axpy_norm_d(y, x, k, a)


cdef inline void col_update(floating* v, floating* acc, const floating* qi, const floating* qj,
                            Py_ssize_t k, floating gf, floating ab, floating ac, floating rv,
                            floating lr, floating eps) noexcept nogil:
    """``triple_step``'s step of one column's factors v (and of their AdaGrad sums acc, or
    NULL for a constant rate), for the column's coefficients ab = a + b and ac = a + c."""
    if floating is float:
        col_update_f(v, acc, qi, qj, k, gf, ab, ac, rv, lr, eps)
    else:
        col_update_d(v, acc, qi, qj, k, gf, ab, ac, rv, lr, eps)


# Hot columns: a column that a large share of the triples step (a user's gender, an item's
# year, a popular genre) is written by every thread over and over. Each write takes the
# cache line from the other core, and on these VMs that costs 60 to 500 ns depending on
# where the host put the two vCPUs: two Hogwild threads then ran the demo's feature ranker
# 1.1-1.4x faster than one, against 1.4-2.1x with no parameter shared. With several threads,
# each keeps its own copy of the hot columns' parameters (w, V and their AdaGrad sums),
# steps it, and every ``merge_every`` positives adds what it changed since its last merge
# to the shared values and copies them back: the sum of the threads' steps, as Hogwild
# gives, seen by the others a little later. A lock keeps two merges from interleaving.
# Only the general path has them: a one-hot triple steps three rows, rarely the same ones
# in two threads, and the one-hot path keeps its instructions to itself.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    typedef omp_lock_t fmrec_lock;
    static void fmrec_lock_init(fmrec_lock *l) { omp_init_lock(l); }
    static void fmrec_lock_destroy(fmrec_lock *l) { omp_destroy_lock(l); }
    static void fmrec_lock_set(fmrec_lock *l) { omp_set_lock(l); }
    static void fmrec_lock_unset(fmrec_lock *l) { omp_unset_lock(l); }
    #else
    typedef int fmrec_lock;  /* one thread: nothing to exclude */
    static void fmrec_lock_init(fmrec_lock *l) { *l = 0; }
    static void fmrec_lock_destroy(fmrec_lock *l) { (void)l; }
    static void fmrec_lock_set(fmrec_lock *l) { (void)l; }
    static void fmrec_lock_unset(fmrec_lock *l) { (void)l; }
    #endif
    """
    ctypedef struct fmrec_lock:
        pass
    void lock_init "fmrec_lock_init"(fmrec_lock* l) noexcept nogil
    void lock_destroy "fmrec_lock_destroy"(fmrec_lock* l) noexcept nogil
    void lock_set "fmrec_lock_set"(fmrec_lock* l) noexcept nogil
    void lock_unset "fmrec_lock_unset"(fmrec_lock* l) noexcept nogil


cdef struct Replica:
    # One thread's copies of the hot columns. slot[col] is col's slot (-1: not hot).
    const int32_t* slot
    const int64_t* cols     # the column of each slot
    Py_ssize_t n_slots
    Py_ssize_t since_merge  # positives since the last merge
    # floating[n_slots * (2k + 2)] each: V's rows, aV's rows, then w's and aw's entries of
    # the slots; the thread's values, and the shared ones as of its last merge.
    void* own
    void* base


# Without hot columns (one thread) the kernel takes ``NoCopies`` in place of a Replica: its
# own compiled variant, in which every column is read and written in place with no lookup
# (looking the columns up cost one thread 5.6% more instructions on the side features).
cdef struct NoCopies:
    char unused

ctypedef fused copies_t:
    NoCopies
    Replica


# The parts of a Replica's arrays.
cdef enum:
    PART_V = 0
    PART_ACC_V = 1
    PART_W = 2
    PART_ACC_W = 3


cdef inline Py_ssize_t part_start(Py_ssize_t n_slots, Py_ssize_t k, int part) noexcept nogil:
    """Where ``part`` starts in a Replica's arrays."""
    return n_slots * (part * k if part < PART_W else 2 * k + (part - PART_W))


cdef inline Py_ssize_t part_width(Py_ssize_t k, int part) noexcept nogil:
    """Entries of a column in ``part``: k in V and aV, one in w and aw."""
    return k if part < PART_W else 1


cdef inline floating* shared_part(int part, floating* w, floating* V, floating* aw,
                                  floating* aV) noexcept nogil:
    if part == PART_V:
        return V
    if part == PART_ACC_V:
        return aV
    return w if part == PART_W else aw


cdef inline floating* param_at(floating* shared, const copies_t* r, int64_t col, Py_ssize_t k,
                               int part) noexcept nogil:
    """Where this thread reads and writes column col's entries of ``shared``, the array of
    ``part`` (k of them for V and aV, one for w and aw)."""
    cdef Py_ssize_t width = part_width(k, part)
    cdef int32_t s
    if copies_t is Replica:
        s = r.slot[col]
        if s >= 0:
            return <floating*> r.own + part_start(r.n_slots, k, part) + s * width
    return shared + col * width


cdef inline floating* v_row(floating* V, const copies_t* r, int64_t col,
                            Py_ssize_t k) noexcept nogil:
    return param_at(V, r, col, k, PART_V)


cdef inline floating* w_at(floating* w, const copies_t* r, int64_t col,
                           Py_ssize_t k) noexcept nogil:
    return param_at(w, r, col, k, PART_W)


cdef inline void merge_values(floating* shared, floating* own, floating* base,
                              Py_ssize_t n) noexcept nogil:
    """shared += own - base (what this thread changed since its last merge), then own and
    base take the result. A value no other thread changed since is set to own exactly, so a
    single thread gets the same bits as without copies."""
    cdef Py_ssize_t f
    for f in range(n):
        if shared[f] == base[f]:
            shared[f] = own[f]
        else:
            shared[f] = shared[f] + (own[f] - base[f])
        own[f] = shared[f]
        base[f] = shared[f]


cdef void merge_replica(Replica* r, floating* w, floating* V, floating* aw, floating* aV,
                        Py_ssize_t k, fmrec_lock* lock) noexcept nogil:
    """Add this thread's changes to its hot columns to the shared parameters and take the
    others' (``merge_values``); aw and aV are NULL without AdaGrad."""
    cdef Py_ssize_t s, width, start, n = r.n_slots
    cdef floating* shared
    cdef int part
    r.since_merge = 0
    lock_set(lock)
    for part in range(4):
        shared = shared_part(part, w, V, aw, aV)
        width, start = part_width(k, part), part_start(n, k, part)
        for s in range(n if shared != NULL else 0):
            merge_values(shared + r.cols[s] * width, <floating*> r.own + start + s * width,
                         <floating*> r.base + start + s * width, width)
    lock_unset(lock)


cdef bint start_replica(Replica* r, const int32_t* slot, const int64_t* cols, Py_ssize_t n,
                        floating* w, floating* V, floating* aw, floating* aV,
                        Py_ssize_t k) noexcept nogil:
    """Set up a thread's copies of the n > 0 hot columns ``cols`` (``slot`` maps a column to
    its slot); False if out of memory."""
    cdef Py_ssize_t s, width, start, size = n * (2 * k + 2)
    cdef floating* shared
    cdef int part
    r.slot = slot
    r.cols = cols
    r.n_slots = n
    r.since_merge = 0
    r.own = malloc(size * sizeof(floating))
    r.base = malloc(size * sizeof(floating))
    if r.own == NULL or r.base == NULL:
        return False
    memset(r.own, 0, size * sizeof(floating))  # the unused parts without AdaGrad
    for part in range(4):
        shared = shared_part(part, w, V, aw, aV)
        width, start = part_width(k, part), part_start(n, k, part)
        for s in range(n if shared != NULL else 0):
            memcpy(<floating*> r.own + start + s * width, shared + cols[s] * width,
                   width * sizeof(floating))
    memcpy(r.base, r.own, size * sizeof(floating))
    return True


cdef inline double rng_uniform(uint64_t* s) noexcept nogil:
    """Uniform in [0, 1) with 53 random bits."""
    return <double> (splitmix64(s) >> 11) * (1.0 / 9007199254740992.0)


cdef struct Popularity:
    # Items drawn from the cumulative distribution ``cdf`` (non-decreasing, one entry per
    # item); ``guide[b]`` (``popularity_guide``) is the answer for the lowest r of bucket
    # b = floor(r * n_items), so a draw walks a step or two from there instead of halving
    # the whole table (whose unpredictable branches doubled the sampler's time).
    const double* cdf
    const int64_t* guide


cdef const Popularity* popularity_of(const double[::1] cdf, const int64_t[::1] guide,
                                     Popularity* out) noexcept nogil:
    """``out`` set to draw from ``cdf`` with its ``guide``; NULL (uniform draws) when
    ``cdf`` is empty."""
    if cdf.shape[0] == 0:
        return NULL
    out.cdf = &cdf[0]
    out.guide = &guide[0]
    return out


cdef inline int64_t draw_item(uint64_t* s, int64_t n_items,
                             const Popularity* pop) noexcept nogil:
    """An item drawn uniformly (pop NULL) or from ``pop``: then the first item whose
    cumulative probability exceeds a uniform r (the last item if none does)."""
    cdef double r = rng_uniform(s)
    cdef int64_t j = <int64_t> (r * n_items)
    if j >= n_items:
        j = n_items - 1
    if pop == NULL:
        return j
    # Both walks keep the answer exact whatever the guide holds; the guide keeps them short.
    j = pop.guide[j]
    while j > 0 and pop.cdf[j - 1] > r:
        j -= 1
    while j < n_items - 1 and pop.cdf[j] <= r:
        j += 1
    return j


cdef inline bint sorted_contains(const index_t* idx, Py_ssize_t n, int64_t j) noexcept nogil:
    """Whether j is in the sorted list idx[:n].

    Halving a window with a conditional move rather than a branch: the sampler's lookups
    land anywhere in the list, so a branch would be mispredicted about every other step.
    """
    cdef const index_t* base = idx
    cdef Py_ssize_t half
    if n == 0:
        return False
    while n > 1:
        half = n // 2
        base = base + half if base[half] <= j else base
        n -= half
    return base[0] == j


cdef inline uint64_t seen_bit(int64_t j, int shift) noexcept nogil:
    """Item j's bit in a user's row of seen bits: j itself in an exact row (shift 0), else
    a multiplicative hash of j onto the row's 2**(64 - shift) bits (a filter)."""
    if shift == 0:
        return <uint64_t> j
    return (<uint64_t> j * <uint64_t> 0x9E3779B97F4A7C15ULL) >> shift


cdef inline bint bit_set(const uint64_t* bits, uint64_t b) noexcept nogil:
    return (bits[b >> 6] >> (b & 63)) & 1


cdef struct SeenBits:
    # The sampler's rows of seen bits (see bpr_epoch): ``rows`` holds ``words`` words per user
    # (NULL: none), exact when ``shift`` is 0, else filters; users with ``exact_of[u] >= 0``
    # (``exact_of`` NULL: none) have an exact row of ``exact_words`` words in ``exact``.
    const uint64_t* rows
    Py_ssize_t words
    int shift
    const int64_t* exact_of
    const uint64_t* exact
    Py_ssize_t exact_words


cdef inline const uint64_t* user_bits(const SeenBits* sb, int64_t u, int* shift) noexcept nogil:
    """User u's row of seen bits (NULL: none) and, in ``shift``, how items map to it."""
    if sb.exact_of != NULL and sb.exact_of[u] >= 0:
        shift[0] = 0
        return sb.exact + sb.exact_of[u] * sb.exact_words
    shift[0] = sb.shift
    return sb.rows + u * sb.words if sb.rows != NULL else NULL


cdef inline int64_t draw_negative(uint64_t* s, const index_t* seen, Py_ssize_t n_seen,
                                  const uint64_t* seen_bits, int shift, int64_t n_items,
                                  const Popularity* pop, int max_draws) noexcept nogil:
    """An item not in the sorted list ``seen``, or -1 after ``max_draws`` rejected draws.

    ``seen_bits`` (NULL when absent) is the user's row of seen bits (``seen_bitmap``): with
    ``shift`` 0 it holds the seen items exactly, one load per lookup instead of a search;
    otherwise a clear bit proves the item unseen and only a set one is searched.
    """
    cdef int t
    cdef int64_t j
    if n_seen >= n_items:
        return -1
    for t in range(max_draws):
        j = draw_item(s, n_items, pop)
        if seen_bits != NULL:
            if not bit_set(seen_bits, seen_bit(j, shift)):
                return j
            if shift != 0 and not sorted_contains(seen, n_seen, j):
                return j
        elif not sorted_contains(seen, n_seen, j):
            return j
    return -1


cdef inline floating lookup(const index_t* idx, const floating* val, Py_ssize_t n,
                            int64_t col) noexcept nogil:
    """The value of column ``col`` in a sorted sparse row (0 when absent)."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    # Item columns mostly lie past a user's last column (Recommender puts the user block
    # first): those need no search.
    if n == 0 or col < idx[0] or col > idx[n - 1]:
        return 0
    while lo < hi:
        mid = (lo + hi) // 2
        if idx[mid] < col:
            lo = mid + 1
        else:
            hi = mid
    if lo < n and idx[lo] == col:
        return val[lo]
    return 0


cdef inline double bpr_loss(double d, double* slope) noexcept nogil:
    """-ln σ(d), with its derivative -σ(-d) in ``slope``: both from one exp(-|d|), which
    cannot overflow."""
    cdef double e = exp(-fabs(d))
    if d >= 0:
        slope[0] = -e / (1.0 + e)
        return log1p(e)
    slope[0] = -1.0 / (1.0 + e)
    return log1p(e) - d


cdef inline double candidate_score(const index_t* ui, const floating* ux, Py_ssize_t nu,
                                   const index_t* ji, const floating* jx, Py_ssize_t nj,
                                   floating* w, floating* V, const copies_t* rep,
                                   Py_ssize_t k, const floating* qu, floating* qj
                                   ) noexcept nogil:
    """ŷ(U[u] + I[j]) minus the terms of U[u] alone: all a sampled item's rank depends on.

    ``qu`` holds Σ_U[u] x v; ``qj`` is scratch of length k. ``rep``: the thread's copies of
    the hot columns, read instead of w and V.
    """
    cdef Py_ssize_t p
    cdef int64_t col
    cdef floating x, a
    cdef const floating* v
    cdef double s = 0, ssq = 0, n2
    memset(qj, 0, k * sizeof(floating))
    for p in range(nj):
        col = ji[p]
        x = jx[p]
        a = lookup(ui, ux, nu, col)
        v = v_row(V, rep, col, k)
        s += w_at(w, rep, col, k)[0] * x
        n2 = axpy_norm(qj, v, k, x)
        ssq += n2 * (2 * a * x + x * x)
    # (sq - ssq) is exactly 0 for a one-hot item row outside the user's columns, so the
    # score is then exactly s + cross, as one_hot_score computes it.
    return s + dot(qu, qj, k) + 0.5 * (dot(qj, qj, k) - ssq)


cdef inline double one_hot_score(floating wj, const floating* vu, const floating* vj,
                                 Py_ssize_t k) noexcept nogil:
    """``candidate_score`` when U[u] and I[j] are distinct one-hot columns: w_j + v_u·v_j."""
    return <double> wj + dot(vu, vj, k)


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
                             floating* w, floating* V, floating* aw, floating* aV,
                             const copies_t* rep, Py_ssize_t k,
                             floating lr, bint adagrad, floating rw, floating rv,
                             floating* qu, floating* qi, floating* qj,
                             double* loss_out) noexcept nogil:
    """One SGD/AdaGrad step on -ln σ(d), d = ŷ(U[u]+I[i]) - ŷ(U[u]+I[j]), plus the penalties.

    Steps w_c for the columns of I[i] ∪ I[j] and v_c for those of U[u] ∪ I[i] ∪ I[j], every
    gradient taken at the parameters before the step. False (and no update) if d is not
    finite. The hot columns are read and stepped in the thread's copies ``rep``.
    """
    cdef Py_ssize_t p
    cdef int64_t col
    cdef floating a, b, c, gw, gf, eps = <floating> ADAGRAD_EPS
    cdef floating* v
    cdef floating* wc
    cdef floating* awc
    cdef double d, lin = 0, corr = 0, n2, g
    memset(qu, 0, k * sizeof(floating))
    memset(qi, 0, k * sizeof(floating))
    memset(qj, 0, k * sizeof(floating))
    for p in range(m):
        a = A[p]
        b = B[p]
        c = C[p]
        v = v_row(V, rep, cols[p], k)
        # A zero coefficient adds ±0, which changes no sum that starts at +0: skipped.
        if a != 0:
            axpy(qu, v, k, a)
        if b != c:
            # Terms of the user's columns alone cancel in d; these are what remains. |v|²
            # comes from the pass that adds b v (else c v).
            if b != 0:
                n2 = axpy_norm(qi, v, k, b)
                if c != 0:
                    axpy(qj, v, k, c)
            else:
                n2 = axpy_norm(qj, v, k, c)
            lin += w_at(w, rep, cols[p], k)[0] * (b - c)
            corr += n2 * ((a + b) * (a + b) - (a + c) * (a + c))
        elif b != 0:
            axpy(qi, v, k, b)
            axpy(qj, v, k, c)
    # The bracket is exactly 0 for distinct one-hot rows, so d is then exactly lin + cross,
    # as one_hot_step computes it.
    d = lin + dot_diff(qu, qi, qj, k) + 0.5 * ((dot(qi, qi, k) - dot(qj, qj, k)) - corr)
    if not isfinite(d):
        return False
    loss_out[0] = bpr_loss(d, &g)
    gf = <floating> g
    axpy(qi, qu, k, 1)          # the factor sums of the two full rows z and z'
    axpy(qj, qu, k, 1)
    for p in range(m):
        col = cols[p]
        a = A[p]
        b = B[p]
        c = C[p]
        if b != 0 or c != 0:
            wc = w_at(w, rep, col, k)
            gw = gf * (b - c) + rw * wc[0]
            if adagrad:
                awc = param_at(aw, rep, col, k, PART_ACC_W)
                awc[0] += gw * gw
                wc[0] -= lr * gw / <floating> sqrt(awc[0] + eps)
            else:
                wc[0] -= lr * gw
        col_update(v_row(V, rep, col, k),
                   param_at(aV, rep, col, k, PART_ACC_V) if adagrad else NULL, qi, qj, k, gf,
                   a + b, a + c, rv, lr, eps)
    return True


cdef inline bint one_hot_step(floating* w, floating* vu, floating* vi, floating* vj,
                              Py_ssize_t ci, Py_ssize_t cj, floating* aw, floating* avu,
                              floating* avi, floating* avj, Py_ssize_t k, floating lr,
                              bint adagrad, floating rw, floating rv,
                              double* loss_out) noexcept nogil:
    """``triple_step`` when U[u], I[i] and I[j] are three distinct one-hot columns u, i, j.

    Then d = w_i - w_j + v_u·(v_i - v_j), and each expression below is the general one with
    its coefficients (a, b, c) = (1, 0, 0), (0, 1, 0) or (0, 0, 1) put in: multiplying by 1,
    adding 0 and the exactly-zero bracket of d change no bits, so both paths give the same
    parameters (the tests compare them). ``vu``... are the rows of V, ``avu``... of its
    AdaGrad sums (NULL with ``adagrad`` False); ``ci``, ``cj`` index w and its sums.
    """
    cdef floating gw, gf, eps = <floating> ADAGRAD_EPS
    cdef double d = (<double> w[ci] - <double> w[cj]) + dot_diff(vu, vi, vj, k), g
    if not isfinite(d):
        return False
    loss_out[0] = bpr_loss(d, &g)
    gf = <floating> g
    gw = gf + rw * w[ci]
    if adagrad:
        aw[ci] += gw * gw
        w[ci] -= lr * gw / <floating> sqrt(aw[ci] + eps)
    else:
        w[ci] -= lr * gw
    gw = -gf + rw * w[cj]
    if adagrad:
        aw[cj] += gw * gw
        w[cj] -= lr * gw / <floating> sqrt(aw[cj] + eps)
    else:
        w[cj] -= lr * gw
    # One pass over the factors updates the three rows: each gradient needs only the
    # pre-step values of the same factor f of v_u, v_i and v_j.
    if floating is float:
        oh_update_f(vu, vi, vj, avu, avi, avj, k, gf, rv, lr, eps)
    else:
        oh_update_d(vu, vi, vj, avu, avi, avj, k, gf, rv, lr, eps)
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


cdef inline void prefetch_row(const floating* row, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t off = 0
    while off < k:  # every cache line of the row
        prefetch(row + off)
        off += 64 // sizeof(floating)


cdef int64_t choose_negative(
        int64_t u, const index_t* ui, const floating* ux, Py_ssize_t nu,
        const index_t* Ip, const index_t* Ii, const floating* Ix,
        const index_t* Sp, const index_t* Si, const uint64_t* seen_bits, int shift,
        int64_t n_items, const Popularity* pop, floating* w, floating* V, const copies_t* rep,
        Py_ssize_t k,
        int n_candidates, int max_draws, uint64_t* rng, const floating* qu, floating* qj,
        int64_t* cands, double* scores, bint one_hot) noexcept nogil:
    """A negative for user u, outside the user's sorted row of ``seen``, or -1.

    Each of ``n_candidates`` candidates is drawn until it is unseen (giving up after
    ``max_draws`` draws); the negative is the highest scoring candidate (the first of equal
    scores, in draw order). All candidates are drawn before any is scored, so their rows are
    requested together. ``qu`` holds Σ_U[u] x v (general rows); ``qj`` is scratch of length
    k; ``cands`` and ``scores`` hold ``n_candidates`` entries. ``seen_bits``, ``shift``: the
    user's row of seen bits (or NULL), as in ``draw_negative``. ``rep``: the thread's copies
    of the hot columns.
    """
    cdef const index_t* seen = Si + Sp[u]
    cdef Py_ssize_t n_seen = Sp[u + 1] - Sp[u]
    cdef int nb = 0, t, best
    cdef int64_t cand, cj, c0, c1, c2, c3
    cdef const floating* vu = NULL
    for t in range(n_candidates):
        cand = draw_negative(rng, seen, n_seen, seen_bits, shift, n_items, pop, max_draws)
        if cand < 0:
            break   # the user has (nearly) seen everything: more draws will not help
        if n_candidates == 1:
            return cand
        cands[nb] = cand
        nb += 1
        if one_hot:  # the rows are read just below: ask for all of them at once
            cj = Ii[Ip[cand]]
            prefetch(w + cj)
            prefetch_row(V + cj * k, k)
    if nb == 0:
        return -1
    t = 0
    if one_hot:
        # one_hot_score, four candidates to a pass over v_u: w_j + v_u·v_j, the same bits.
        vu = V + ui[0] * k
        while t + 4 <= nb:
            c0 = Ii[Ip[cands[t]]]
            c1 = Ii[Ip[cands[t + 1]]]
            c2 = Ii[Ip[cands[t + 2]]]
            c3 = Ii[Ip[cands[t + 3]]]
            dot4(vu, V + c0 * k, V + c1 * k, V + c2 * k, V + c3 * k, k, scores + t)
            scores[t] = <double> w[c0] + scores[t]
            scores[t + 1] = <double> w[c1] + scores[t + 1]
            scores[t + 2] = <double> w[c2] + scores[t + 2]
            scores[t + 3] = <double> w[c3] + scores[t + 3]
            t += 4
    for t in range(t, nb):
        cand = cands[t]
        if one_hot:
            cj = Ii[Ip[cand]]
            scores[t] = one_hot_score(w[cj], vu, V + cj * k, k)
        else:
            scores[t] = candidate_score(ui, ux, nu, Ii + Ip[cand], Ix + Ip[cand],
                                        Ip[cand + 1] - Ip[cand], w, V, rep, k, qu, qj)
    best = 0
    for t in range(1, nb):
        if scores[t] > scores[best]:
            best = t
    return cands[best]


cdef int train_positive(
        int64_t u, int64_t i, int64_t j_given,
        const index_t* Up, const index_t* Ui, const floating* Ux,
        const index_t* Ip, const index_t* Ii, const floating* Ix,
        const index_t* Sp, const index_t* Si, const uint64_t* bits, int shift,
        int64_t n_items, const Popularity* pop, floating* w, floating* V, floating* aw,
        floating* aV, const copies_t* rep, Py_ssize_t k,
        floating lr, bint adagrad, floating rw, floating rv,
        int n_candidates, int max_draws, uint64_t* rng, floating* scratch, Merged* buf,
        int64_t* cands, double* scores, bint one_hot, double* loss_out) noexcept nogil:
    """Find the negative of one positive (u, i) and take its step; returns a status.

    ``bits``, ``shift``: the user's row of seen bits (``user_bits``), or NULL. ``rep``: the
    thread's copies of the hot columns, read and stepped instead of theirs in w, V, aw, aV.

    ``one_hot``: every row of U and I is one column with value 1, no column in both; the
    positive then takes the fast path (``one_hot_score``, ``one_hot_step``), which gives the
    same bits as the general one.
    """
    cdef const index_t* ui = Ui + Up[u]
    cdef const floating* ux = Ux + Up[u]
    cdef Py_ssize_t nu = Up[u + 1] - Up[u], ni, nj, m, p
    cdef int64_t j = j_given
    cdef floating* qu = scratch
    cdef floating* floating_coef
    cdef int64_t cu = 0, ci, cj
    if one_hot:
        cu = ui[0]
    if j < 0:
        if not one_hot and n_candidates > 1:
            # Σ_U[u] x v, which every candidate's score uses.
            memset(qu, 0, k * sizeof(floating))
            for p in range(nu):
                axpy(qu, v_row(V, rep, ui[p], k), k, ux[p])
        j = choose_negative(u, ui, ux, nu, Ip, Ii, Ix, Sp, Si, bits, shift, n_items, pop, w,
                            V, rep, k, n_candidates, max_draws, rng, qu, scratch + k,
                            cands, scores, one_hot)
        if j < 0:
            return SKIPPED
    if one_hot:
        ci = Ii[Ip[i]]
        cj = Ii[Ip[j]]
        if adagrad:  # the negative's AdaGrad sums: nothing asked for them yet
            prefetch(aw + cj)
            prefetch_row(aV + cj * k, k)
        if ci != cj:  # i == j (a given negative equal to the positive) takes the general path
            if not one_hot_step(w, V + cu * k, V + ci * k, V + cj * k, ci, cj, aw,
                                aV + cu * k if adagrad else NULL,
                                aV + ci * k if adagrad else NULL,
                                aV + cj * k if adagrad else NULL,
                                k, lr, adagrad, rw, rv, loss_out):
                return NOT_FINITE
            return DONE
    ni = Ip[i + 1] - Ip[i]
    nj = Ip[j + 1] - Ip[j]
    if not reserve(buf, nu + ni + nj, sizeof(floating)):
        return NO_MEMORY
    floating_coef = <floating*> buf.coef
    m = merge3(ui, ux, nu, Ii + Ip[i], Ix + Ip[i], ni, Ii + Ip[j], Ix + Ip[j], nj,
               buf.cols, floating_coef, floating_coef + buf.capacity,
               floating_coef + 2 * buf.capacity)
    if not triple_step(m, buf.cols, floating_coef, floating_coef + buf.capacity,
                       floating_coef + 2 * buf.capacity, w, V, aw, aV, rep, k, lr, adagrad,
                       rw, rv, scratch, scratch + k, scratch + 2 * k, loss_out):
        return NOT_FINITE
    return DONE


cdef inline void prefetch_span(const char* start, Py_ssize_t n_bytes) noexcept nogil:
    """Every cache line of the n_bytes from start, up to SEEN_LINES of them (a lookup in a
    user's seen row reads a handful)."""
    cdef Py_ssize_t off = 0
    if n_bytes > SEEN_LINES * 64:
        n_bytes = SEEN_LINES * 64
    while off < n_bytes:
        prefetch(start + off)
        off += 64
    if n_bytes > 0:  # the row need not start on a line
        prefetch(start + n_bytes - 1)


cdef inline void prefetch_row_params(const index_t* idx, Py_ssize_t nnz, const floating* V,
                                     const floating* aV, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t p
    for p in range(nnz):
        prefetch_row(V + idx[p] * k, k)
        if aV != NULL:
            prefetch_row(aV + idx[p] * k, k)


cdef inline void prefetch_ahead(Py_ssize_t t, Py_ssize_t n, const int64_t* op,
                                const int64_t* up, const int64_t* ip,
                                const index_t* Up, const index_t* Ui,
                                const index_t* Ip, const index_t* Ii,
                                const index_t* Sp, const index_t* Si,
                                const SeenBits* sb, const floating* V, const floating* aV,
                                Py_ssize_t k) noexcept nogil:
    """Ask for what the positives AHEAD_* places later in the order will read."""
    cdef int64_t pos, u, i
    cdef int shift
    cdef const uint64_t* bits
    if t + AHEAD_PAIR < n:
        pos = op[t + AHEAD_PAIR]
        prefetch(up + pos)
        prefetch(ip + pos)
    if t + AHEAD_PTR < n:
        pos = op[t + AHEAD_PTR]
        u = up[pos]
        prefetch(Up + u)
        prefetch(Ip + ip[pos])
        prefetch(Sp + u)
    if t + AHEAD_IDX < n:
        pos = op[t + AHEAD_IDX]
        u = up[pos]
        if Ui != NULL:
            prefetch(Ui + Up[u])
        if Ii != NULL:
            prefetch(Ii + Ip[ip[pos]])
        # The user's rows of seen bits and items, which the sampler looks up (the items
        # only without exact bits). A long exact row is read at random bits: not asked for.
        bits = user_bits(sb, u, &shift)
        if bits != NULL and (sb.exact_of == NULL or sb.exact_of[u] < 0):
            prefetch_span(<const char*> bits, sb.words * sizeof(uint64_t))
        if Si != NULL and (bits == NULL or shift != 0):
            prefetch_span(<const char*> (Si + Sp[u]), (Sp[u + 1] - Sp[u]) * sizeof(index_t))
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


cdef struct EpochPlan:
    # What an epoch's loop takes besides the rows and parameters (see bpr_epoch).
    Py_ssize_t n, k
    int64_t n_items
    const int64_t* order
    const int64_t* users
    const int64_t* items
    const int64_t* negatives   # NULL: none given
    const SeenBits* seen
    const Popularity* pop
    double learning_rate, reg_linear, reg_factors
    bint adagrad, one_hot
    int n_candidates, max_draws, n_threads
    const uint64_t* seeds
    const int32_t* slot         # the hot columns' slots, their columns and number
    const int64_t* hot
    Py_ssize_t n_hot, merge_every


cdef struct EpochCounts:
    double loss_sum
    Py_ssize_t n_done, n_skipped, n_bad, n_oom


cdef EpochCounts run_epoch(const copies_t* kind, const EpochPlan* plan,
                           const index_t* Up, const index_t* Ui, const floating* Ux,
                           const index_t* Ip, const index_t* Ii, const floating* Ix,
                           const index_t* Sp, const index_t* Si, floating* w, floating* V,
                           floating* aw, floating* aV) noexcept nogil:
    """``bpr_epoch``'s loop over the positives, on ``plan.n_threads`` threads, stepping the
    hot columns in per-thread copies when ``copies_t`` is Replica (``kind`` only picks the
    compiled variant)."""
    cdef Py_ssize_t n = plan.n, k = plan.k, t
    cdef Py_ssize_t n_done = 0, n_skipped = 0, n_bad = 0, n_oom = 0
    cdef double loss_sum = 0, lrow
    cdef int64_t pos, jg
    cdef int status, shift
    cdef floating lr = <floating> plan.learning_rate
    cdef floating rw = <floating> plan.reg_linear, rv = <floating> plan.reg_factors
    cdef const int64_t* op = plan.order
    cdef const int64_t* up = plan.users
    cdef const int64_t* ip = plan.items
    cdef const int64_t* negp = plan.negatives
    cdef floating* scratch
    cdef uint64_t* rng
    cdef Merged* buf
    cdef const uint64_t* bits
    cdef int64_t* cands
    cdef double* scores
    cdef Replica* rep
    cdef fmrec_lock merge_lock
    cdef EpochCounts counts
    lock_init(&merge_lock)
    with parallel(num_threads=plan.n_threads):
        # Per thread: q_u, q_i, q_j, spare (4k values); the RNG state on its own cache line.
        scratch = <floating*> malloc(4 * k * sizeof(floating))
        rng = <uint64_t*> malloc(8 * sizeof(uint64_t))
        buf = <Merged*> malloc(sizeof(Merged))
        # The negative sampler's batch: n_candidates draws and their scores.
        cands = <int64_t*> malloc(plan.n_candidates * sizeof(int64_t))
        scores = <double*> malloc(plan.n_candidates * sizeof(double))
        rep = NULL
        if copies_t is Replica:
            rep = <Replica*> malloc(sizeof(Replica))
            if rep != NULL and not start_replica(rep, plan.slot, plan.hot, plan.n_hot, w, V,
                                                 aw, aV, k):
                free(rep.own)
                free(rep.base)
                free(rep)
                rep = NULL
        if buf != NULL:
            buf.capacity = 0
            buf.cols = NULL
            buf.coef = NULL
        if rng != NULL:
            rng[0] = plan.seeds[threadid()]
        for t in prange(n, schedule="static"):
            if (scratch == NULL or rng == NULL or buf == NULL or cands == NULL or scores == NULL
                    or (copies_t is Replica and rep == NULL)):
                n_oom += 1
                continue
            prefetch_ahead(t, n, op, up, ip, Up, Ui, Ip, Ii, Sp, Si, plan.seen, V, aV, k)
            pos = op[t]
            jg = negp[pos] if negp != NULL else -1
            lrow = 0
            bits = user_bits(plan.seen, up[pos], &shift)
            status = train_positive(up[pos], ip[pos], jg, Up, Ui, Ux, Ip, Ii, Ix, Sp, Si,
                                    bits, shift, plan.n_items, plan.pop, w, V, aw, aV,
                                    <const copies_t*> rep, k, lr, plan.adagrad, rw, rv,
                                    plan.n_candidates, plan.max_draws, rng, scratch, buf,
                                    cands, scores, plan.one_hot, &lrow)
            if copies_t is Replica:
                rep.since_merge += 1
                if rep.since_merge >= plan.merge_every:
                    merge_replica(rep, w, V, aw, aV, k, &merge_lock)
            if status == DONE:
                loss_sum += lrow
                n_done += 1
            elif status == SKIPPED:
                n_skipped += 1
            elif status == NOT_FINITE:
                n_bad += 1
            else:
                n_oom += 1
        if rep != NULL:
            merge_replica(rep, w, V, aw, aV, k, &merge_lock)
            free(rep.own)
            free(rep.base)
            free(rep)
        free(scratch)
        free(rng)
        free(cands)
        free(scores)
        if buf != NULL:
            free(buf.cols)
            free(buf.coef)
            free(buf)
    lock_destroy(&merge_lock)
    counts.loss_sum = loss_sum
    counts.n_done, counts.n_skipped, counts.n_bad, counts.n_oom = n_done, n_skipped, n_bad, n_oom
    return counts


def bpr_epoch(const index_t[::1] U_indptr, const index_t[::1] U_indices,
              const floating[::1] U_data,
              const index_t[::1] I_indptr, const index_t[::1] I_indices,
              const floating[::1] I_data,
              const index_t[::1] seen_indptr, const index_t[::1] seen_indices,
              const int64_t[::1] users, const int64_t[::1] items, const int64_t[::1] negatives,
              const int64_t[::1] order, const double[::1] cdf,
              floating[::1] w, floating[:, ::1] V, floating[::1] acc_w, floating[:, ::1] acc_V,
              double learning_rate, bint adagrad, double reg_linear, double reg_factors,
              int n_candidates, int max_draws, const uint64_t[::1] seeds, int n_threads,
              bint one_hot=False, seen_bits=None, exact_of=None, exact_bits=None,
              hot_columns=None, Py_ssize_t merge_every=HOT_MERGE_EVERY):
    """One BPR pass over the positives ``(users[t], items[t])`` for t in ``order``.

    Each positive gets the negative ``negatives[t]`` when ``negatives`` is non-empty and that
    entry is >= 0, else one drawn for the positive's user: uniformly (``cdf`` empty) or from the
    cumulative distribution ``cdf``, rejecting the user's sorted row of ``seen`` and giving up
    after ``max_draws`` draws; with ``n_candidates`` > 1, the highest scoring of that many
    draws (``choose_negative``). Thread t draws from its own splitmix64 stream seeded by
    ``seeds[t]``.

    Updates w, V (and with ``adagrad`` their accumulators) in place. Returns
    (sum of -ln σ(d) before each step, steps taken, positives skipped for want of a
    negative, positives whose d was not finite). One thread gives exactly the sequential
    result; several share w and V without locks (Hogwild) and are not reproducible.

    ``one_hot`` (the caller's promise, see ``fmrec.solvers.bpr.is_one_hot``): every row of U
    and of I has exactly one non-zero, equal to 1, and no column is both a user and an item
    column. Such triples skip the row merging and the terms that cancel; the result is the
    same, bit for bit.

    ``seen_bits`` (optional, from ``seen_bitmap``): the items of ``seen`` as one row of bits
    per user, exact or a filter; a lookup then reads a bit and searches the row only when the
    bit of a filter is set. ``exact_of`` (optional, int64, one entry per user) gives users
    with many seen items the exact row ``exact_of[u]`` of ``exact_bits`` (``seen_bitmap`` of
    those users) instead, -1 for the others. Same result, bit for bit.

    ``hot_columns`` (optional, int64, distinct columns of w and V; general path only):
    columns each thread steps in its own copy, adding its changes to the shared parameters
    (and taking the other threads') every ``merge_every`` of its positives and at the end;
    see ``Replica``. One thread gets the same bits with or without them.
    """
    cdef Py_ssize_t n = order.shape[0], k = V.shape[1]
    cdef int64_t n_items = I_indptr.shape[0] - 1, pos
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
    cdef Popularity popularity
    cdef const Popularity* pop
    cdef const int64_t[::1] guide
    cdef floating* awp = &acc_w[0] if adagrad else NULL
    cdef floating* aVp = &acc_V[0, 0] if adagrad else NULL
    cdef const uint64_t[::1] bits_view
    cdef const uint64_t[::1] exact_view
    cdef const int64_t[::1] exact_of_view
    cdef SeenBits sb
    cdef Py_ssize_t n_users = seen_indptr.shape[0] - 1, n_exact
    cdef EpochPlan plan
    cdef EpochCounts counts
    cdef const int32_t[::1] slot_view
    cdef const int64_t[::1] hot_view
    cdef const int32_t* slot_of = NULL
    cdef const int64_t* hot = NULL
    cdef Py_ssize_t n_hot = 0
    if n_threads < 1:
        n_threads = 1
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
    if seeds.shape[0] < n_threads:
        raise ValueError(f"need {n_threads} seeds, got {seeds.shape[0]}")
    if negp != NULL and negatives.shape[0] != users.shape[0]:
        raise ValueError("negatives must be empty or aligned with users")
    guide = popularity_guide(cdf, n_items) if cdf.shape[0] > 0 else None
    pop = popularity_of(cdf, guide, &popularity)
    sb.rows = NULL
    sb.words = 0
    sb.shift = 0
    sb.exact_of = NULL
    sb.exact = NULL
    sb.exact_words = (n_items + 63) // 64
    if seen_bits is not None:
        bits_view = seen_bits
        if n_users > 0:
            sb.words = bits_view.shape[0] // n_users
        if bits_view.shape[0] != n_users * sb.words:
            raise ValueError("seen_bits must hold one row of words per user")
        sb.shift = seen_bits_shift(n_items, sb.words)
        if bits_view.shape[0] > 0:
            sb.rows = &bits_view[0]
    if (exact_of is None) != (exact_bits is None):
        raise ValueError("exact_of and exact_bits go together")
    if exact_of is not None:
        exact_of_view = exact_of
        exact_view = exact_bits
        n_exact = exact_view.shape[0] // sb.exact_words if sb.exact_words > 0 else 0
        if exact_of_view.shape[0] != n_users or exact_view.shape[0] != n_exact * sb.exact_words:
            raise ValueError("exact_of must hold one entry per user and exact_bits whole "
                             "rows of ceil(n_items / 64) words")
        for pos in range(n_users):
            if exact_of_view[pos] < -1 or exact_of_view[pos] >= n_exact:
                raise ValueError(f"exact_of[{pos}] = {exact_of_view[pos]} names no row")
        if n_users > 0:
            sb.exact_of = &exact_of_view[0]
        if exact_view.shape[0] > 0:
            sb.exact = &exact_view[0]
    if merge_every < 1:
        raise ValueError(f"merge_every must be >= 1, got {merge_every}")
    if hot_columns is not None and len(hot_columns) > 0:
        if one_hot:
            raise ValueError("hot_columns are for the general path (one_hot=False)")
        hot_arr = np.ascontiguousarray(hot_columns, dtype=np.int64)
        if hot_arr.min() < 0 or hot_arr.max() >= V.shape[0]:
            raise ValueError("hot_columns must be columns of V")
        slot_arr = np.full(V.shape[0], -1, dtype=np.int32)
        slot_arr[hot_arr] = np.arange(len(hot_arr), dtype=np.int32)
        if (slot_arr >= 0).sum() != len(hot_arr):
            raise ValueError("hot_columns must be distinct")
        hot_view = hot_arr
        slot_view = slot_arr
        hot = &hot_view[0]
        slot_of = &slot_view[0]
        n_hot = hot_view.shape[0]
    if n == 0:
        return 0.0, 0, 0, 0

    plan.n, plan.k, plan.n_items = n, k, n_items
    plan.order, plan.users, plan.items, plan.negatives = op, up, ip, negp
    plan.seen, plan.pop = &sb, pop
    plan.learning_rate, plan.reg_linear, plan.reg_factors = learning_rate, reg_linear, reg_factors
    plan.adagrad, plan.one_hot = adagrad, one_hot
    plan.n_candidates, plan.max_draws, plan.n_threads = n_candidates, max_draws, n_threads
    plan.seeds = &seeds[0]
    plan.slot, plan.hot, plan.n_hot, plan.merge_every = slot_of, hot, n_hot, merge_every
    # Two compiled loops: with the copies' lookups and merges in the same loop, one thread's
    # one-hot epoch took 1.5% more instructions (86.4M against 85.1M on MovieLens 100K).
    if n_hot == 0:
        counts = run_epoch(<const NoCopies*> NULL, &plan, Up, Ui, Ux, Ip, Ii, Ix, Sp, Si,
                           &w[0], &V[0, 0], awp, aVp)
    else:
        counts = run_epoch(<const Replica*> NULL, &plan, Up, Ui, Ux, Ip, Ii, Ix, Sp, Si,
                           &w[0], &V[0, 0], awp, aVp)
    if counts.n_oom:
        raise MemoryError("BPR thread scratch")
    return counts.loss_sum, counts.n_done, counts.n_skipped, counts.n_bad


def sample_negatives(const index_t[::1] seen_indptr, const index_t[::1] seen_indices,
                     const int64_t[::1] users, int64_t n_items, const double[::1] cdf,
                     uint64_t seed, int max_draws):
    """The kernel's negative sampler on its own (one thread): one item per entry of ``users``.

    Same rules as ``bpr_epoch`` with one candidate; -1 where it gave up.
    """
    cdef Py_ssize_t n = users.shape[0], t
    cdef int64_t u
    cdef uint64_t state = seed
    cdef Popularity popularity
    cdef const Popularity* pop
    cdef const int64_t[::1] guide
    cdef const index_t* Si = index_ptr(seen_indices)
    out = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] o = out
    guide = popularity_guide(cdf, n_items) if cdf.shape[0] > 0 else None
    pop = popularity_of(cdf, guide, &popularity)
    with nogil:
        for t in range(n):
            u = users[t]
            o[t] = draw_negative(&state, Si + seen_indptr[u],
                                 seen_indptr[u + 1] - seen_indptr[u], NULL, 0, n_items,
                                 pop, max_draws)
    return out


def popularity_guide(const double[::1] cdf, int64_t n_items):
    """``draw_item``'s guide to ``cdf``: entry b is the first item whose cumulative
    probability exceeds b / n_items (the last item if none does).

    Refuses a ``cdf`` without one entry per item, or not finite and non-decreasing.
    """
    c = np.asarray(cdf)
    if c.shape[0] != n_items:
        raise ValueError("cdf must be empty or have one entry per item")
    if not np.isfinite(c).all() or (np.diff(c) < 0).any():
        raise ValueError("cdf must be finite and non-decreasing")
    starts = np.arange(n_items, dtype=np.float64) / n_items
    return np.minimum(np.searchsorted(c, starts, side="right"), n_items - 1).astype(np.int64)


def seen_bits_shift(int64_t n_items, Py_ssize_t words) -> int:
    """The shift of ``seen_bit`` for rows of ``words`` uint64 words: 0 for exact rows of
    ``ceil(n_items / 64)`` words, else (a filter) ``words`` must be a smaller power of two."""
    cdef Py_ssize_t exact = (n_items + 63) // 64
    cdef int log2 = 0
    if words == exact:
        return 0
    if words < 1 or words > exact or words & (words - 1):
        raise ValueError(f"seen_bits rows must hold ceil(n_items / 64) = {exact} words or a "
                         f"smaller power of two, got {words}")
    while (<Py_ssize_t> 1) << log2 < words:
        log2 += 1
    return 58 - log2  # 64 - log2(bits per row)


def seen_bitmap(const index_t[::1] seen_indptr, const index_t[::1] seen_indices,
                int64_t n_items, words=None, users=None):
    """The rows of ``seen`` (CSR, users × items) as bits, ``words`` uint64 words per user
    (row r from ``r * words``), item j setting bit ``b % 64`` of word ``b // 64`` for
    ``b = seen_bit(j, shift)``.

    By default ``words = ceil(n_items / 64)`` and the rows are exact (b = j). A smaller
    power of two makes each row a filter of ``64 * words`` bits: a clear bit proves an item
    unseen, a set one may be a collision. ``users`` (int64, optional): the rows of these
    users only, in this order (row r is user ``users[r]``'s).
    """
    cdef Py_ssize_t n_users = seen_indptr.shape[0] - 1
    cdef Py_ssize_t nw = (n_items + 63) // 64 if words is None else words
    cdef int shift = seen_bits_shift(n_items, nw)
    cdef Py_ssize_t r, u, p
    cdef uint64_t b
    chosen_arr = (np.arange(n_users, dtype=np.int64) if users is None
                  else np.ascontiguousarray(users, dtype=np.int64))
    if len(chosen_arr) and (chosen_arr.min() < 0 or chosen_arr.max() >= n_users):
        raise ValueError("users must be rows of seen")
    cdef const int64_t[::1] chosen = chosen_arr
    out = np.zeros(chosen.shape[0] * nw, dtype=np.uint64)
    cdef uint64_t[::1] bits = out
    with nogil:
        for r in range(chosen.shape[0]):
            u = chosen[r]
            for p in range(seen_indptr[u], seen_indptr[u + 1]):
                b = seen_bit(seen_indices[p], shift)
                bits[r * nw + (b >> 6)] |= (<uint64_t> 1) << (b & 63)
    return out
