"""Experiment and layer definitions, the slot arithmetic behind them, and their checks.

Everything here is plain data: a definition is what the store's manifest keeps (JSON),
parsed and checked on the way in and out.  Nothing here hashes a key (see
:mod:`mmfs.experiments.hashing`) or touches a store (see :mod:`.catalog`).

Slots.  Traffic is cut into ``SLOTS`` = 10,000 slots (0.01% each).  An experiment uses
two independent hashes of a key, each mapped to a slot:

  * the *domain* slot says whether the key is in the experiment at all.  An experiment
    outside any layer has a domain of its own (its eligibility hash) and owns the slots
    ``[0, coverage)`` of it; an experiment in a layer owns a set of the layer's slots,
    disjoint from every other experiment of the layer and from the layer's holdout.
  * the *arm* slot picks the arm through the experiment's arm map: slot -> arm, each arm
    owning as many slots as its weight (percent * 100).

Both maps only ever change by moving the fewest slots: raising coverage adds free slots
and keeps the owned ones (no assigned key moves), lowering it drops the highest; a weight
change takes from each shrinking arm only what it loses (its highest slots) and gives it
to the growing arms (lowest free slots first), so the share of keys that change arm is
exactly the total-variation distance between the old and new weights.  Re-randomising
(new hashes for every key) happens only by a new phase: ``restart``, recorded in the
experiment's history.

GrowthBook mode (``hashing="growthbook"``) reproduces GrowthBook's SDK instead: its
FNV-1a hashes, bucket ranges (``getBucketRanges``) and namespaces; ramp behaviour is then
GrowthBook's (coverage ramps are stable, weight changes move more keys than the minimum).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import numpy as np

from mmfs.errors import (
    CorruptStoreError,
    DuplicateSeedError,
    ExperimentError,
    LayerFullError,
    LayerOverlapError,
    NestingCycleError,
    ParameterError,
    WeightsError,
)

__all__ = [
    "HASHINGS",
    "SLOTS",
    "ExperimentDef",
    "ExperimentState",
    "LayerDef",
    "percent_slots",
    "ranges_of",
    "slots_of",
]

SLOTS: Final = 10_000
HASHINGS: Final = ("murmur3", "growthbook")
HASH_VERSIONS: Final = {"murmur3": "murmur3_x86_32/v1", "growthbook": "growthbook/v2"}
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}\Z")
_SERVE_KEYS: Final = ("version", "features", "transforms")


def check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ParameterError(
            f"{what} name must be a str of letters, digits, '_', '.', '-' (not starting "
            f"with a digit, at most 128), got {name!r}"
        )
    return name


# -- slot sets -----------------------------------------------------------------------------


def slots_of(ranges: Any) -> np.ndarray:
    """The sorted slots of half-open ``ranges`` [(start, end), ...]."""
    parts = [np.arange(a, b, dtype=np.int64) for a, b in ranges]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def ranges_of(slots: np.ndarray) -> tuple[tuple[int, int], ...]:
    """The runs of sorted distinct ``slots`` as half-open (start, end) ranges."""
    if slots.size == 0:
        return ()
    breaks = np.flatnonzero(np.diff(slots) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [slots.size]))
    return tuple((int(slots[a]), int(slots[b - 1]) + 1) for a, b in zip(starts, ends, strict=True))


def arm_runs(table: np.ndarray) -> tuple[tuple[int, int, int], ...]:
    """An arm map (arm of each slot) as runs (start, end, arm)."""
    breaks = np.flatnonzero(np.diff(table) != 0) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [table.size]))
    return tuple((int(a), int(b), int(table[a])) for a, b in zip(starts, ends, strict=True))


def arm_table(runs: Any) -> np.ndarray:
    table = np.empty(SLOTS, dtype=np.int16)
    for a, b, arm in runs:
        table[a:b] = arm
    return table


def percent_slots(value: Any, what: str, error: type[ExperimentError] = ExperimentError) -> int:
    """A percentage (0 to 100, in steps of 0.01) as a number of slots, exactly."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | np.number):
        raise error(f"{what} must be a number of percent, got {value!r}")
    try:
        d = Decimal(str(value)) * 100
    except InvalidOperation:
        raise error(f"{what} must be a number of percent, got {value!r}") from None
    if not d.is_finite() or d != d.to_integral_value() or not 0 <= d <= SLOTS:
        raise error(f"{what} must be a percentage from 0 to 100 in steps of 0.01, got {value!r}")
    return int(d)


