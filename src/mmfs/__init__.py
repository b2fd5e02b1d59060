"""mmfs: an embedded, memory-mapped feature database for machine learning.

The vector layer is available now: :func:`cdist` (scipy-compatible pairwise distances,
dense and CSR), exact :func:`knn` and :func:`radius` search, and custom metrics through
:func:`register_metric`.  :func:`show_config` reports how the kernels were built.
"""

from mmfs import errors
from mmfs._config import effective_n_threads, show_config
from mmfs.distance import METRICS, cdist, register_metric, registered_metrics, unregister_metric
from mmfs.errors import (
    CorruptStoreError,
    DimensionError,
    FormatError,
    LockedError,
    MemoryBudgetError,
    MetricError,
    MmfsError,
    NotFoundError,
    ParameterError,
    StoreClosedError,
)
from mmfs.neighbors import knn, radius

__version__ = "0.1.0"

__all__ = [
    "METRICS",
    "CorruptStoreError",
    "DimensionError",
    "FormatError",
    "LockedError",
    "MemoryBudgetError",
    "MetricError",
    "MmfsError",
    "NotFoundError",
    "ParameterError",
    "StoreClosedError",
    "__version__",
    "cdist",
    "effective_n_threads",
    "errors",
    "knn",
    "radius",
    "register_metric",
    "registered_metrics",
    "show_config",
    "unregister_metric",
]
