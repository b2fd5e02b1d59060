"""Composite transforms and the scikit-learn bridge.

:class:`Pipeline` chains steps (each fitted on the previous one's output, as
scikit-learn's Pipeline does).  A pipeline of affine steps whose roles come in the order
*fill, then arithmetic, then clip* (at most one step of each: an imputer, then a scaler,
then a clip) is itself one affine step: it is applied as that step, fused into the read
kernel and rounded once, which can differ from running the steps one by one in float32
by the last bit.  Any other pipeline runs its steps in turn.

:class:`Columns` is scikit-learn's ColumnTransformer: each part applies to some input
columns and the outputs are concatenated in part order, then the remainder
("passthrough") or not ("drop").

:func:`from_sklearn` converts a fitted scikit-learn estimator, Pipeline or
ColumnTransformer of supported steps; ``to_sklearn()`` goes back.  Stored state: a
composite's options list its steps' kinds, options and widths, and its arrays are the
steps' arrays prefixed ``s<i>_``.
"""

from __future__ import annotations

import copy
from typing import Any, Self

import numpy as np

from mmfs.errors import MissingDependencyError, ParameterError
from mmfs.transforms._base import KINDS, Affine, Transform, apply_affine, from_state

__all__ = ["Columns", "Pipeline", "expands", "from_sklearn"]


def _as_step(step: Any) -> Transform:
    if isinstance(step, Transform):
        return step
    if isinstance(step, dict) and isinstance(step.get("kind"), str):
        cls = KINDS.get(step["kind"])
        if cls is None or not isinstance(step.get("options", {}), dict):
            raise ParameterError(f"unknown transform step {step!r}; kinds: {sorted(KINDS)}")
        return cls(**step.get("options", {}))
    raise ParameterError(f"a pipeline step must be a transform, got {step!r}")


