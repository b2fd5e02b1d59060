"""The store's experiments: ``store.experiments``.

Definitions live in the store's manifest (see :mod:`._model`), so they are versioned
like everything else: a writer's changes are staged and published by ``store.commit()``,
``get(name, version=v)`` returns an experiment as version v had it, and a read pinned to
a version serves that version's assignment.  A writer's catalog shows its staged
changes (as ``store.groups()`` shows groups it created); ``group.get(...,
experiment=)`` serves the committed definition of the version it reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from mmfs._kernels import _assign
from mmfs._times import now_ns
from mmfs.errors import ExperimentError, NotFoundError, ParameterError
from mmfs.experiments._model import (
    HASHINGS,
    SLOTS,
    ExperimentDef,
    ExperimentState,
    LayerDef,
    arm_runs,
    check_name,
    check_serve,
    fraction_slots,
    need_free,
    percent_slots,
    ranges_of,
    rebalance,
    resize,
    slots_of,
    weight_slots,
)
from mmfs.experiments.hashing import Keys, as_keys, gb_buckets, n_threads_for

if TYPE_CHECKING:  # pragma: no cover
    from mmfs.experiments.exposure import ExposureLog
    from mmfs.store import Store

__all__ = ["Experiment", "ExperimentCatalog"]

_KEEP: Final = object()


class Experiment:
    """One experiment of one store version: its definition and vectorised assignment.
    Immutable; ``store.experiments.get`` returns the current one."""

    __slots__ = ("_def", "_state")

    def __init__(self, d: ExperimentDef, state: ExperimentState) -> None:
        self._def = d
        self._state = state

    def __repr__(self) -> str:
        d = self._def
        weights = ", ".join(f"{n}={w / 100:g}%" for n, w in zip(d.variants, d.weights, strict=True))
        return (
            f"Experiment({d.name!r}, {weights}, coverage={self.coverage:g}, "
            f"phase={d.phase}, {d.status})"
        )

    name = property(lambda self: self._def.name, doc="The experiment's name.")
    variants = property(lambda self: self._def.variants, doc="Variant names; arm codes index them.")
    phase = property(lambda self: self._def.phase, doc="Bumped by every restart.")
    seed = property(lambda self: self._def.seed, doc="The seed its salts are made from.")
    hashing = property(lambda self: self._def.hashing, doc='"murmur3" or "growthbook".')
    hash_version = property(lambda self: self._def.hash_version, doc="Names the hash scheme.")
    status = property(lambda self: self._def.status, doc='"running" or "stopped".')
    layer = property(lambda self: self._def.layer, doc="The layer it lives in, or None.")
    parent = property(lambda self: self._def.parent, doc="(experiment, variant) or None.")
    unit = property(lambda self: self._def.unit, doc="The entity key it randomises.")
    log_exposures = property(lambda self: self._def.log_exposures, doc="Logs what it serves.")

    @property
    def weights(self) -> dict[str, float]:
        """Each variant's share of the experiment's traffic, in percent."""
        return {n: w / 100 for n, w in zip(self._def.variants, self._def.weights, strict=True)}

    @property
    def coverage(self) -> float:
        """The share of its domain (all traffic, or its layer's) it includes."""
        return self._def.coverage / SLOTS

    @property
    def serve(self) -> dict[str, dict[str, Any]]:
        """Each variant's serving configuration (variants not named serve the request)."""
        return {a: dict(c) for a, c in self._def.serve.items()}

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every change, oldest first: creation, ramps, restarts (new phases), stops."""
        return [dict(h) for h in self._def.history]

    @property
    def checksum(self) -> str:
        """A digest of everything that decides what a key is served in this phase."""
        return self._def.checksum()

    def describe(self) -> dict[str, Any]:
        d = self._def
        return {
            "name": d.name,
            "hashing": d.hashing,
            "hash_version": d.hash_version,
            "unit": d.unit,
            "variants": self.weights,
            "coverage": self.coverage,
            "layer": d.layer,
            "parent": d.parent,
            "namespace": d.namespace,
            "seed": d.seed,
            "phase": d.phase,
            "status": d.status,
            "serve": self.serve,
            "log_exposures": d.log_exposures,
            "checksum": self.checksum,
            "created": np.datetime64(d.created_ns, "ns"),
            "description": d.description,
            "history": self.history,
        }

    def assign(self, keys: Any, *, n_threads: int | None = None) -> np.ndarray:
        """The arm of each key as an int16 code into :attr:`variants` (-1: not in the
        experiment -- outside its coverage, its layer share, its parent's arm, or the
        experiment is stopped).  One vectorised call; the same key gets the same arm in
        any process, on any machine, with any thread count."""
        k = as_keys(keys)
        return assign_codes(self._state, self._def, k, n_threads_for(k.n, n_threads))

    def arm_names(self, codes: np.ndarray) -> np.ndarray:
        """Variant names of arm codes (an object array; None for -1)."""
        table = np.array([*self._def.variants, None], dtype=object)
        return table[np.asarray(codes)]


def assign_codes(state: ExperimentState, d: ExperimentDef, k: Keys, nt: int) -> np.ndarray:
    """Arm codes of keys ``k`` under definition ``d`` of ``state`` (parents included)."""
    if d.status != "running":
        return np.full(k.n, -1, dtype=np.int16)
    if d.hashing == "murmur3":
        out = np.empty(k.n, dtype=np.int16)
        layer = state.layers[d.layer] if d.layer else None
        _ASSIGN[k.form](*k.args, *d.kernel_args(layer), out, nt)
    else:
        out = _growthbook_codes(d, k, nt)
    parents = [d.parent] if d.parent else []
    layer_parent = state.layers[d.layer].parent if d.layer else None
    if layer_parent:
        parents.append(layer_parent)
    for exp, arm in parents:
        p = state.experiments[exp]
        mine = assign_codes(state, p, k, nt) == p.variants.index(arm)
        out[~mine] = -1
    return out


_ASSIGN: Final = {
    "int": _assign.assign_int,
    "utf8": _assign.assign_utf8,
    "ucs4": _assign.assign_ucs4,
}


def bucket_ranges(weights: tuple[int, ...], coverage: int) -> list[tuple[float, float]]:
    """GrowthBook's ``getBucketRanges`` of weights and coverage given in slots, computed
    with the same floating-point operations in the same order."""
    c = coverage / SLOTS
    cumulative: float = 0
    out = []
    for w in (s / SLOTS for s in weights):
        start = cumulative
        cumulative += w
        out.append((start, start + c * w))
    return out


def _growthbook_tables(d: ExperimentDef) -> tuple[np.ndarray, np.ndarray | None]:
    """The arm of every v2 bucket (0..9999) and whether every v1 bucket (0..999) is in
    the namespace, by GrowthBook's own float comparisons on n = bucket / 10000 (/ 1000),
    once per definition: a key then costs two table lookups."""
    hit = d._tables.get("gb")
    if hit is None:
        n = np.arange(SLOTS) / 10000.0
        arm = np.full(SLOTS, -1, dtype=np.int16)
        for i, (a, b) in reversed(list(enumerate(bucket_ranges(d.weights, d.coverage)))):
            arm[(n >= a) & (n < b)] = i  # reversed: the first range that holds n wins
        inside = None
        if d.namespace is not None:
            _, lo, hi = d.namespace
            m = np.arange(1000) / 1000.0
            inside = (m >= lo) & (m < hi)
        hit = d._tables["gb"] = (arm, inside)
    return hit


def _growthbook_codes(d: ExperimentDef, k: Keys, nt: int) -> np.ndarray:
    arm, inside = _growthbook_tables(d)
    out = arm[gb_buckets(k, d.seed, 2, nt)]
    if d.namespace is not None and inside is not None:
        out[~inside[gb_buckets(k, "__" + d.namespace[0], 1, nt)]] = -1
    return out


def _parent(parent: Any) -> tuple[str, str] | None:
    if parent is None:
        return None
    if isinstance(parent, str) and parent.count(":") == 1:
        parent = tuple(parent.split(":"))
    if (
        not isinstance(parent, tuple | list)
        or len(parent) != 2
        or not all(isinstance(p, str) for p in parent)
    ):
        raise ParameterError(
            f'parent must be "experiment:variant" or (experiment, variant), got {parent!r}'
        )
    return parent[0], parent[1]


def _text(x: Any, what: str) -> str:
    if not isinstance(x, str):
        raise ParameterError(f"{what} must be a str, got {x!r}")
    return x


def _seed(seed: Any) -> str | None:
    if seed is not None and (not isinstance(seed, str) or not seed):
        raise ParameterError(f"seed must be a non-empty str or None, got {seed!r}")
    return seed


def _serve(serve: Any, variants: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    if serve is None:
        return {}
    if not isinstance(serve, dict):
        raise ParameterError(f"serve must be a dict {{variant: configuration}}, got {serve!r}")
    out = {}
    for arm, cfg in serve.items():
        if arm not in variants:
            raise ParameterError(f"serve names {arm!r}, which is not a variant of {variants}")
        out[arm] = dict(check_serve(arm, cfg))
    return out


class ExperimentCatalog:
    """``store.experiments``: create, ramp, restart and stop experiments and layers, and
    read them at any version (see the module docstring and docs/experiments.md)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._log: ExposureLog | None = None

    # -- reading -----------------------------------------------------------------------------

    def _state(self, version: int | str | None = None) -> ExperimentState:
        store = self._store
        store._check_open()
        if version is not None:
            return store._kept_manifest(store.version(version)).experiments
        if store.mode == "a":
            return store._exp_work
        store._refresh_if_stale()
        return store._experiments

    def served_state(self, version: int | str | None) -> ExperimentState:
        """The committed experiments a read of ``version`` (None: the newest) serves (a
        writer's staged changes serve once committed)."""
        store = self._store
        if version is not None:
            return store._kept_manifest(store.version(version)).experiments
        store._refresh_if_stale()
        return store._experiments

    def get(self, name: str, *, version: int | str | None = None) -> Experiment:
        """The experiment ``name`` (as ``version`` had it); NotFoundError if none."""
        state = self._state(version)
        d = state.experiments.get(name)
        if d is None:
            raise NotFoundError(
                f"no experiment {name!r}"
                + (f" at version {version!r}" if version is not None else "")
                + f"; there are {sorted(state.experiments)}"
            )
        return Experiment(d, state)

    def __getitem__(self, name: str) -> Experiment:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._state().experiments

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def list(self, *, version: int | str | None = None) -> list[str]:
        """Names of the experiments, stopped ones included."""
        return sorted(self._state(version).experiments)

    def layers(self, *, version: int | str | None = None) -> dict[str, dict[str, Any]]:
        """Every layer: seed, holdout, parent, and each running experiment's share."""
        state = self._state(version)
        out = {}
        for name, la in state.layers.items():
            members = {
                e.name: e.coverage / SLOTS
                for e in state.experiments.values()
                if e.layer == name and e.status == "running"
            }
            out[name] = {
                "seed": la.seed,
                "holdout": slots_of(la.holdout).size / SLOTS,
                "parent": la.parent,
                "experiments": members,
                "free": state.layer_free(name).size / SLOTS,
                "description": la.description,
            }
        return out

    # -- changing ------------------------------------------------------------------------------

    def _stage(self, state: ExperimentState) -> None:
        state.validate()
        self._store._exp_work = state

    def _writable(self) -> ExperimentState:
        self._store._check_writable()
        return self._store._exp_work

    def create(
        self,
        name: str,
        variants: Any,
        *,
        coverage: float = 1.0,
        layer: str | None = None,
        parent: Any = None,
        seed: str | None = None,
        unit: str | None = None,
        hashing: str = "murmur3",
        layer_range: tuple[float, float] | None = None,
        namespace: tuple[str, float, float] | None = None,
        serve: dict[str, dict[str, Any]] | None = None,
        log_exposures: bool = False,
        description: str = "",
    ) -> Experiment:
        """Create an experiment (published by the next commit).

        ``variants``: ``{name: percent}`` summing exactly to 100 in steps of 0.01, or a
        list of names for an equal split.  ``coverage``: the fraction of the domain
        included (all traffic, or of the layer's).  ``layer``: the name of a layer; the
        experiment then takes ``coverage`` of the layer's traffic from its free share
        (``layer_range=(start, end)`` in percent picks the slots instead).  ``parent``:
        ``"experiment:variant"`` -- only keys in that arm are included.  ``seed``: the
        salts' seed (default: derived from the name; re-using another experiment's or
        layer's seed raises DuplicateSeedError).  ``unit``: the entity key it
        randomises; ``group.get(experiment=)`` then refuses groups keyed otherwise.
        ``hashing="growthbook"``: GrowthBook's bucketing (seed default: the name, as
        GrowthBook uses the experiment key; ``namespace=(id, start, end)``).
        ``serve``: per variant, what ``group.get(..., experiment=name)`` serves its keys:
        ``{"version": v, "features": {f: alternative}, "transforms": {t: "t@n"}}``.
        ``log_exposures``: record every assignment served (see ``exposures``)."""
        state = self._writable()
        check_name(name, "an experiment")
        if name in state.experiments:
            raise ExperimentError(f"an experiment named {name!r} already exists")
        if hashing not in HASHINGS:
            raise ParameterError(f"hashing must be one of {HASHINGS}, got {hashing!r}")
        names, weights = weight_slots(variants)
        seed = _seed(seed) or (name if hashing == "growthbook" else f"experiment:{name}")
        at = now_ns()
        d = ExperimentDef(
            name=name,
            hashing=hashing,
            unit=None if unit is None else _text(unit, "unit"),
            variants=names,
            weights=weights,
            arms=(),
            domain=(),
            layer=None,
            parent=_parent(parent),
            namespace=None,
            seed=seed,
            phase=0,
            serve=_serve(serve, names),
            status="running",
            log_exposures=bool(log_exposures),
            created_ns=at,
            history=(),
            description=_text(description, "description"),
        )
        d = self._place(state, d, coverage, layer, layer_range, namespace)
        d = d.changed(at, "created", seed=seed, variants=d.variants, weights=d.weights)
        self._stage(state.with_experiment(d))
        return Experiment(d, self._store._exp_work)

    def _place(
        self,
        state: ExperimentState,
        d: ExperimentDef,
        coverage: Any,
        layer: str | None,
        layer_range: Any,
        namespace: Any,
    ) -> ExperimentDef:
        """``d`` with a fresh arm map and domain for its (new) phase."""
        cov = fraction_slots(coverage, "coverage")
        if d.hashing == "growthbook":
            if layer is not None or layer_range is not None:
                raise ParameterError(
                    "GrowthBook experiments are made exclusive by namespace=(id, start, end), "
                    "not layers"
                )
            ns = None
            if namespace is not None:
                if (
                    not isinstance(namespace, tuple | list)
                    or len(namespace) != 3
                    or not isinstance(namespace[0], str)
                ):
                    raise ParameterError(f"namespace must be (id, start, end), got {namespace!r}")
                lo, hi = (fraction_slots(x, "a namespace bound") for x in namespace[1:])
                if hi <= lo:
                    raise ParameterError(f"namespace range must not be empty, got {namespace!r}")
                ns = (namespace[0], float(namespace[1]), float(namespace[2]))
            return ExperimentDef(
                **{**_fields(d), "domain": ((0, cov),) if cov else (), "namespace": ns}
            )
        if namespace is not None:
            raise ParameterError("namespace= is for hashing='growthbook'; use a layer")
        table = np.repeat(np.arange(len(d.weights), dtype=np.int16), d.weights)
        if layer is None:
            if layer_range is not None:
                raise ParameterError("layer_range needs a layer")
            domain = ((0, cov),) if cov else ()
        else:
            if layer not in state.layers:
                raise NotFoundError(f"no layer {layer!r}; there are {sorted(state.layers)}")
            if layer_range is not None:
                if not isinstance(layer_range, tuple | list) or len(layer_range) != 2:
                    raise ParameterError(
                        f"layer_range must be (start, end) in percent, got {layer_range!r}"
                    )
                a, b = (percent_slots(x, "a layer_range bound") for x in layer_range)
                if b <= a:
                    raise ParameterError(f"layer_range must not be empty, got {layer_range!r}")
                domain = ((a, b),)
            else:
                free = state.layer_free(layer, but=d.name)
                need_free(free, cov, 0, layer)
                domain = ranges_of(free[:cov])
        return ExperimentDef(
            **{**_fields(d), "arms": arm_runs(table), "domain": domain, "layer": layer}
        )

    def create_layer(
        self,
        name: str,
        *,
        holdout: float = 0.0,
        parent: Any = None,
        seed: str | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        """Create a layer: experiments created in it exclude each other (each owns its
        own share of the layer's slots).  ``holdout``: the fraction of the layer's
        traffic kept out of all its experiments.  ``parent``: ``"experiment:variant"``
        nests the whole layer inside one arm."""
        state = self._writable()
        check_name(name, "a layer")
        if name in state.layers:
            raise ExperimentError(f"a layer named {name!r} already exists")
        h = fraction_slots(holdout, "holdout")
        la = LayerDef(
            name,
            _seed(seed) or f"layer:{name}",
            ((SLOTS - h, SLOTS),) if h else (),
            _parent(parent),
            now_ns(),
            _text(description, "description"),
        )
        self._stage(state.with_layer(la))
        return self.layers()[name]

    def _running(self, state: ExperimentState, name: str) -> ExperimentDef:
        d = state.experiments.get(name)
        if d is None:
            raise NotFoundError(f"no experiment {name!r}; there are {sorted(state.experiments)}")
        return d

    def update(
        self,
        name: str,
        *,
        coverage: float | None = None,
        variants: Any = None,
        serve: Any = _KEEP,
        log_exposures: bool | None = None,
        description: str | None = None,
    ) -> Experiment:
        """Change a running experiment without re-randomising it: a coverage ramp moves
        no assigned key (raising it only adds keys; lowering it only drops some); new
        weights for the same variants move the fewest keys possible (the total-variation
        distance between the old and new split; GrowthBook experiments follow
        GrowthBook's ranges instead).  ``serve``/``log_exposures``/``description`` change
        what is served and logged."""
        state = self._writable()
        d = self._running(state, name)
        if d.status != "running":
            raise ExperimentError(f"experiment {name!r} is stopped; restart it for a new phase")
        at = now_ns()
        if coverage is not None:
            cov = fraction_slots(coverage, "coverage")
            if d.layer is None:
                domain = ((0, cov),) if cov else ()
            else:
                owned = slots_of(d.domain)
                free = state.layer_free(d.layer, but=name)
                free = free[~np.isin(free, owned)]
                need_free(free, cov, owned.size, d.layer)
                domain = ranges_of(resize(owned, cov, free))
            d = d.changed(at, "coverage", domain=domain, coverage=cov / SLOTS)
        if variants is not None:
            names, weights = weight_slots(variants)
            if names != d.variants:
                raise ExperimentError(
                    f"update keeps the variants {list(d.variants)} (in that order) and "
                    "changes their weights; other variants need restart()"
                )
            arms = d.arms
            if d.hashing == "murmur3":
                arms = arm_runs(rebalance(d.arm_table(), weights))
            d = d.changed(at, "weights", weights=weights, arms=arms)
        if serve is not _KEEP:
            d = d.changed(at, "serve", serve=_serve(serve, d.variants))
        if log_exposures is not None:
            d = d.changed(at, "log_exposures", log_exposures=bool(log_exposures))
        if description is not None:
            d = d.changed(at, "description", description=_text(description, "description"))
        self._stage(state.with_experiment(d))
        return Experiment(d, self._store._exp_work)

    def restart(
        self,
        name: str,
        *,
        seed: str | None = None,
        variants: Any = None,
        coverage: float | None = None,
        layer: Any = _KEEP,
        parent: Any = _KEEP,
        serve: Any = _KEEP,
        reason: str = "",
    ) -> Experiment:
        """Start a new phase: every key is re-randomised (new salts from the seed and the
        phase number), the only way assignments change wholesale; recorded in history.
        ``variants``/``coverage``/``layer``/``parent`` may change with it.  A GrowthBook
        experiment needs a new ``seed`` (its hash has no phase)."""
        state = self._writable()
        d = self._running(state, name)
        seed = _seed(seed)
        if d.hashing == "growthbook" and (seed is None or seed == d.seed):
            raise ExperimentError(
                f"experiment {name!r} hashes like GrowthBook, whose hash has no phase: "
                "re-randomise it with a new seed"
            )
        names, weights = (d.variants, d.weights) if variants is None else weight_slots(variants)
        at = now_ns()
        cov = d.coverage / SLOTS if coverage is None else coverage
        new_layer = d.layer if layer is _KEEP else layer
        new_serve = d.serve if serve is _KEEP else _serve(serve, names)
        if serve is _KEEP and set(new_serve) - set(names):
            new_serve = {a: c for a, c in new_serve.items() if a in names}
        base = ExperimentDef(
            **{
                **_fields(d),
                "variants": names,
                "weights": weights,
                "seed": seed or d.seed,
                "phase": d.phase + 1,
                "parent": d.parent if parent is _KEEP else _parent(parent),
                "serve": new_serve,
                "status": "running",
            }
        )
        ns = d.namespace
        placed = self._place(state, base, cov, new_layer, None, ns)
        placed = placed.changed(
            at, "restart", seed=placed.seed, variants=names, weights=weights, reason=reason
        )
        self._stage(state.with_experiment(placed))
        return Experiment(placed, self._store._exp_work)

    def stop(self, name: str, *, reason: str = "") -> Experiment:
        """Stop an experiment: every key then reads as not in it (-1) and is served the
        request as asked; its layer share is free for others.  ``restart`` resumes it
        with a new phase."""
        state = self._writable()
        d = self._running(state, name)
        d = d.changed(now_ns(), "stop", status="stopped", reason=_text(reason, "reason"))
        self._stage(state.with_experiment(d))
        return Experiment(d, self._store._exp_work)

    # -- exposures -----------------------------------------------------------------------------

    @property
    def log(self) -> ExposureLog:
        """This process's exposure log of the store (see mmfs.experiments.exposure)."""
        if self._log is None:
            from mmfs.experiments.exposure import ExposureLog

            self._log = ExposureLog(self._store.path)
        return self._log

    def close(self) -> None:
        """Close this process's exposure log file (Store.close does)."""
        if self._log is not None:
            self._log.close()

    def exposures(self, name: str | None = None) -> dict[str, np.ndarray]:
        """Every exposure logged by any process (first per key and phase), as columns:
        experiment, phase, arm, key, hash_version, checksum, time.  ``to_frame`` of
        :mod:`mmfs.experiments.exposure` makes it a pandas DataFrame."""
        return self.log.read(name)


def _fields(d: ExperimentDef) -> dict[str, Any]:
    return {k: getattr(d, k) for k in ExperimentDef.__dataclass_fields__ if k != "_tables"}
