"""Similarity search over a group's vector features: exact, kd-tree and LSH indexes.

``FeatureGroup.create_index`` defines an index (published by the next commit),
``FeatureGroup.search`` / ``search_radius`` query it and ``evaluate_index`` measures its
recall against exact search.  See docs/index.md.
"""

from mmfs.index.lsh import KINDS, LSH_METRICS, IndexDef, codes_of, projections

__all__ = ["KINDS", "LSH_METRICS", "IndexDef", "codes_of", "projections"]