def _pack(steps: list[Transform]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    docs, arrays = [], {}
    for i, t in enumerate(steps):
        if t.params is None:
            docs.append({"kind": t.kind, "options": t.options})
            continue
        doc, arr = t.to_state()
        docs.append(doc)
        arrays.update({f"s{i}_{k}": v for k, v in arr.items()})
    return docs, arrays


def _unpack(docs: Any, arrays: dict[str, np.ndarray]) -> list[Transform]:
    if not isinstance(docs, list) or not docs:
        raise ParameterError(f"a composite needs a non-empty list of steps, got {docs!r}")
    steps = []
    for i, doc in enumerate(docs):
        prefix = f"s{i}_"
        mine = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        steps.append(from_state(doc, mine))
    return steps


def _role(a: Affine) -> set[str]:
    roles = set()
    if not np.all(np.isnan(a.fill)):
        roles.add("fill")
    if np.any(a.sub != 0) or np.any(a.mul != 1) or np.any(a.add != 0):
        roles.add("core")
    if np.any(a.lo != -np.inf) or np.any(a.hi != np.inf):
        roles.add("clip")
    return roles


class Pipeline(Transform):
    """Steps applied in turn, each fitted on the previous step's output."""

    kind = "pipeline"
    sklearn_class = "sklearn.pipeline.Pipeline"

    def __init__(self, steps: Any) -> None:
        if isinstance(steps, Transform | dict) or not isinstance(steps, list | tuple):
            raise ParameterError(f"Pipeline takes a list of steps, got {steps!r}")
        self.steps = [_as_step(s) for s in steps]
        if not self.steps:
            raise ParameterError("Pipeline needs at least one step")
        super().__init__()
        self._sync()

    def _sync(self) -> None:
        self.options = {"steps": _pack(self.steps)[0]}
        self.categorical = self.steps[0].categorical  # type: ignore[misc]
        self.columnwise = all(s.columnwise for s in self.steps)  # type: ignore[misc]

    def fit(self, X: Any) -> Self:
        X = self._check_input(X)
        if X.shape[0] == 0:
            raise ParameterError("pipeline: cannot fit on 0 rows")
        new = copy.copy(self)
        new.steps = []
        for step in self.steps:
            fitted = step.fit(X)
            new.steps.append(fitted)
            X = fitted.transform(X)
        new.n_features_in = new.steps[0].n_features_in
        new.params = _pack(new.steps)[1]
        new._sync()
        return new

    @classmethod
    def _restore(cls, options: dict[str, Any], arrays: dict[str, np.ndarray], n_in: int) -> Self:
        t = cls(_unpack(options["steps"], arrays))
        t.params = arrays
        t.n_features_in = n_in
        return t

    def _check_input(self, X: Any) -> np.ndarray:
        return self.steps[0]._check_input(X)

    def _apply(self, X: np.ndarray) -> np.ndarray:
        a = self.affine()
        if a is not None:
            return apply_affine(X, a)
        for step in self.steps:
            X = step.transform(X)
        return X

    def out_widths(self) -> list[int]:
        widths = [1] * self.steps[0].n_features_in  # type: ignore[operator]
        for step in self.steps:
            w, pos, new = step.out_widths(), 0, []
            for k in widths:  # an input column's k columns become the sum of theirs
                new.append(sum(w[pos : pos + k]))
                pos += k
            widths = new
        return widths

    def n_outputs(self) -> int:
        return self.steps[-1].n_outputs()

    def affine(self) -> Affine | None:
        parts = [s.affine() for s in self.steps]
        if any(p is None for p in parts):
            return None
        order = {"fill": 0, "core": 1, "clip": 2}
        seen: list[int] = []
        for p in parts:
            assert p is not None
            seen += sorted(order[r] for r in _role(p))
        if seen != sorted(seen) or len(seen) != len(set(seen)):
            return None  # two steps of one role, or roles out of order: run the steps
        out = list(parts[0])  # type: ignore[arg-type]
        for p in parts[1:]:
            assert p is not None
            roles = _role(p)
            if "fill" in roles:
                out[5] = p.fill
            if "core" in roles:
                out[0:3] = p.sub, p.mul, p.add
            if "clip" in roles:
                out[3:5] = p.lo, p.hi
        return Affine(*out)

    def to_sklearn(self) -> Any:
        pipeline = _sklearn("pipeline")
        return pipeline.Pipeline(
            [(f"{s.kind}_{i}", s.to_sklearn()) for i, s in enumerate(self.steps)]
        )

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        steps = [from_sklearn(s) for _, s in est.steps if s not in (None, "passthrough")]
        t = cls(steps)
        t.n_features_in = steps[0].n_features_in
        t.params = _pack(steps)[1]
        return t


class Columns(Transform):
    """scikit-learn's ColumnTransformer: ``parts`` is a list of (transform, input column
    indices); outputs concatenate in part order, then the ``remainder`` columns (those no
    part names) when it is ``"passthrough"``."""

    kind = "columns"
    sklearn_class = "sklearn.compose.ColumnTransformer"
    columnwise = False

    def __init__(self, parts: Any, remainder: str = "drop") -> None:
        if remainder not in ("drop", "passthrough"):
            raise ParameterError(f'remainder must be "drop" or "passthrough", got {remainder!r}')
        if not isinstance(parts, list | tuple) or not parts:
            raise ParameterError("Columns needs a non-empty list of (transform, columns)")
        self.parts: list[tuple[Transform, list[int]]] = []
        for part in parts:
            if isinstance(part, dict):
                step, cols = _as_step(part["step"]), part["columns"]
            else:
                step, cols = _as_step(part[0]), part[1]
            cols = [int(c) for c in cols]
            if not cols or min(cols) < 0:
                raise ParameterError(f"a part's columns must be indices >= 0, got {cols!r}")
            self.parts.append((step, cols))
        super().__init__()
        self.remainder = remainder
        self._sync()

    def _sync(self) -> None:
        docs = _pack([t for t, _ in self.parts])[0]
        self.options = {
            "parts": [
                {"step": d, "columns": c} for d, (_, c) in zip(docs, self.parts, strict=True)
            ],
            "remainder": self.remainder,
        }
        self.categorical = any(t.categorical for t, _ in self.parts)  # type: ignore[misc]

    def _rest(self, d: int) -> list[int]:
        used = {c for _, cols in self.parts for c in cols}
        return [c for c in range(d) if c not in used] if self.remainder == "passthrough" else []

    def fit(self, X: Any) -> Self:
        X = self._check_input(X)
        if X.shape[0] == 0:
            raise ParameterError("columns: cannot fit on 0 rows")
        if max(c for _, cols in self.parts for c in cols) >= X.shape[1]:
            raise ParameterError(f"columns: a part names a column beyond the {X.shape[1]} given")
        new = copy.copy(self)
        new.parts = [(t.fit(X[:, cols]), cols) for t, cols in self.parts]
        new.n_features_in = X.shape[1]
        new.params = _pack([t for t, _ in new.parts])[1]
        new._sync()
        return new

    @classmethod
    def _restore(cls, options: dict[str, Any], arrays: dict[str, np.ndarray], n_in: int) -> Self:
        steps = _unpack([p["step"] for p in options["parts"]], arrays)
        parts = [(s, p["columns"]) for s, p in zip(steps, options["parts"], strict=True)]
        t = cls(parts, options["remainder"])
        t.params = arrays
        t.n_features_in = n_in
        return t

    def _apply(self, X: np.ndarray) -> np.ndarray:
        outs = [t.transform(X[:, cols]) for t, cols in self.parts]  # floats, each
        rest = self._rest(X.shape[1])
        if rest:
            outs.append(X[:, rest])
        dtype = np.result_type(*[o.dtype for o in outs])
        return np.concatenate([np.asarray(o, dtype=dtype) for o in outs], axis=1)

    def out_widths(self) -> list[int]:
        raise ParameterError("a Columns transform mixes columns; it has no per-column widths")

    def n_outputs(self) -> int:
        assert self.n_features_in is not None
        return sum(t.n_outputs() for t, _ in self.parts) + len(self._rest(self.n_features_in))

    def to_sklearn(self) -> Any:
        compose = _sklearn("compose")
        ct = compose.ColumnTransformer(
            [(f"{t.kind}_{i}", t.to_sklearn(), cols) for i, (t, cols) in enumerate(self.parts)],
            remainder=self.remainder,
        )
        # A ColumnTransformer is fitted by fit(); its parts already are: fit it on a frame of
        # the right width, then put the fitted parts in (what its transform() reads).
        assert self.n_features_in is not None
        ct.fit(np.zeros((1, self.n_features_in)))
        ct.transformers_ = [
            (name, est, cols) for (name, _, cols), (est) in zip(
                ct.transformers_, [t.to_sklearn() for t, _ in self.parts] + [
                    tr for _, tr, _ in ct.transformers_[len(self.parts):]
                ], strict=True,
            )
        ]  # fmt: skip
        return ct

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        parts = []
        for name, tr, cols in est.transformers_:
            if isinstance(tr, str) or name == "remainder":
                continue  # "drop", or the remainder (an identity FunctionTransformer)
            idx = np.arange(est.n_features_in_)[cols].tolist()
            parts.append((from_sklearn(tr), idx))
        remainder = "passthrough" if est.remainder == "passthrough" else "drop"
        t = cls(parts, remainder)
        t.n_features_in = int(est.n_features_in_)
        t.params = _pack([p for p, _ in parts])[1]
        return t


def _sklearn(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"sklearn.{module}")
    except ImportError:  # pragma: no cover - scikit-learn is installed in the test env
        raise MissingDependencyError(
            "to_sklearn() needs scikit-learn, an optional dependency: pip install scikit-learn"
        ) from None


def from_sklearn(est: Any) -> Transform:
    """The fitted mmfs transform equivalent to a fitted scikit-learn estimator (a
    supported preprocessing step, a Pipeline or a ColumnTransformer of them)."""
    name = type(est).__name__
    tried = []
    for cls in KINDS.values():
        if cls.sklearn_class.rsplit(".", 1)[-1] == name:
            try:
                return cls._from_sklearn(est)
            except ParameterError as e:  # e.g. a FunctionTransformer of another function
                tried.append(str(e))
    supported = sorted({c.sklearn_class.rsplit(".", 1)[-1] for c in KINDS.values()} - {""})
    why = f": {'; '.join(tried)}" if tried else ""
    raise ParameterError(f"cannot import a scikit-learn {name}{why}; mmfs supports {supported}")


def expands(t: Transform) -> bool:
    """Whether the transform turns one column into a vector (one-hot encodings)."""
    if isinstance(t, Pipeline):
        return any(expands(s) for s in t.steps)
    return t.kind == "one_hot_encoder" or (
        t.kind == "kbins_discretizer" and t.options.get("encode") != "ordinal"
    )
