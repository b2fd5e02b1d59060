"""Thread counts and build information: the one home for both.

``n_threads=None`` everywhere in mmfs means "every core this process may use": the CPU
affinity mask and a cgroup CPU quota are respected, and ``OMP_NUM_THREADS`` wins when set.
A serial build (no OpenMP) always reports 1.
"""

from __future__ import annotations

import functools
import os
import platform
import sys

from mmfs._kernels import _config as _kconfig
from mmfs.errors import ParameterError

__all__ = ["effective_n_threads", "show_config", "threads_for", "usable_cpu_count"]

# Below this many inner-loop operations a kernel runs on the calling thread: waking
# OpenMP workers costs more than it saves (hnswlib does the same for small batches).
PARALLEL_GRAIN = 1 << 20


@functools.cache
def _cgroup_cpu_limit() -> int | None:
    """CPUs allowed by a cgroup v2 quota (containers), or None when unlimited/unknown.
    Read once per process: a batch read asks for its thread count every call, and
    opening the file cost 40 us."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, int(int(quota) // int(period)))


def usable_cpu_count() -> int:
    """Cores this process may run on: affinity mask, then cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return min(n, limit) if limit else n


def effective_n_threads(n_threads: int | None = None) -> int:
    """Resolve a user's ``n_threads`` to the number of OpenMP threads a kernel gets.

    The argument is checked the same way in a serial build, which then always says 1."""
    if n_threads is not None:
        if isinstance(n_threads, bool) or not isinstance(n_threads, int):
            raise ParameterError(f"n_threads must be an int or None, got {n_threads!r}")
        if n_threads == 0:
            raise ParameterError("n_threads=0 is not a thread count; use None for all cores")
    if not _kconfig.openmp_enabled():
        return 1
    if n_threads is None:
        env = os.environ.get("OMP_NUM_THREADS")
        if env:
            return max(1, _kconfig.omp_max_threads())
        return usable_cpu_count()
    if n_threads < 0:  # -1 all cores, -2 all but one, as in scikit-learn
        return max(1, usable_cpu_count() + 1 + n_threads)
    return n_threads


def threads_for(n_threads: int, work: int) -> int:
    """The threads a kernel should use for `work` inner-loop operations."""
    return 1 if work < PARALLEL_GRAIN else n_threads


def show_config(file=None) -> dict[str, object]:
    """Print (and return) versions, compiler flags, OpenMP status and thread count."""
    import numpy as np
    import scipy

    import mmfs

    info: dict[str, object] = {
        "mmfs": mmfs.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "openmp": _kconfig.openmp_enabled(),
        "threads": effective_n_threads(None),
        "usable_cpus": usable_cpu_count(),
        "build_flags": _kconfig.build_flags(),
    }
    out = file if file is not None else sys.stdout
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}", file=out)
    return info
