# FM prediction over many CSR rows, parallel over rows.
from cython.parallel cimport parallel, prange
from libc.stdlib cimport malloc, free

from fmrec._kernels._common cimport floating, index_t, row_predict


def predict(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data,
            double w0, const floating[::1] w, const floating[:, ::1] V,
            floating[::1] out, int n_threads):
    """Write the FM output of every row of a CSR matrix into ``out``."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, k = V.shape[1], i
    cdef floating* scratch
    cdef const floating* Vp = &V[0, 0]
    cdef const floating* wp = &w[0]
    with nogil, parallel(num_threads=n_threads):
        scratch = <floating*> malloc(2 * k * sizeof(floating))
        for i in prange(n, schedule="static"):
            out[i] = row_predict(&indices[0] + indptr[i], &data[0] + indptr[i],
                                 indptr[i + 1] - indptr[i], <floating> w0, wp, Vp, k,
                                 scratch, scratch + k)
        free(scratch)
