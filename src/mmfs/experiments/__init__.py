"""Experiments: deterministic, vectorised assignment of entities to arms.

``store.experiments`` (:class:`ExperimentCatalog`) creates, ramps, restarts and stops
experiments and layers, kept in the store's manifest and versioned with it;
:meth:`Experiment.assign` gives the arm of millions of keys per call;
``group.get(keys, features, experiment=name)`` serves each key its arm's variant.
:func:`srm_test` checks a split; :mod:`.hashing` has the hash functions themselves
(MurmurHash3, bit-exact with mmh3, and GrowthBook's).  docs/experiments.md has the
whole model.
"""

from mmfs.experiments.catalog import Experiment, ExperimentCatalog
from mmfs.experiments.exposure import to_frame
from mmfs.experiments.hashing import growthbook_hash, murmur3_32, murmur3_128, slots
from mmfs.experiments.stats import SRMResult, srm_test

__all__ = [
    "Experiment",
    "ExperimentCatalog",
    "SRMResult",
    "growthbook_hash",
    "murmur3_32",
    "murmur3_128",
    "slots",
    "srm_test",
    "to_frame",
]
