# cython: freethreading_compatible = True
"""What the kernels were built with: OpenMP on/off, its thread count, compiler flags."""

cdef extern from *:
    """
    #if MMFS_OPENMP
    #include <omp.h>
    static int mmfs_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int mmfs_omp_max_threads(void) { return 1; }
    #endif
    static const char *mmfs_build_flags(void) { return MMFS_BUILD_FLAGS; }
    static int mmfs_openmp_built(void) { return MMFS_OPENMP; }
    """
    int mmfs_omp_max_threads()
    const char *mmfs_build_flags()
    int mmfs_openmp_built()


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(mmfs_openmp_built())


def omp_max_threads():
    """OpenMP's own default thread count (honours OMP_NUM_THREADS); 1 in a serial build."""
    return mmfs_omp_max_threads()


def build_flags():
    """The compiler flags the kernels were built with."""
    return mmfs_build_flags().decode()
