"""The mmfs exception hierarchy.

Every error mmfs raises derives from :class:`MmfsError` and, where one fits, from the
builtin exception a caller already catches (``except ValueError`` keeps working).  A
message says what was expected, what arrived and, where it helps, what to do.
"""

from __future__ import annotations

__all__ = [
    "CorruptStoreError",
    "DimensionError",
    "DuplicateSeedError",
    "ExperimentError",
    "FormatError",
    "LayerFullError",
    "LayerOverlapError",
    "LockedError",
    "MemoryBudgetError",
    "MetricError",
    "MissingDependencyError",
    "MmfsError",
    "NestingCycleError",
    "NotFoundError",
    "ParameterError",
    "ReadOnlyError",
    "ScoringError",
    "StoreClosedError",
    "TransformError",
    "TransformSkewError",
    "WeightsError",
    "WorkerDiedError",
]


class MmfsError(Exception):
    """Base class of every error raised by mmfs."""


class ParameterError(MmfsError, ValueError):
    """An argument has the wrong value (k <= 0, a negative radius, an unknown option)."""


class DimensionError(ParameterError):
    """Array shapes do not fit together (wrong ndim, mismatched dimensions)."""


class MetricError(ParameterError):
    """An unknown metric, or a metric parameter (p, V, VI, w) that is missing or invalid."""


class NotFoundError(MmfsError, KeyError):
    """A named thing (group, feature, version, tag, registered metric) does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class FormatError(MmfsError, ValueError):
    """A file is not an mmfs file of a format version this build can read."""


class CorruptStoreError(FormatError):
    """A file claims to be an mmfs file but its contents fail their checksum or bounds."""


class MemoryBudgetError(MmfsError, MemoryError):
    """A request would take the process over its memory budget; nothing was allocated."""


class StoreClosedError(MmfsError, RuntimeError):
    """The store was used after close(), or closed while views into it were alive."""


class LockedError(MmfsError, TimeoutError):
    """Another writer holds the store's writer lock (and the timeout ran out)."""


class ReadOnlyError(MmfsError, PermissionError):
    """A write to a store opened read-only (mode="r")."""


class MissingDependencyError(MmfsError, ImportError):
    """An optional dependency (torch, pyarrow, pandas) that a method needs is missing."""


class ScoringError(MmfsError, RuntimeError):
    """A batch failed in a scoring worker; the message holds the worker's traceback."""


class WorkerDiedError(ScoringError):
    """A scoring worker process died (killed, crashed) before returning its batch."""


class TransformError(MmfsError, ValueError):
    """A transform cannot be fitted or applied: an unknown category it was told to refuse,
    a custom function that is not registered in this process, a width that does not fit."""


class TransformSkewError(TransformError):
    """A custom transform's registered code differs from the code its stored version was
    fitted with: serving it would skew against training, so mmfs refuses."""


class ExperimentError(MmfsError, ValueError):
    """An experiment definition or change that mmfs refuses (each kind below has its own
    subclass, so a caller can tell them apart)."""


class WeightsError(ExperimentError):
    """Variant weights that are not percentages in steps of 0.01 summing exactly to 100."""


class LayerOverlapError(ExperimentError):
    """A slot range that overlaps another experiment's, or the holdout, in one layer (or
    one GrowthBook namespace): the layer's experiments would no longer exclude each other."""


class LayerFullError(ExperimentError):
    """A layer has not enough free traffic left for the coverage asked for."""


class DuplicateSeedError(ExperimentError):
    """A seed another experiment or layer already uses: their assignments would be
    correlated instead of independent."""


class NestingCycleError(ExperimentError):
    """Experiments and layers nested inside each other in a cycle."""
