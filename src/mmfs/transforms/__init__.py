"""Query-time transformations: fitted, versioned, applied during retrieval.

The store keeps raw features and serves transformed ones, with the same fitted
parameters and the same code in training sets, online reads and scoring workers:

- Built-in transforms with scikit-learn's semantics (:class:`StandardScaler`,
  :class:`MinMaxScaler`, :class:`MaxAbsScaler`, :class:`RobustScaler`,
  :class:`Normalizer`, :class:`SimpleImputer`, :class:`OneHotEncoder`,
  :class:`OrdinalEncoder`, :class:`KBinsDiscretizer`, :class:`QuantileTransformer`,
  :class:`Log1p`, :class:`Clip`, :class:`PolynomialFeatures`) and :class:`Pipeline` /
  :class:`Columns` to compose them.  Each is plain data (JSON options and numpy
  parameters); :func:`from_sklearn` and ``.to_sklearn()`` convert fitted estimators.
- ``store.transforms`` (:class:`~mmfs.transforms.catalog.TransformCatalog`) fits them on
  a group's data at a pinned version and stores them as ``name@1``, ``name@2``...
- ``group.get(..., transform="name@2")``, ``store.training_set(..., transform=...)`` and
  ``mmfs.score(..., transform=...)`` apply them; affine ones inside the read kernel.
- :func:`transform` registers a custom vectorised function; serving checks its code
  fingerprint against the stored one.

docs/transforms.md is the user guide.
"""

from mmfs.transforms._base import Affine, Transform, apply_affine, from_state
from mmfs.transforms._compose import Columns, Pipeline, from_sklearn
from mmfs.transforms._encoders import (
    KBinsDiscretizer,
    OneHotEncoder,
    OrdinalEncoder,
    QuantileTransformer,
)
from mmfs.transforms._numeric import (
    Clip,
    Log1p,
    MaxAbsScaler,
    MinMaxScaler,
    Normalizer,
    PolynomialFeatures,
    RobustScaler,
    SimpleImputer,
    StandardScaler,
)
from mmfs.transforms.catalog import StoredTransform, TransformCatalog
from mmfs.transforms.custom import (
    CustomTransform,
    registered_transforms,
    transform,
    unregister_transform,
)

__all__ = [
    "Affine",
    "Clip",
    "Columns",
    "CustomTransform",
    "KBinsDiscretizer",
    "Log1p",
    "MaxAbsScaler",
    "MinMaxScaler",
    "Normalizer",
    "OneHotEncoder",
    "OrdinalEncoder",
    "Pipeline",
    "PolynomialFeatures",
    "QuantileTransformer",
    "RobustScaler",
    "SimpleImputer",
    "StandardScaler",
    "StoredTransform",
    "Transform",
    "TransformCatalog",
    "apply_affine",
    "from_sklearn",
    "from_state",
    "registered_transforms",
    "transform",
    "unregister_transform",
]
