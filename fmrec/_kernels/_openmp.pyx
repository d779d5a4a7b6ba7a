# Reports whether the kernels were compiled with OpenMP.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fmrec_openmp_enabled(void) { return 1; }
    static int fmrec_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int fmrec_openmp_enabled(void) { return 0; }
    static int fmrec_max_threads(void) { return 1; }
    #endif
    """
    int fmrec_openmp_enabled() nogil
    int fmrec_max_threads() nogil


def openmp_enabled() -> bool:
    """True when the compiled kernels can run on several threads."""
    return bool(fmrec_openmp_enabled())


def max_threads() -> int:
    """OpenMP's default thread count (1 without OpenMP)."""
    return fmrec_max_threads()
