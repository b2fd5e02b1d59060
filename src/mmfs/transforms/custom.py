"""Custom transforms: vectorised Python functions registered by name and version.

``@mmfs.transform("ratio", version="1")`` registers a function that takes one numpy array
per input feature (as ``FeatureBatch[name]`` gives them: scalars ``(n,)``, dense vectors
``(n, dim)``, categories object arrays) and returns one array of ``n`` rows, ``(n,)`` or
``(n, k)``.  The store never keeps the function, only its name, version and a
fingerprint of its code (:func:`mmfs.lineage.fingerprint`: bytecode, constants and
names, recursively); a process that serves the transform must have registered the same
function itself.  When the registered code's fingerprint differs from the stored one
(the function was edited after the transform was added), serving refuses with
:class:`~mmfs.errors.TransformSkewError`: skew caught, not served.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from mmfs.errors import DimensionError, ParameterError, TransformError, TransformSkewError
from mmfs.lineage import fingerprint
from mmfs.transforms._base import Transform

__all__ = ["CustomTransform", "registered_transforms", "transform", "unregister_transform"]


class _Registered(NamedTuple):
    fn: Callable[..., Any]
    fingerprint: str


_REGISTRY: dict[tuple[str, str], _Registered] = {}


def transform(name: str, version: str | int = "1") -> Callable[[Callable[..., Any]], Any]:
    """Register a vectorised function as the custom transform ``name`` at ``version``
    (a decorator; the function is returned unchanged).  Registering the same name and
    version again replaces it, and its new fingerprint is what serving then checks."""
    if not isinstance(name, str) or not name:
        raise ParameterError(f"a custom transform needs a non-empty str name, got {name!r}")
    if isinstance(version, bool) or not isinstance(version, str | int):
        raise ParameterError(f"version must be a str or an int, got {version!r}")
    ver = str(version)

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise ParameterError(f"@transform needs a function, got {fn!r}")
        _REGISTRY[(name, ver)] = _Registered(fn, fingerprint(fn))
        fn.__mmfs_transform__ = (name, ver)  # type: ignore[attr-defined]
        return fn

    return register


def unregister_transform(name: str, version: str | int = "1") -> None:
    """Forget a registered custom transform (nothing happens when it is not registered)."""
    _REGISTRY.pop((name, str(version)), None)


def registered_transforms() -> dict[str, list[str]]:
    """{name: [versions]} of the custom transforms registered in this process."""
    out: dict[str, list[str]] = {}
    for name, ver in sorted(_REGISTRY):
        out.setdefault(name, []).append(ver)
    return out


class CustomTransform(Transform):
    """A registered function as a stored transform: options ``function``, ``version`` and
    ``fingerprint`` (of the code it was added with); no parameters.  It takes one array
    per input feature, so it is called through :meth:`call`, not ``transform``."""

    kind = "custom"
    columnwise = False
    categorical = True

    def __init__(
        self,
        function: str,
        version: str,
        fingerprint: str,
        n_outputs: int | None = None,
        vector: bool = False,
    ) -> None:
        """``n_outputs`` and ``vector`` (the function returns (n, k), not (n,)) are
        recorded when the transform is added to a store, from one call on its data."""
        for what, value in (("function", function), ("version", version)):
            if not isinstance(value, str) or not value:
                raise ParameterError(f"custom transform {what} must be a non-empty str")
        if not isinstance(fingerprint, str) or len(fingerprint) != 64:
            raise ParameterError(f"fingerprint must be a SHA-256 hex digest, got {fingerprint!r}")
        if n_outputs is not None and (type(n_outputs) is not int or n_outputs < 1):
            raise ParameterError(f"n_outputs must be an int >= 1, got {n_outputs!r}")
        super().__init__(function=function, version=version, fingerprint=fingerprint)
        if n_outputs is not None:
            self.options["n_outputs"] = n_outputs
            self.options["vector"] = bool(vector)

    def n_outputs(self) -> int:
        return int(self.options["n_outputs"])

    @classmethod
    def of(cls, fn: Any, n_inputs: int) -> CustomTransform:
        """The fitted custom transform of a registered function (or its "name@version")."""
        name, ver = _reference(fn)
        reg = _REGISTRY.get((name, ver))
        if reg is None:
            raise TransformError(_unregistered(name, ver))
        t = cls(name, ver, reg.fingerprint)
        t.params = {}
        t.n_features_in = n_inputs
        return t

    def function(self) -> Callable[..., Any]:
        """The registered function, after checking that its code is the stored code."""
        name, ver = self.options["function"], self.options["version"]
        reg = _REGISTRY.get((name, ver))
        if reg is None:
            raise TransformError(_unregistered(name, ver))
        if reg.fingerprint != self.options["fingerprint"]:
            raise TransformSkewError(
                f"custom transform {name!r} version {ver}: the registered code (fingerprint "
                f"{reg.fingerprint[:12]}) is not the code it was added with "
                f"({self.options['fingerprint'][:12]}); serving it would skew against "
                "training.  Register the original code, or add the new code as a new "
                "version of the transform and retrain."
            )
        return reg.fn

    def call(self, arrays: Sequence[Any], n: int) -> np.ndarray:
        """The function applied to one array per input feature, checked: n rows out."""
        if len(arrays) != self.n_features_in:
            raise DimensionError(
                f"custom transform {self.options['function']!r} takes {self.n_features_in} "
                f"features, got {len(arrays)}"
            )
        return self.check_output(np.asarray(self.function()(*arrays)), n)

    def check_output(self, out: np.ndarray, n: int) -> np.ndarray:
        """A function's output as (n, k), or TransformError saying what it returned."""
        if out.ndim == 1:
            out = out.reshape(-1, 1)
        k = self.options.get("n_outputs")
        if (
            out.ndim != 2
            or out.shape[0] != n
            or out.dtype.kind not in "fiub"
            or (k is not None and out.shape[1] != k)
        ):
            want = f"(n, {k})" if k else "(n,) or (n, k)"
            raise TransformError(
                f"custom transform {self.options['function']!r} must return a numeric "
                f"array of {n} rows, {want}, got dtype {out.dtype} shape {out.shape}"
            )
        return out

    def fit(self, X: Any) -> CustomTransform:
        raise ParameterError(
            "a custom transform has nothing to fit: add it to a store with "
            "store.transforms.fit(name, group, features, fn)"
        )


def _reference(fn: Any) -> tuple[str, str]:
    """(name, version) of a registered function or of a "name@version" string."""
    if isinstance(fn, str):
        name, _, ver = fn.partition("@")
        return name, ver or "1"
    ref = getattr(fn, "__mmfs_transform__", None)
    if ref is None:
        raise ParameterError(
            f"{fn!r} is not a registered transform: decorate it with @mmfs.transform(name, version)"
        )
    return ref


def _unregistered(name: str, ver: str) -> str:
    have = registered_transforms()
    return (
        f"custom transform {name!r} version {ver} is not registered in this process "
        f"(registered: {have or 'none'}); import the module that defines it, decorated "
        f"with @mmfs.transform({name!r}, {ver!r}), before serving"
    )
