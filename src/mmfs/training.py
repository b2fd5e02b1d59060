"""Point-in-time training sets: ``store.training_set(entity_df, features, ...)``.

The specification (docs/training_sets.md has it with examples):

- ``entity_df`` holds one key column per feature group named (by default the group's key
  name) and an event-time column (``time_column``, default ``"event_time"``).  It is a
  pandas DataFrame or a mapping of column name -> array.
- The result has exactly one row per input row, in input order, with the input columns
  kept.  For each row and each requested feature, the value is that of the entity's row
  with the greatest event time <= the row's time (inclusive); when ``ttl`` is given, that
  row's event time must also be >= time - ttl (inclusive).  Otherwise the value is
  missing: NaN in floats (0 in int64, False in bool, None in categories) and True in
  ``mask``.  Rows of equal event time: the one written later wins.
- Keys never seen are missing; duplicate entity rows get the same answer each; times may
  be naive (read as UTC) or time-zone aware (converted to UTC); NaT is refused.
- ``version=`` pins what the store knew: the result is then byte-identical after any later
  writes, late-arriving rows with old event times included.

How: each group's rows come from one vectorised kernel call that looks every (key, time)
up in that key's own event-time history: a few thousand keys by a binary search in each
of the group's O(log rows) sorted history runs; more are sorted by slot (a radix sort)
and merged with each run in sequence, in parallel.  Then one gather into a contiguous
block.  Nothing is ever joined as a cross product and the feature history is never
loaded: it is read where it lies in the mapped history runs.  The memory used is the
output itself plus about 56 bytes per entity row of one chunk while it runs (the keys'
slots and times, the sort, the answers); the output is charged to the store's memory
budget first.  For outputs larger than the budget, :func:`Store.training_batches` yields the
result in chunks of ``chunk_rows`` input rows (an entity frame may itself be an iterable
of frames there).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mmfs._times import to_ns
from mmfs.errors import NotFoundError, ParameterError
from mmfs.featurebatch import FeatureBatch
from mmfs.group import Selection
from mmfs.schema import Sparse
from mmfs.transforms.catalog import StoredTransform, outputs

if TYPE_CHECKING:  # pragma: no cover
    from mmfs.store import Store

__all__ = ["TrainingSet"]


class TrainingSet:
    """A point-in-time training set: the entity rows, in order, and per feature group the
    batch of feature values found for them (see the module docstring).

    ``ts[name]`` is a feature's values (as ``FeatureBatch[name]``: dense vectors are
    (n, dim) arrays, sparse ones CSR) or an input column; ``ts.mask`` is an (n, features)
    bool array (True: missing); ``ts.to_numpy()`` the (n, d) float32 matrix of the
    non-sparse features in request order; ``ts.to_pandas()`` a DataFrame of the input
    columns followed by one column per feature (dense vectors as one array per row).
    """

    def __init__(
        self,
        columns: dict[str, Any],
        index: Any,
        features: list[str],
        batches: dict[str, FeatureBatch],
        where: dict[str, tuple[str, str]],
    ) -> None:
        self._columns = columns
        self._index = index
        self.features = features
        self._batches = batches
        self._where = where  # requested name -> (group, feature)

    def __len__(self) -> int:
        return len(next(iter(self._batches.values())))

    def __repr__(self) -> str:
        return f"<TrainingSet {len(self)} rows x {self.features}>"

    @property
    def columns(self) -> list[str]:
        """The input columns, then the features."""
        return [*self._columns, *self.features]

    def __getitem__(self, name: str) -> Any:
        where = self._where.get(name)
        if where is not None:
            group, feature = where
            return self._batches[group][feature]
        if name in self._columns:
            return self._columns[name]
        raise ParameterError(f"{name!r} is neither a feature nor an input column: {self.columns}")

    def batch(self, group: str) -> FeatureBatch:
        """The FeatureBatch of one group's features (its ``event_time`` is each row's)."""
        return self._batches[group]

    @property
    def mask(self) -> np.ndarray:
        """(n, number of features) bool: True where a feature is missing for a row."""
        n = len(self)
        out = np.empty((n, len(self.features)), dtype=bool)
        for j, name in enumerate(self.features):
            out[:, j] = self._batches[self._where[name][0]].mask
        return out

    def to_numpy(self, dtype: Any = np.float32) -> np.ndarray:
        """One (n, d) matrix of the non-sparse features in request order (categories as
        codes, -1 for none; missing rows NaN)."""
        groups = list(self._batches)
        names = [f for f in self.features if not self._sparse(f)]
        if len(groups) == 1 and [self._where[f][1] for f in names] == list(
            self._batches[groups[0]].names
        ):
            return self._batches[groups[0]].to_numpy(dtype=dtype)
        parts = [self._batches[self._where[f][0]].to_numpy([self._where[f][1]], dtype=dtype)
                 for f in names]  # fmt: skip
        if not parts:
            return np.empty((len(self), 0), dtype=dtype)
        return np.concatenate(parts, axis=1)

    def _sparse(self, name: str) -> bool:
        group, feature = self._where[name]
        return isinstance(self._batches[group]._plan.types[feature], Sparse)

    def to_pandas(self) -> Any:
        """A pandas DataFrame: the input columns (and index), then one column per
        feature.  Floats are NaN where missing; int64 and bool features become pandas'
        nullable Int64 and boolean where a value is missing; categories are str or
        None; dense vectors one array per row; sparse vectors one 1 x dim CSR per row."""
        import pandas as pd

        frames = []
        for group, batch in self._batches.items():
            names = [f for f in self.features if self._where[f][0] == group]
            frames.append(batch.frame([self._where[f][1] for f in names], names, pd))
        out = frames[0] if len(frames) == 1 else pd.concat(frames, axis=1)
        if list(out.columns) != self.features:
            out = out[self.features]  # request order (a copy: only when not already)
        for pos, (name, values) in enumerate(self._columns.items()):
            out.insert(pos, name, getattr(values, "array", values))  # dtype kept, no alignment
        if self._index is not None:
            out.index = self._index
        return out


def parse_ttl(ttl: Any) -> int:
    """ttl as int64 nanoseconds (-1: none)."""
    if ttl is None:
        return -1
    if not isinstance(ttl, np.timedelta64) and isinstance(ttl, int | np.integer):
        raise ParameterError(
            "ttl must be a timedelta (numpy.timedelta64, datetime.timedelta or "
            "pandas.Timedelta); a bare number's unit would be a guess"
        )
    try:
        ns = np.timedelta64(ttl, "ns")
    except (TypeError, ValueError):
        raise ParameterError(f"ttl must be a timedelta, got {ttl!r}") from None
    if np.isnat(ns):
        raise ParameterError("ttl must be a timedelta, got NaT")
    value = int(ns.astype(np.int64))
    if value < 0:
        raise ParameterError(f"ttl must not be negative, got {ttl!r}")
    return value


def _columns_of(entity: Any) -> tuple[dict[str, Any], Any]:
    """(name -> column values, pandas index or None) of an entity frame."""
    if _is_dataframe(entity):
        return {str(c): entity[c] for c in entity.columns}, entity.index
    if isinstance(entity, Mapping):
        cols = {str(k): v for k, v in entity.items()}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise ParameterError(f"entity columns differ in length: {sorted(lengths)}")
        return cols, None
    raise ParameterError(
        f"entity_df must be a pandas DataFrame or a mapping of column -> values, "
        f"got {type(entity).__name__}"
    )


def _split(
    store: Store, features: Any, *, transformed: bool = False
) -> tuple[list[str], dict[str, tuple[str, str]]]:
    if isinstance(features, str) or not isinstance(features, Sequence):
        raise ParameterError(
            'features must be a list of "group.feature" names, e.g. ["users.clicks"]'
        )
    where: dict[str, tuple[str, str]] = {}
    names: list[str] = []
    for item in features:
        if not isinstance(item, str) or "." not in item:
            raise ParameterError(f'features are named "group.feature", got {item!r}')
        group, _, feature = item.partition(".")
        if group not in store.groups():
            raise ParameterError(f"no feature group {group!r}; groups: {store.groups()}")
        schema = store[group].schema
        chosen = list(schema) if feature == "*" else [feature]
        for f in chosen:
            if f not in schema:
                raise ParameterError(f"group {group!r} has no feature {f!r}: {list(schema)}")
            name = f"{group}.{f}"
            if name in where:
                raise ParameterError(f"feature {name!r} is named twice")
            where[name] = (group, f)
            names.append(name)
    if not names and not transformed:
        raise ParameterError("features is empty: name at least one")
    return names, where


def build(
    store: Store,
    entity: Any,
    features: Any,
    *,
    version: int | str | None,
    ttl: Any,
    time_column: str,
    key_columns: Mapping[str, str] | None,
    n_threads: int | None,
    transform: Any = None,
) -> TrainingSet:
    names, where = _split(store, features, transformed=transform is not None)
    ttl_ns = parse_ttl(ttl)
    columns, index = _columns_of(entity)
    if time_column not in columns:
        raise ParameterError(
            f"entity_df has no time column {time_column!r} (columns: {list(columns)}); "
            "name it with time_column="
        )
    n = len(columns[time_column])
    # to_ns refuses NaT, integers and anything not one-dimensional
    times = to_ns(columns[time_column], n) if n else np.zeros(0, dtype=np.int64)
    batches: dict[str, FeatureBatch] = {}
    groups = list(dict.fromkeys(g for g, _ in where.values()))
    snaps = {group: _snapshot(store, group, version) for group in groups}
    chosen = _transforms(store, transform, snaps, version)
    for group, sts in chosen.items():
        for st in sts:
            for out, _ in outputs(st):
                name = f"{group}.{out}"
                where[name] = (group, out)
                names.append(name)
    if not names:
        raise ParameterError("features and transform are empty: name at least one")
    for group in snaps:
        g = store[group]
        col = (key_columns or {}).get(group, g.key)
        if col not in columns:
            raise ParameterError(
                f"entity_df has no key column {col!r} for group {group!r} (columns: "
                f"{list(columns)}); map it with key_columns={{{group!r}: column}}"
            )
        keys = _keys(columns[col], g.key_type, col)
        snap = snaps[group]
        feats: Any = [f for name, (gg, f) in where.items() if gg == group]
        if group in chosen:
            raw = tuple(f for f in feats if f in snap.features)
            feats = Selection(snap.check_names(raw), tuple(chosen[group]))
        batches[group] = g._as_of_batch(
            snap, keys, times.view("datetime64[ns]"), feats, ttl=ttl_ns, n_threads=n_threads,
            call="training_set()",
        )  # fmt: skip
    return TrainingSet(columns, index, names, batches, where)


def _snapshot(store: Store, group: str, version: int | str | None) -> Any:
    if version is None:  # _split's store.groups() has just refreshed a reader
        return store._snapshot(group)
    return store._version_snapshot(group, version)


def _transforms(
    store: Store, transform: Any, snaps: dict[str, Any], version: int | str | None
) -> dict[str, list[StoredTransform]]:
    """{group: its stored transforms} of ``transform`` (a name without a version: the
    version pinned to a feature of a requested group, at the version read).  A group
    that only a transform names joins ``snaps``."""
    if transform is None:
        return {}
    refs = [transform] if isinstance(transform, str | StoredTransform) else list(transform)
    catalog = store.transforms
    chosen: dict[str, list[StoredTransform]] = {}
    for ref in refs:
        st = catalog.resolve(ref, {})  # None: a name without a version, found by its pin
        if st is None:  # the requested groups' pins first, then every other group's
            for group in [*snaps, *(g for g in store.groups() if g not in snaps)]:
                try:
                    snap = snaps.get(group) or _snapshot(store, group, version)
                except NotFoundError:  # a group the pinned version does not have
                    continue
                st = catalog.resolve(ref, snap.pins())
                if st is not None:
                    break
        if st is None:
            raise NotFoundError(
                f"transform {ref!r} is not pinned to a feature of any group at the "
                "version read; name its version (name@n)"
            )
        if st.group not in snaps:
            snaps[st.group] = _snapshot(store, st.group, version)
        chosen.setdefault(st.group, []).append(st)
    return chosen


def _keys(column: Any, key_type: str, name: str) -> Any:
    values = np.asarray(column.to_numpy() if hasattr(column, "to_numpy") else column)
    if key_type == "int64":
        if values.dtype.kind not in "iu":
            raise ParameterError(
                f"key column {name!r} must hold integers (the group's keys are int64), "
                f"got {values.dtype}"
            )
        return values.astype(np.int64, copy=False)
    if values.dtype.kind not in "UO":
        raise ParameterError(
            f"key column {name!r} must hold str (the group's keys are str), got {values.dtype}"
        )
    return values.astype(object, copy=False)


def chunks(
    store: Store,
    entity: Any,
    features: Any,
    *,
    chunk_rows: int,
    **kw: Any,
) -> Iterator[TrainingSet]:
    """Training sets of consecutive chunks of the entity rows (or of each frame of an
    iterable of frames, each cut into chunks of at most ``chunk_rows``).  Bad arguments
    raise here, not at the first chunk."""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ParameterError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    single = isinstance(entity, Mapping) or _is_dataframe(entity)
    return _chunks(store, [entity] if single else entity, features, chunk_rows, kw)


def _chunks(
    store: Store, frames: Iterable[Any], features: Any, chunk_rows: int, kw: dict[str, Any]
) -> Iterator[TrainingSet]:
    for frame in frames:
        columns, _ = _columns_of(frame)
        n = len(next(iter(columns.values()))) if columns else 0
        for lo in range(0, max(n, 1), chunk_rows):
            hi = min(n, lo + chunk_rows)
            if hasattr(frame, "iloc"):
                part: Any = frame.iloc[lo:hi]
            else:
                part = {c: v[lo:hi] for c, v in columns.items()}
            yield build(store, part, features, **kw)


def _is_dataframe(entity: Any) -> bool:
    """A pandas DataFrame (or anything with its columns and index), without importing
    pandas."""
    return hasattr(entity, "columns") and hasattr(entity, "index")
