"""Build the Cython kernels.  Metadata lives in pyproject.toml; this file only declares the
extensions and the build switches:

  MMFS_DEBUG=1     bounds/wraparound/initialisation checks back on, -O0 -g
  MMFS_COVERAGE=1  Cython line tracing (for kernel coverage runs)
  MMFS_NATIVE=1    add -march=native.  Off by default on purpose: a wheel built with it
                   dies with SIGILL on an older CPU (annoy and hnswlib shipped such wheels).
                   The hot loops already carry an AVX2/FMA clone chosen at run time, so
                   this switch only helps on machines newer than Haswell.
  MMFS_NO_OPENMP=1 build serial even where OpenMP works.

OpenMP is probed by compiling and linking a tiny omp.h program with the real compiler;
if that fails the build warns loudly and the kernels run on one thread.
"""

import os
import subprocess
import sys
import sysconfig
import tempfile
import textwrap

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = ["_config", "_dense", "_select", "_sparse", "_bits", "_hash", "_store", "_assign", "_lsh"]


def _flag(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0", "false", "no")


def _openmp_flags() -> list[str]:
    """Compile and link a small OpenMP program; return the flags that made it work."""
    if _flag("MMFS_NO_OPENMP"):
        return []
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    program = textwrap.dedent(
        """
        #include <omp.h>
        int main(void) { int n = 0;
        #pragma omp parallel reduction(+:n)
          n += 1;
          return n == omp_get_max_threads() ? 0 : 1; }
        """
    )
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as fh:
            fh.write(program)
        cmd = [*cc.split(), "-fopenmp", src, "-o", os.path.join(tmp, "probe")]
        try:
            ok = subprocess.run(cmd, capture_output=True, check=False).returncode == 0
        except OSError:
            ok = False
    if not ok:
        print(
            "\n" + "*" * 72 + "\nWARNING: mmfs could not compile an OpenMP program with "
            f"{cc!r}.\nThe kernels will be built SERIAL (one thread). Install a compiler "
            "with OpenMP\n(gcc, or clang with libomp) for parallel kernels.\n" + "*" * 72,
            file=sys.stderr,
        )
        return []
    return ["-fopenmp"]


def extensions() -> list[Extension]:
    debug = _flag("MMFS_DEBUG")
    omp = _openmp_flags()
    compile_args = ["-O0", "-g"] if debug else ["-O3"]
    compile_args += ["-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
    if _flag("MMFS_NATIVE"):
        compile_args.append("-march=native")
    macros = [
        ("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION"),
        ("MMFS_OPENMP", "1" if omp else "0"),
        ("MMFS_BUILD_FLAGS", '"' + " ".join(compile_args + omp) + '"'),
    ]
    if _flag("MMFS_COVERAGE"):
        macros.append(("CYTHON_TRACE_NOGIL", "1"))
    return [
        Extension(
            f"mmfs._kernels.{name}",
            [f"src/mmfs/_kernels/{name}.pyx"],
            include_dirs=[np.get_include(), "src/mmfs/_kernels"],
            define_macros=macros,
            extra_compile_args=compile_args + omp,
            extra_link_args=omp,
        )
        for name in KERNELS
    ]


directives = {
    "language_level": 3,
    "boundscheck": _flag("MMFS_DEBUG"),
    "wraparound": _flag("MMFS_DEBUG"),
    "initializedcheck": _flag("MMFS_DEBUG"),
    "cdivision": True,
    "embedsignature": True,
    "linetrace": _flag("MMFS_COVERAGE"),
}

setup(
    ext_modules=cythonize(extensions(), compiler_directives=directives),
)
