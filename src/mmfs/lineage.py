"""Feature metadata, definition versions and lineage.

Every feature carries metadata in its group's manifest entry (``GroupMeta.info``):
``created_ns``, the ``definition`` version that last changed it (its type, or the
transforms pinned to it), a ``description``, an ``owner``, ``tags``, for a derived
feature ``derived``: how it was computed, and ``transforms``: the transform versions
pinned to it (see :mod:`mmfs.transforms.catalog`; absent until one is).  All of it is
plain JSON, validated when a manifest is read; nothing in a store is ever executed or
unpickled.

Definition versions.  A group's ``definition`` is 1 at creation and grows by one at each
:meth:`Store.alter_group` (adding, dropping or retyping features).  Altering rewrites the
group's rows under the new schema into a new set of files, so each version keeps the
definition it was committed with: a read at an old version uses the old definition.

Derived features.  :func:`register_function` names a Python function and its version;
:meth:`Store.derive` reads the source features at one version, calls the function on
them (numpy arrays in, one array out), writes the result as a feature of a target group
and records in its metadata the sources (``group@version``), the function's name,
version and code fingerprint (SHA-256 of its bytecode and constants: a changed body
changes it, a moved or reformatted source does not).  :meth:`Store.lineage` walks these
records into a dependency graph.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmfs.errors import CorruptStoreError, NotFoundError, ParameterError

__all__ = ["RegisteredFunction", "fingerprint", "register_function", "registered_functions"]

_FIELDS = {"created_ns", "definition", "description", "owner", "tags", "derived"}
_DERIVED = {"function", "function_version", "fingerprint", "sources", "inputs"}


@dataclass(frozen=True)
class RegisteredFunction:
    name: str
    version: str
    fn: Callable[..., Any]
    fingerprint: str


_REGISTRY: dict[str, RegisteredFunction] = {}


def fingerprint(fn: Callable[..., Any]) -> str:
    """SHA-256 of a function's code: bytecode, constants and names, recursively through
    nested code objects (so lambdas and comprehensions inside count)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        raise ParameterError(f"{fn!r} is not a Python function: it has no code to fingerprint")
    digest = hashlib.sha256()

    def feed(c: Any) -> None:
        digest.update(c.co_code)
        digest.update(repr(c.co_names).encode())
        digest.update(repr(c.co_varnames).encode())
        for const in c.co_consts:
            if hasattr(const, "co_code"):
                feed(const)
            else:
                digest.update(repr(const).encode())

    feed(code)
    return digest.hexdigest()


def register_function(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, version: str = "1"
) -> Any:
    """Register a derivation function under ``name`` (default: its ``__name__``) and
    ``version``; usable as ``@register_function`` or ``@register_function(version="2")``.
    Registering a name again replaces it (a new version, or a fix)."""

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(f):
            raise ParameterError(f"register_function needs a function, got {f!r}")
        key = name or getattr(f, "__name__", None)
        if not isinstance(key, str) or not key or key == "<lambda>":
            raise ParameterError("name the function: register_function(fn, name='...')")
        if not isinstance(version, str) or not version:
            raise ParameterError(f"version must be a non-empty str, got {version!r}")
        _REGISTRY[key] = RegisteredFunction(key, version, f, fingerprint(f))
        return f

    return wrap if fn is None else wrap(fn)


def registered_functions() -> dict[str, RegisteredFunction]:
    return dict(_REGISTRY)


def function(ref: Any) -> RegisteredFunction:
    """The registered function named ``ref`` (or registered as the callable ``ref``)."""
    for rf in _REGISTRY.values():
        if ref == rf.name if isinstance(ref, str) else ref is rf.fn:
            return rf
    raise NotFoundError(
        f"no registered function {ref!r}; register it with mmfs.register_function "
        f"(registered: {sorted(_REGISTRY)})"
    )


def new_info(created_ns: int, definition: int) -> dict[str, Any]:
    return {
        "created_ns": created_ns,
        "definition": definition,
        "description": "",
        "owner": "",
        "tags": [],
        "derived": None,
    }


def check_info(info: Any, features: Any, src: str) -> dict[str, dict[str, Any]]:
    """Validate the per-feature metadata of a manifest's group entry."""
    if not isinstance(info, dict) or set(info) != set(features):
        raise CorruptStoreError(f"{src}: info must describe exactly its features")
    for name, item in info.items():
        where = f"{src} feature {name!r}"
        if not isinstance(item, dict) or set(item) - {"transforms"} != _FIELDS:
            raise CorruptStoreError(f"{where}: metadata must have the fields {sorted(_FIELDS)}")
        pins = item.get("transforms", {})
        if not isinstance(pins, dict) or not all(
            isinstance(k, str) and type(v) is int and v >= 1 for k, v in pins.items()
        ):
            raise CorruptStoreError(f"{where}: transforms must map names to versions >= 1")
        if not all(type(item[k]) is int and item[k] >= 0 for k in ("created_ns", "definition")):
            raise CorruptStoreError(f"{where}: created_ns and definition must be ints >= 0")
        if not isinstance(item["description"], str) or not isinstance(item["owner"], str):
            raise CorruptStoreError(f"{where}: description and owner must be str")
        if not _str_list(item["tags"]):
            raise CorruptStoreError(f"{where}: tags must be a list of str")
        d = item["derived"]
        if d is not None and not (
            isinstance(d, dict)
            and set(d) == _DERIVED
            and all(isinstance(d[k], str) for k in ("function", "function_version", "fingerprint"))
            and _str_list(d["sources"])
            and _str_list(d["inputs"])
        ):
            raise CorruptStoreError(f"{where}: derived must be null or {sorted(_DERIVED)}")
    return info


def _str_list(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(t, str) for t in x)


def split_feature(ref: Any) -> tuple[str, str]:
    if not isinstance(ref, str) or ref.count(".") != 1:
        raise ParameterError(f'a feature is named "group.feature", got {ref!r}')
    group, feature = ref.split(".")
    return group, feature


def graph(describe: Callable[[str], dict[str, Any]], root: str) -> dict[str, Any]:
    """The dependency graph of feature ``root``: {"feature": root, "nodes": {name:
    metadata}, "edges": [[source, target], ...]} over every feature it derives from,
    transitively (a source is ``group.feature@version``)."""
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[list[str]] = []
    todo = [root]
    while todo:
        name = todo.pop()
        if name in nodes:
            continue
        base = name.split("@")[0]
        meta = describe(base)
        nodes[name] = meta
        derived = meta.get("derived")
        if derived:
            for src in derived["sources"]:
                edges.append([src, name])
                todo.append(src)
    return {"feature": root, "nodes": nodes, "edges": edges}
