"""mmfs: an embedded, memory-mapped feature database for machine learning.

A store is a directory of memory-mapped files: :func:`open` it, create feature groups
with a schema of :func:`scalar`, :func:`category`, :func:`dense` and :func:`sparse`
features, write, commit, and read :class:`FeatureBatch` results in microseconds from
any number of processes.  The vector layer: :func:`cdist` (scipy-compatible pairwise
distances, dense and CSR), exact :func:`knn` and :func:`radius` search, and custom
metrics through :func:`register_metric`.  :func:`show_config` reports how the kernels
were built.
"""

from mmfs import errors, experiments, transforms
from mmfs._config import effective_n_threads, show_config
from mmfs.distance import METRICS, cdist, register_metric, registered_metrics, unregister_metric
from mmfs.errors import (
    CorruptStoreError,
    DimensionError,
    FormatError,
    LockedError,
    MemoryBudgetError,
    MetricError,
    MissingDependencyError,
    MmfsError,
    NotFoundError,
    ParameterError,
    ReadOnlyError,
    ScoringError,
    StoreClosedError,
    TransformError,
    TransformSkewError,
    WorkerDiedError,
)
from mmfs.featurebatch import FeatureBatch
from mmfs.group import FeatureGroup
from mmfs.lineage import register_function, registered_functions
from mmfs.neighbors import knn, radius
from mmfs.schema import category, dense, scalar, sparse
from mmfs.scoring import Scorer, score
from mmfs.store import Store, Version, open
from mmfs.training import TrainingSet
from mmfs.transforms import transform

__version__ = "0.1.0"

__all__ = [
    "METRICS",
    "CorruptStoreError",
    "DimensionError",
    "FeatureBatch",
    "FeatureGroup",
    "FormatError",
    "LockedError",
    "MemoryBudgetError",
    "MetricError",
    "MissingDependencyError",
    "MmfsError",
    "NotFoundError",
    "ParameterError",
    "ReadOnlyError",
    "Scorer",
    "ScoringError",
    "Store",
    "StoreClosedError",
    "TrainingSet",
    "TransformError",
    "TransformSkewError",
    "Version",
    "WorkerDiedError",
    "__version__",
    "category",
    "cdist",
    "dense",
    "effective_n_threads",
    "errors",
    "experiments",
    "knn",
    "open",
    "radius",
    "register_function",
    "register_metric",
    "registered_functions",
    "registered_metrics",
    "scalar",
    "score",
    "show_config",
    "sparse",
    "transform",
    "transforms",
    "unregister_metric",
]