def weight_slots(variants: Any) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Variant names and their weights in slots from ``{"control": 50, ...}`` (percent,
    summing exactly to 100) or a list of names (an equal split, when it is exact)."""
    if isinstance(variants, list | tuple) and variants and not isinstance(variants[0], tuple):
        names = tuple(variants)
        if SLOTS % len(names):
            raise WeightsError(
                f"{len(names)} variants do not split 100% exactly in steps of 0.01%; "
                "give the weights: variants={name: percent, ...}"
            )
        variants = dict.fromkeys(names, 100 / len(names))
        if len(variants) != len(names):
            raise WeightsError(f"variant names must be distinct, got {list(names)}")
    if not isinstance(variants, Mapping) or len(variants) < 1:
        raise WeightsError(
            f"variants must be a dict {{name: percent}} or a list of names, got {variants!r}"
        )
    if len(variants) > 1000:
        raise WeightsError(f"at most 1000 variants, got {len(variants)}")
    names = tuple(check_name(n, "a variant") for n in variants)
    slots = tuple(
        percent_slots(w, f"the weight of variant {n!r}", WeightsError) for n, w in variants.items()
    )
    if sum(slots) != SLOTS:
        raise WeightsError(
            f"variant weights must sum to exactly 100 (percent), got {sum(slots) / 100:g}: "
            f"{dict(variants)}"
        )
    return names, slots


def rebalance(table: np.ndarray, new: tuple[int, ...]) -> np.ndarray:
    """The arm map closest to ``table`` with ``new[a]`` slots for arm a: each shrinking
    arm gives up its highest slots, each growing arm takes the lowest free ones in arm
    order.  Moves exactly sum(max(0, old - new)) slots (the total-variation distance)."""
    out = table.copy()
    for arm, want in enumerate(new):
        owned = np.flatnonzero(out == arm)
        if owned.size > want:
            out[owned[want:]] = -1
    free = np.flatnonzero(out == -1)
    at = 0
    for arm, want in enumerate(new):
        grow = want - int(np.count_nonzero(out == arm))
        if grow > 0:
            out[free[at : at + grow]] = arm
            at += grow
    return out


def resize(owned: np.ndarray, want: int, free: np.ndarray) -> np.ndarray:
    """An owned slot set resized to ``want`` slots: keeps the lowest owned, adds the
    lowest ``free`` ones; the caller checks there are enough."""
    if want <= owned.size:
        return owned[:want]
    return np.sort(np.concatenate((owned, free[: want - owned.size])))


# -- definitions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerDef:
    """A layer: a domain of slots (its own hash) whose experiments exclude each other."""

    name: str
    seed: str
    holdout: tuple[tuple[int, int], ...]  # slots no experiment of the layer may own
    parent: tuple[str, str] | None  # (experiment, arm) the layer lives in
    created_ns: int
    description: str = ""

    @property
    def salt(self) -> bytes:
        return f"mmfs.layer:{self.seed}".encode()

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "holdout": [list(r) for r in self.holdout],
            "parent": list(self.parent) if self.parent else None,
            "created_ns": self.created_ns,
            "description": self.description,
        }


@dataclass(frozen=True)
class ExperimentDef:
    """One experiment as the manifest keeps it (see the module docstring)."""

    name: str
    hashing: str
    unit: str | None
    variants: tuple[str, ...]
    weights: tuple[int, ...]  # slots per variant
    arms: tuple[tuple[int, int, int], ...]  # arm map runs (start, end, arm); murmur3 only
    domain: tuple[tuple[int, int], ...]  # owned slots of its domain (own or the layer's)
    layer: str | None
    parent: tuple[str, str] | None
    namespace: tuple[str, float, float] | None  # GrowthBook namespace (id, start, end)
    seed: str
    phase: int
    serve: dict[str, dict[str, Any]]
    status: str  # "running" or "stopped"
    log_exposures: bool
    created_ns: int
    history: tuple[dict[str, Any], ...]
    description: str = ""
    _tables: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def coverage(self) -> int:
        """Slots of the domain the experiment owns."""
        return sum(b - a for a, b in self.domain)

    @property
    def hash_version(self) -> str:
        return HASH_VERSIONS[self.hashing]

    @property
    def arm_salt(self) -> bytes:
        return f"mmfs.arm:{self.seed}:{self.phase}".encode()

    @property
    def domain_salt(self) -> bytes:
        return f"mmfs.domain:{self.seed}:{self.phase}".encode()

    def serving(self) -> tuple[list[dict[str, Any] | None], np.ndarray, list[int]]:
        """The distinct serving configurations (0: none, the request as asked) and the
        configuration of each arm code + 1 (int8; code -1, not in the experiment: 0),
        also as a list."""
        hit = self._tables.get("serving")
        if hit is None:
            configs: list[dict[str, Any] | None] = [None]
            config_of = np.zeros(len(self.variants) + 1, dtype=np.int8)
            for i, arm in enumerate(self.variants):
                if self.serve.get(arm):
                    configs.append(self.serve[arm])
                    config_of[i + 1] = len(configs) - 1
            hit = self._tables["serving"] = (configs, config_of, config_of.tolist())
        return hit

    def kernel_args(self, layer: LayerDef | None) -> tuple[bytes, np.ndarray, bytes, np.ndarray]:
        """(domain salt, domain table, arm salt, arm table) of the assign kernel, built
        once per definition (a one-key read pays for none of it)."""
        args = self._tables.get("args")
        if args is None:
            dom = layer.salt if layer is not None else self.domain_salt
            args = (dom, self.domain_table(), self.arm_salt, self.arm_table())
            self._tables["args"] = args
        return args  # type: ignore[return-value]

    def arm_table(self) -> np.ndarray:
        t = self._tables.get("arm")
        if t is None:
            t = self._tables["arm"] = arm_table(self.arms)
        return t

    def domain_table(self) -> np.ndarray:
        t = self._tables.get("domain")
        if t is None:
            t = np.zeros(SLOTS, dtype=np.uint8)
            if self.status == "running":
                t[slots_of(self.domain)] = 1
            self._tables["domain"] = t
        return t

    def checksum(self) -> str:
        """A digest of everything that decides what a key is served in this phase: the
        hashing, seed, phase, variants, both slot maps, the nesting and the serving
        configuration (exposure records carry it)."""
        doc = self.to_json()
        for k in ("history", "created_ns", "description", "log_exposures", "status"):
            doc.pop(k)
        text = json.dumps([self.name, doc], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {
            "hashing": self.hashing,
            "unit": self.unit,
            "variants": [[n, w] for n, w in zip(self.variants, self.weights, strict=True)],
            "arms": [list(r) for r in self.arms],
            "domain": [list(r) for r in self.domain],
            "layer": self.layer,
            "parent": list(self.parent) if self.parent else None,
            "namespace": list(self.namespace) if self.namespace else None,
            "seed": self.seed,
            "phase": self.phase,
            "serve": self.serve,
            "status": self.status,
            "log_exposures": self.log_exposures,
            "created_ns": self.created_ns,
            "history": list(self.history),
            "description": self.description,
        }

    def changed(self, at_ns: int, change: str, **details: Any) -> ExperimentDef:
        """A copy with fields replaced and a history entry appended."""
        fields = {k: v for k, v in details.items() if k in _FIELDS}
        note = {k: _jsonable(v) for k, v in details.items() if k not in _QUIET}
        out = replace(self, **fields, _tables={})
        entry = {"at_ns": at_ns, "change": change, "phase": out.phase, **note}
        return replace(out, history=(*self.history, entry))


_FIELDS: Final = frozenset(ExperimentDef.__dataclass_fields__) - {"_tables", "history"}
_QUIET: Final = frozenset({"arms", "domain"})  # slot maps: the definition has them


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


# -- the whole state -----------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentState:
    """Every experiment and layer of one store version."""

    experiments: dict[str, ExperimentDef] = field(default_factory=dict)
    layers: dict[str, LayerDef] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "experiments": {n: e.to_json() for n, e in self.experiments.items()},
            "layers": {n: la.to_json() for n, la in self.layers.items()},
        }

    @staticmethod
    def from_json(doc: Any, source: str) -> ExperimentState:
        """Parse and check the manifest's ``experiments`` entry; anything malformed or
        inconsistent is a CorruptStoreError naming ``source``."""
        if doc is None:
            return ExperimentState()
        try:
            if not isinstance(doc, dict):
                raise TypeError("not an object")
            layers = {n: _parse_layer(n, d) for n, d in _obj(doc.get("layers", {})).items()}
            exps = {n: _parse_experiment(n, d) for n, d in _obj(doc.get("experiments")).items()}
            state = ExperimentState(exps, layers)
            state.validate()
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise CorruptStoreError(f"{source}: malformed experiments: {exc}") from None
        return state

    def with_experiment(self, e: ExperimentDef) -> ExperimentState:
        return ExperimentState({**self.experiments, e.name: e}, self.layers)

    def with_layer(self, la: LayerDef) -> ExperimentState:
        return ExperimentState(self.experiments, {**self.layers, la.name: la})

    def layer_free(self, layer: str, but: str | None = None) -> np.ndarray:
        """The slots of ``layer`` no running experiment (but ``but``) and no holdout owns."""
        taken = np.zeros(SLOTS, dtype=bool)
        taken[slots_of(self.layers[layer].holdout)] = True
        for e in self.experiments.values():
            if e.layer == layer and e.name != but and e.status == "running":
                taken[slots_of(e.domain)] = True
        return np.flatnonzero(~taken)

    def validate(self) -> None:
        """Check the whole state; raises the typed ExperimentError of the first problem."""
        for e in self.experiments.values():
            if e.layer is not None and e.layer not in self.layers:
                raise ExperimentError(f"experiment {e.name!r}: no layer {e.layer!r}")
            for what, p in (("experiment", e.parent),):
                if p is not None:
                    self._check_parent(f"{what} {e.name!r}", p)
        for la in self.layers.values():
            if la.parent is not None:
                self._check_parent(f"layer {la.name!r}", la.parent)
        self._check_cycles()
        for name in self.layers:
            owner = np.full(SLOTS, -1, dtype=np.int64)
            owner[slots_of(self.layers[name].holdout)] = -2
            for i, e in enumerate(self.experiments.values()):
                if e.layer != name or e.status != "running":
                    continue
                mine = slots_of(e.domain)
                clash = owner[mine]
                if (clash != -1).any():
                    other = int(clash[clash != -1][0])
                    who = "the holdout" if other == -2 else repr(list(self.experiments)[other])
                    raise LayerOverlapError(
                        f"experiment {e.name!r} overlaps {who} in layer {name!r}"
                    )
                owner[mine] = i
        spaces: dict[str, list[tuple[float, float, str]]] = {}
        for e in self.experiments.values():
            if e.namespace is not None and e.status == "running":
                spaces.setdefault(e.namespace[0], []).append(
                    (e.namespace[1], e.namespace[2], e.name)
                )
        for ns, spans in spaces.items():
            spans.sort()
            for (_, end, a), (start, _, b) in itertools.pairwise(spans):
                if start < end:
                    raise LayerOverlapError(
                        f"experiments {a!r} and {b!r} overlap in GrowthBook namespace {ns!r}"
                    )
        seen: dict[str, str] = {}
        for la in self.layers.values():
            _claim(seen, la.seed, f"layer {la.name!r}")
        for e in self.experiments.values():
            for s in {e.seed, *(str(h.get("seed", e.seed)) for h in e.history)}:
                _claim(seen, s, f"experiment {e.name!r}")

    def _check_parent(self, who: str, parent: tuple[str, str]) -> None:
        exp, arm = parent
        p = self.experiments.get(exp)
        if p is None:
            raise ExperimentError(f"{who}: its parent experiment {exp!r} does not exist")
        if arm not in p.variants:
            raise ExperimentError(f"{who}: experiment {exp!r} has no variant {arm!r}")

    def _check_cycles(self) -> None:
        def edges(node: tuple[str, str]) -> list[tuple[str, str]]:
            kind, name = node
            if kind == "layer":
                p = self.layers[name].parent
                return [("exp", p[0])] if p else []
            e = self.experiments[name]
            out = [("layer", e.layer)] if e.layer else []
            return out + ([("exp", e.parent[0])] if e.parent else [])

        done: set[tuple[str, str]] = set()
        for start in [("exp", n) for n in self.experiments] + [("layer", n) for n in self.layers]:
            path: list[tuple[str, str]] = []
            node: tuple[str, str] | None = start
            stack = [(start, iter(edges(start)))]
            path.append(start)
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    stack.pop()
                    path.pop()
                    done.add(node)
                    continue
                if nxt in path:
                    cycle = [*path[path.index(nxt) :], nxt]
                    raise NestingCycleError(
                        "experiments and layers nest in a cycle: "
                        + " -> ".join(f"{k} {n!r}" for k, n in cycle)
                    )
                if nxt not in done:
                    path.append(nxt)
                    stack.append((nxt, iter(edges(nxt))))


def _claim(seen: dict[str, str], seed: str, who: str) -> None:
    other = seen.get(seed)
    if other is not None and other != who:
        raise DuplicateSeedError(
            f"{who} and {other} use the same seed {seed!r}: their assignments would be "
            "correlated; give one of them another seed"
        )
    seen[seed] = who


# -- parsing -------------------------------------------------------------------------------


def _obj(x: Any) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise TypeError(f"expected an object, got {type(x).__name__}")
    return x


def _int(x: Any, lo: int, hi: int) -> int:
    if type(x) is not int or not lo <= x <= hi:
        raise ValueError(f"expected an int in [{lo}, {hi}], got {x!r}")
    return x


def _str(x: Any) -> str:
    if not isinstance(x, str):
        raise TypeError(f"expected a str, got {x!r}")
    return x


def _ranges(x: Any) -> tuple[tuple[int, int], ...]:
    if not isinstance(x, list):
        raise TypeError("ranges must be a list")
    out = []
    last = 0
    for r in x:
        if not isinstance(r, list) or len(r) != 2:
            raise TypeError("a range is [start, end]")
        a, b = _int(r[0], last, SLOTS), _int(r[1], 0, SLOTS)
        if b <= a:
            raise ValueError(f"empty or inverted range {r}")
        out.append((a, b))
        last = b
    return tuple(out)


def _pair(x: Any) -> tuple[str, str] | None:
    if x is None:
        return None
    if not isinstance(x, list) or len(x) != 2:
        raise TypeError("a parent is [experiment, variant]")
    return _str(x[0]), _str(x[1])


def _parse_layer(name: str, d: Any) -> LayerDef:
    d = _obj(d)
    return LayerDef(
        check_name(name, "a layer"),
        _str(d["seed"]),
        _ranges(d["holdout"]),
        _pair(d.get("parent")),
        _int(d["created_ns"], 0, 2**63 - 1),
        _str(d.get("description", "")),
    )


def _parse_experiment(name: str, d: Any) -> ExperimentDef:
    d = _obj(d)
    hashing = _str(d["hashing"])
    if hashing not in HASHINGS:
        raise ValueError(f"unknown hashing {hashing!r}")
    pairs = d["variants"]
    if not isinstance(pairs, list) or not pairs:
        raise TypeError("variants must be a non-empty list")
    names = tuple(_str(p[0]) for p in pairs)
    weights = tuple(_int(p[1], 0, SLOTS) for p in pairs)
    if sum(weights) != SLOTS or len(set(names)) != len(names):
        raise ValueError("variant weights must sum to 10000 slots, names distinct")
    runs = d["arms"]
    if not isinstance(runs, list):
        raise TypeError("arms must be a list")
    arms = tuple(
        (_int(r[0], 0, SLOTS), _int(r[1], 1, SLOTS), _int(r[2], 0, len(names) - 1)) for r in runs
    )
    if hashing == "murmur3":
        table = np.full(SLOTS, -1, dtype=np.int64)
        at = 0
        for a, b, arm in arms:
            if a != at or b <= a:
                raise ValueError("arm runs must tile [0, 10000)")
            table[a:b] = arm
            at = b
        if at != SLOTS or tuple(np.bincount(table, minlength=len(names)).tolist()) != weights:
            raise ValueError("the arm map does not give each variant its weight")
    elif arms:
        raise ValueError("a GrowthBook experiment has no arm map")
    ns = d.get("namespace")
    namespace = None
    if ns is not None:
        if not isinstance(ns, list) or len(ns) != 3:
            raise TypeError("a namespace is [id, start, end]")
        namespace = (_str(ns[0]), _fraction(ns[1]), _fraction(ns[2]))
        if namespace[2] <= namespace[1]:
            raise ValueError("an empty namespace range")
    serve = _obj(d.get("serve", {}))
    for arm, cfg in serve.items():
        if arm not in names:
            raise ValueError(f"serve names an unknown variant {arm!r}")
        check_serve(arm, cfg, ValueError)
    status = _str(d["status"])
    if status not in ("running", "stopped"):
        raise ValueError(f"unknown status {status!r}")
    history = d.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise TypeError("history must be a list of objects")
    unit = d.get("unit")
    log = d.get("log_exposures", False)
    if not isinstance(log, bool):
        raise TypeError("log_exposures must be a bool")
    return ExperimentDef(
        check_name(name, "an experiment"),
        hashing,
        None if unit is None else _str(unit),
        names,
        weights,
        arms,
        _ranges(d["domain"]),
        None if d.get("layer") is None else _str(d["layer"]),
        _pair(d.get("parent")),
        namespace,
        _str(d["seed"]),
        _int(d["phase"], 0, 2**31),
        serve,
        status,
        log,
        _int(d["created_ns"], 0, 2**63 - 1),
        tuple(history),
        _str(d.get("description", "")),
    )


def _fraction(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not 0 <= x <= 1:
        raise ValueError(f"expected a number in [0, 1], got {x!r}")
    return float(x)


def check_serve(arm: str, cfg: Any, error: type[Exception] = ParameterError) -> dict[str, Any]:
    """A variant's serving configuration: ``{"version": v, "features": {feature:
    alternative}, "transforms": {transform: "transform@n"}}``, each part optional."""
    if not isinstance(cfg, dict) or not set(cfg) <= set(_SERVE_KEYS):
        raise error(
            f"the serving configuration of variant {arm!r} must be a dict with keys from "
            f"{list(_SERVE_KEYS)}, got {cfg!r}"
        )
    v = cfg.get("version")
    if v is not None and (isinstance(v, bool) or not isinstance(v, int | str)):
        raise error(f"variant {arm!r}: version must be a version id or tag, got {v!r}")
    for part in ("features", "transforms"):
        m = cfg.get(part, {})
        if not isinstance(m, dict) or not all(
            isinstance(a, str) and isinstance(b, str) for a, b in m.items()
        ):
            raise error(f"variant {arm!r}: {part} must map str to str, got {m!r}")
    return cfg


def fraction_slots(x: Any, what: str) -> int:
    """A fraction in [0, 1] (coverage, holdout) as slots, exactly at 0.01% steps."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise ParameterError(f"{what} must be a fraction in [0, 1], got {x!r}")
    return percent_slots(Decimal(str(x)) * 100, what, ExperimentError)


def need_free(free: np.ndarray, want: int, have: int, layer: str) -> None:
    if free.size < want - have:
        raise LayerFullError(
            f"layer {layer!r} has {free.size / 100:g}% of its traffic free; "
            f"{(want - have) / 100:g}% more was asked for"
        )
