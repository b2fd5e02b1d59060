"""The store's transform catalog: ``store.transforms``.

A stored transform is a fitted transform with a name and a version number, bound to one
feature group and an ordered list of its features (its inputs).  ``fit`` computes the
parameters from the group's data at a pinned store version, so a refit at the same
version gives the same parameters; every fit or add under a name gets the next version
(``scale@1``, ``scale@2``, ...).  A stored version never changes.

On disk (``<store>/transforms/<name>/v<n>/``, published by renaming a finished temporary
directory, so a reader sees a version whole or not at all):

  ``transform.mmfs``       an mmfs JSON document (kind META, checksummed): name,
                           version, group, input features with their types, the store
                           version fitted at, created time, description, and the
                           transform's state (kind, options, input width, and per
                           parameter array either an array file or a list of strings)
  ``p-<param>.mmfs``       one mmfs array file per numeric parameter array

Nothing is unpickled or executed when a transform is loaded: a custom transform stores
only its function's name, version and code fingerprint (see
:mod:`mmfs.transforms.custom`).

Pins.  Each input feature's metadata in the group's manifest entry records, per transform
name, the version pinned to it (``describe("users.age")["transforms"]``); ``fit`` and
``add`` pin the new version (``pin=False`` does not) and the next commit publishes the
pin, like any metadata.  A read that names a transform without a version uses the version
pinned at the store version it reads, so a refit never changes what an old version
serves.  Pinning raises the group's definition version.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mmfs.errors import (
    CorruptStoreError,
    FormatError,
    NotFoundError,
    ParameterError,
    TransformError,
)
from mmfs.schema import Category, Dense, FeatureType, Scalar, Sparse, feature_from_json
from mmfs.storage.fileformat import open_array, read_json_file, write_array_file, write_json_file
from mmfs.transforms._base import Transform, from_state
from mmfs.transforms._compose import expands, from_sklearn
from mmfs.transforms.custom import CustomTransform

if TYPE_CHECKING:  # pragma: no cover
    from mmfs.store import Store

__all__ = ["StoredTransform", "TransformCatalog", "input_matrix", "outputs"]

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_VERSION_DIR = re.compile(r"v([1-9][0-9]*)\Z")


@dataclass(frozen=True, eq=False)
class StoredTransform:
    """One stored version of a transform (see the module docstring).  The catalog loads
    each version once per store object, so identity is equality (and hashing it, in
    every transformed read's plan key, costs nothing)."""

    name: str
    version: int
    group: str
    features: tuple[str, ...]
    types: tuple[FeatureType, ...]  # the input features' types when it was fitted
    transform: Transform
    fitted_at: int | None  # the store version its parameters came from (None: imported)
    created_ns: int
    description: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def __repr__(self) -> str:
        where = f"{self.group}{list(self.features)}"
        return f"<StoredTransform {self.ref} {self.transform.kind} on {where}>"

    def describe(self) -> dict[str, Any]:
        t = self.transform
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "kind": t.kind,
            "options": t.options,
            "group": self.group,
            "features": list(self.features),
            "fitted_at": self.fitted_at,
            "created": np.datetime64(self.created_ns, "ns"),
            "description": self.description,
        }


def outputs(st: StoredTransform) -> list[tuple[str, FeatureType]]:
    """The features a stored transform adds to a read, in order, with their types.

    A column-wise transform gives one output per input feature, ``feature:name``: a
    scalar for a scalar or category input (unless it is one-hot encoded), a vector
    otherwise; a transform that mixes its inputs (polynomial features, a column
    transformer, a custom function) gives one, ``name``.  Values are float64 where the
    input is a float64, int64 or bool scalar (any input, for one output), else float32.
    An input column that the transform drops (an imputer's all-NaN column) gives none.
    """
    t = st.transform
    wide = [isinstance(ty, Scalar) and ty.dtype != "float32" for ty in st.types]
    if isinstance(t, CustomTransform) or not t.columnwise:
        dt = "float64" if any(wide) else "float32"
        w = t.n_outputs()
        vector = t.options.get("vector", True) if isinstance(t, CustomTransform) else True
        return [(st.name, Dense(w, dt) if vector else Scalar(dt))]  # type: ignore[arg-type]
    widths = t.out_widths()
    out: list[tuple[str, FeatureType]] = []
    col = 0
    for f, ty, w64 in zip(st.features, st.types, wide, strict=True):
        w = sum(widths[col : col + ty.width])
        col += ty.width
        dt = "float64" if w64 else "float32"
        if w == 0:
            continue
        scalar_in = isinstance(ty, Scalar | Category)
        out.append(
            (f"{f}:{st.name}", Scalar(dt) if scalar_in and not expands(t) else Dense(w, dt))  # type: ignore[arg-type]
        )
    return out


def input_matrix(arrays: list[Any], types: list[FeatureType], categorical: bool) -> np.ndarray:
    """The (n, columns) input of a transform from its input features' values (as
    FeatureBatch gives them): float32 when every input is float32, float64 otherwise;
    categories as an object array (categorical transforms only)."""
    n = len(arrays[0])
    if any(isinstance(t, Category) for t in types):
        if not categorical or not all(isinstance(t, Category) for t in types):
            raise TransformError(
                "category features go to encoders (one-hot, ordinal) only, and an encoder's "
                "inputs are all categories or all numeric"
            )
        out = np.empty((n, len(arrays)), dtype=object)
        for j, a in enumerate(arrays):
            out[:, j] = a
        return out
    f32 = all(
        (isinstance(t, Scalar) and t.dtype == "float32")
        or (isinstance(t, Dense) and t.dtype in ("float32", "float16", "int8"))
        for t in types
    )
    cols = [np.asarray(a).reshape(n, -1) for a in arrays]
    return np.concatenate(cols, axis=1).astype(np.float32 if f32 else np.float64, copy=False)


class TransformCatalog:
    """``store.transforms``: fit, add, list, describe, load and pin stored transforms."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._loaded: dict[tuple[str, int], StoredTransform] = {}

    @property
    def _root(self) -> str:
        return os.path.join(self._store.path, "transforms")

    # -- writing -------------------------------------------------------------------------

    def fit(
        self,
        name: str,
        group: Any,
        features: Any,
        spec: Any,
        *,
        version: int | str | None = None,
        pin: bool = True,
        description: str = "",
    ) -> StoredTransform:
        """Fit ``spec`` (a transform such as ``mmfs.transforms.StandardScaler()``, a list
        of them for a pipeline, or a registered custom function) on ``features`` of
        ``group`` as store version ``version`` (default: the newest committed) had them,
        and store it as the next version of ``name``."""
        store = self._store
        store._check_writable()
        _check_name(name)
        gname = group if isinstance(group, str) else getattr(group, "name", group)
        v = store.generation if version is None else store.version(version)
        g = store.group(gname, version=v)
        feats, types = self._inputs(g.schema, features)
        if isinstance(spec, list | tuple):
            from mmfs.transforms._compose import Pipeline

            spec = Pipeline(list(spec))
        snap = store._version_snapshot(gname, v)
        keys = snap.committed_keys()
        if len(keys) == 0:
            raise ParameterError(f"group {gname!r} has no rows at version {v} to fit on")
        batch = g.get(keys, list(feats))
        arrays = [batch[f] for f in feats]
        if isinstance(spec, Transform):
            fitted = spec.fit(input_matrix(arrays, list(types), spec.categorical))
        else:
            fitted = CustomTransform.of(spec, len(feats))
            _probe_custom(fitted, arrays)
        return self._save(name, gname, feats, types, fitted, v, pin, description)

    def add(
        self,
        name: str,
        group: Any,
        features: Any,
        transform: Any,
        *,
        pin: bool = True,
        description: str = "",
    ) -> StoredTransform:
        """Store an already fitted transform (an mmfs transform, a fitted scikit-learn
        estimator, Pipeline or ColumnTransformer of supported steps) as the next version
        of ``name``, over ``features`` of ``group``."""
        store = self._store
        store._check_writable()
        _check_name(name)
        gname = group if isinstance(group, str) else getattr(group, "name", group)
        feats, types = self._inputs(store.group(gname).schema, features)
        if not isinstance(transform, Transform):
            transform = from_sklearn(transform)
        if not transform.fitted:
            raise ParameterError(f"{transform!r} is not fitted: fit it, or use transforms.fit")
        width = sum(t.width for t in types)
        if transform.n_features_in != width:
            raise ParameterError(
                f"{transform.kind} takes {transform.n_features_in} columns; the features "
                f"{list(feats)} have {width}"
            )
        return self._save(name, gname, feats, types, transform, None, pin, description)

    def pin(self, ref: str) -> StoredTransform:
        """Pin ``name@version`` to its input features (published by the next commit)."""
        st = self.get(ref)
        self._pin(st)
        return st

    def _inputs(
        self, schema: dict[str, FeatureType], features: Any
    ) -> tuple[tuple[str, ...], tuple[FeatureType, ...]]:
        feats = (features,) if isinstance(features, str) else tuple(features)
        if not feats or len(set(feats)) != len(feats):
            raise ParameterError(f"features must name distinct features, got {features!r}")
        for f in feats:
            if f not in schema:
                raise NotFoundError(f"no feature {f!r}; the group has {list(schema)}")
            if isinstance(schema[f], Sparse):
                raise ParameterError(f"feature {f!r} is sparse: transforms take dense inputs")
        return feats, tuple(schema[f] for f in feats)

    def _save(
        self,
        name: str,
        group: str,
        feats: tuple[str, ...],
        types: tuple[FeatureType, ...],
        t: Transform,
        fitted_at: int | None,
        pin: bool,
        description: str,
    ) -> StoredTransform:
        if not isinstance(description, str):
            raise ParameterError(f"description must be a str, got {description!r}")
        doc, arrays = t.to_state()
        stored: dict[str, Any] = {}
        files: dict[str, np.ndarray] = {}
        for key, arr in arrays.items():
            if arr.dtype.kind == "U":
                stored[key] = {"strings": arr.reshape(-1).tolist(), "shape": list(arr.shape)}
            else:  # mmfs array files hold 1 to 4 dimensions: 0-d ones go as one value
                stored[key] = {"file": f"p-{key}.mmfs", "shape": list(arr.shape)}
                files[key] = arr.reshape(-1) if arr.ndim == 0 else arr
        version = max(self.versions(name), default=0) + 1
        created = time.time_ns()
        meta = {
            "format": "mmfs-transform",
            "name": name,
            "version": version,
            "group": group,
            "features": [[f, ty.to_json()] for f, ty in zip(feats, types, strict=True)],
            "fitted_at": fitted_at,
            "created_ns": created,
            "description": description,
            "state": doc,
            "arrays": stored,
        }
        final = os.path.join(self._root, name, f"v{version}")
        tmp = final + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        durable = self._store._durable
        try:
            for key, arr in files.items():
                write_array_file(os.path.join(tmp, f"p-{key}.mmfs"), arr, "META", durable=durable)
            write_json_file(os.path.join(tmp, "transform.mmfs"), meta, "META", durable=durable)
            os.rename(tmp, final)  # the publication point
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        st = StoredTransform(name, version, group, feats, types, t, fitted_at, created, description)
        self._loaded[(name, version)] = st
        if pin:
            self._pin(st)
        return st

    def _pin(self, st: StoredTransform) -> None:
        store = self._store
        store._check_writable()
        meta = store._group_meta(st.group)
        missing = [f for f in st.features if f not in meta.features]
        if missing:
            raise NotFoundError(f"group {st.group!r} no longer has the features {missing}")
        meta.definition += 1
        for f in st.features:
            info = meta.info[f]
            info["transforms"] = {**info.get("transforms", {}), st.name: st.version}
            info["definition"] = meta.definition

    # -- reading -------------------------------------------------------------------------

    def versions(self, name: str) -> list[int]:
        """The stored versions of ``name``, oldest first ([] when there is none)."""
        _check_name(name)
        try:
            entries = os.listdir(os.path.join(self._root, name))
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for e in entries if (m := _VERSION_DIR.match(e)))

    def list(self) -> dict[str, list[int]]:
        """{name: [versions]} of every stored transform."""
        self._store._check_open()
        try:
            names = sorted(os.listdir(self._root))
        except FileNotFoundError:
            return {}
        out = {n: self.versions(n) for n in names if _NAME_RE.match(n)}
        return {n: v for n, v in out.items() if v}

    def describe(self, ref: str) -> dict[str, Any]:
        """Metadata of ``name@version`` (or of the newest version of ``name``)."""
        return self.get(ref).describe()

    def get(self, ref: Any) -> StoredTransform:
        """The stored transform ``"name@version"`` (``"name"``: its newest version)."""
        if isinstance(ref, StoredTransform):
            return ref
        self._store._check_open()
        if not isinstance(ref, str):
            raise ParameterError(f'a transform is named "name@version", got {ref!r}')
        name, at, ver = ref.partition("@")
        _check_name(name)
        if at:
            if not ver.isdigit() or int(ver) < 1:
                raise ParameterError(f'a transform version is "name@<n>", n >= 1, got {ref!r}')
            version = int(ver)
        else:
            versions = self.versions(name)
            if not versions:
                raise NotFoundError(f"no transform {name!r}; stored: {sorted(self.list())}")
            version = versions[-1]
        st = self._loaded.get((name, version))
        if st is None:
            st = self._loaded[(name, version)] = self._load(name, version)
        return st

    def resolve(self, ref: Any, pins: Mapping[str, int]) -> StoredTransform | None:
        """What a read names: ``"name@n"`` (or a StoredTransform) as :meth:`get` finds it;
        a bare ``"name"``, the version ``pins`` gives it (None when it gives none)."""
        if isinstance(ref, str) and "@" not in ref:
            version = pins.get(ref)
            return None if version is None else self.get(f"{ref}@{version}")
        return self.get(ref)

    def _load(self, name: str, version: int) -> StoredTransform:
        where = os.path.join(self._root, name, f"v{version}")
        path = os.path.join(where, "transform.mmfs")
        try:
            meta = read_json_file(path, "META")
        except FileNotFoundError:
            have = self.versions(name)
            raise NotFoundError(
                f"no transform {name}@{version}; "
                + (f"{name} has versions {have}" if have else f"stored: {sorted(self.list())}")
            ) from None
        try:
            if meta.get("format") != "mmfs-transform" or meta.get("name") != name:
                raise FormatError("not an mmfs transform of this name")
            if meta.get("version") != version:
                raise FormatError(f"it says it is version {meta.get('version')!r}")
            arrays: dict[str, np.ndarray] = {}
            for key, spec in meta["arrays"].items():
                if "strings" in spec:
                    arr = np.array(spec["strings"], dtype=str).reshape(spec["shape"])
                else:
                    if not re.fullmatch(r"p-[a-z0-9_]+\.mmfs", spec["file"]):
                        raise FormatError(f"bad array file name {spec['file']!r}")
                    arr = np.array(open_array(os.path.join(where, spec["file"]), "META"))
                    arr = arr.reshape(spec["shape"])
                arrays[key] = arr
            fitted_at = meta["fitted_at"]
            if fitted_at is not None and type(fitted_at) is not int:
                raise FormatError("fitted_at must be an int or null")
            feats = tuple(str(f) for f, _ in meta["features"])
            types = tuple(feature_from_json(t, path) for _, t in meta["features"])
            t = from_state(meta["state"], arrays)
            return StoredTransform(
                name, version, str(meta["group"]), feats, types, t, fitted_at,
                int(meta["created_ns"]), str(meta["description"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, CorruptStoreError):
                raise
            raise CorruptStoreError(f"{path}: not a valid stored transform ({e})") from None

    # -- caching -------------------------------------------------------------------------

    def cache(self, ref: str) -> StoredTransform:
        """Cache the outputs of ``ref`` (``name@version``) in this process: each read
        snapshot computes them once for every key's latest row, at the first transformed
        read that needs them, charged to the memory budget (which may evict them), and
        later reads copy them instead of computing.  A commit (a new snapshot) or a
        refit (a new version, another ref) starts afresh.  Affine transforms run fused
        in the read kernel and are not cached."""
        st = self.get(ref)
        if "@" not in ref:  # cache what reads name: the version
            raise ParameterError(f'cache names a version: "{st.ref}", not {ref!r}')
        self._store._cached_transforms.add(st.ref)
        return st

    def uncache(self, ref: str) -> None:
        """Stop caching ``name@version`` and drop what the snapshots hold of it."""
        self._store._cached_transforms.discard(ref)
        for snap in self._store._snaps.values():
            snap.transformed.pop(ref, None)
            reservation = snap._reservations.pop(f"~{ref}", None)
            if reservation is not None:
                reservation.release()

    def cached(self) -> list[str]:
        """The refs this process caches."""
        return sorted(self._store._cached_transforms)

    def pinned(
        self, group: str, feature: str, *, version: int | str | None = None
    ) -> dict[str, int]:
        """{transform name: version} pinned to ``group.feature`` (at store ``version``)."""
        store = self._store
        meta = (
            store._group_meta(group) if version is None
            else store._version_meta(group, store.version(version))
        )  # fmt: skip
        if feature not in meta.features:
            raise NotFoundError(f"group {group!r} has no feature {feature!r}")
        return dict(meta.info[feature].get("transforms", {}))


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ParameterError(
            f"a transform name is a letter or _ then up to 63 letters, digits or _, got {name!r}"
        )


def _probe_custom(t: CustomTransform, arrays: list[Any]) -> None:
    """Call a custom transform on the data once: it must work, and its output width is
    recorded (the read plan needs it before any call)."""
    raw = np.asarray(t.function()(*arrays))
    out = t.check_output(raw, len(arrays[0]))
    t.options["n_outputs"] = int(out.shape[1])
    t.options["vector"] = raw.ndim == 2
