"""FeatureBatch: the result of ``group.get``, one entry per requested key.

A batch owns one contiguous byte block that the read kernel filled with the stored bytes
of every requested feature: one record per key, the features back to back in request
order (a numpy record array of the selection; when all of them are float32 it is the
(n, d) float32 matrix itself).  Features are decoded from it on first access and cached:

  ``batch["clicks"]``       the feature's values, one per key (dense: an (n, dim) array,
                            sparse: a scipy.sparse CSR matrix, category: an object array
                            of str)
  ``batch.to_numpy()``      one (n, d) float32 matrix of the non-sparse features in
                            request order (categories as their codes, bools as 0/1)
  ``batch.mask``            True where a key was missing (numpy.ma's convention)
  ``batch.event_time``      datetime64[ns] of each key's row (NaT where missing)
  ``np.asarray(batch)``     the same matrix as ``to_numpy()``
  ``batch.to_torch()``      that matrix as a torch tensor sharing its memory
  ``batch.to_arrow()``      a pyarrow RecordBatch, one column per feature, null where
                            missing (a dense feature that lies contiguous in the block,
                            as in a one-feature batch, is not copied)
  ``batch.to_pandas()``     a pandas DataFrame indexed by the keys

torch, pyarrow and pandas are optional: each is imported only by the method that needs it,
and its absence is a clear :class:`~mmfs.errors.MissingDependencyError`.

Missing keys read as NaN in float features and in ``to_numpy()``, 0 in int64 scalars,
False in bools, None in categories and an empty row in sparse features; ``mask`` tells
them apart from stored values.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mmfs.errors import MissingDependencyError, ParameterError
from mmfs.schema import Category, Dense, FeatureType, Scalar, Sparse
from mmfs.transforms._base import Transform
from mmfs.transforms.catalog import input_matrix
from mmfs.transforms.custom import CustomTransform

if TYPE_CHECKING:  # pragma: no cover
    from mmfs.group import _Plan, _Snapshot

__all__ = ["FeatureBatch"]

_F32 = np.dtype(np.float32)


class FeatureBatch:
    """Feature values of a batch of keys (see the module docstring)."""

    __slots__ = (
        "_all", "_arms", "_block", "_cache", "_found", "_keys", "_plan", "_rec", "_rows",
        "_snap", "_variants",
    )  # fmt: skip

    def __init__(
        self,
        snap: _Snapshot,
        plan: _Plan,
        keys: Any,
        block: np.ndarray,
        rows: Any,
        found: np.ndarray,
        all_found: bool,
    ) -> None:
        self._snap = snap
        self._all = all_found
        self._plan = plan
        self._keys = keys
        self._block = block
        self._rows = rows
        self._found = found
        self._rec: np.ndarray | None = None
        self._cache: dict[str, Any] | None = None
        self._arms: np.ndarray | None = None
        self._variants: tuple[str, ...] = ()
        if plan.post:
            self._transform()

    def _transform(self) -> None:
        """Compute the read's transforms that the kernel did not fuse into the copy, from
        the found keys' inputs into their output fields (missing keys stay missing).
        Outputs the store caches (TransformCatalog.cache) are copied for the rows that
        are each key's latest one at the snapshot and computed for the others."""
        found = self._found
        sel = found.nonzero()[0] if not self._all else slice(None)
        m = int(np.count_nonzero(found))
        if not m:
            return
        rows = np.asarray(self._rows, dtype=np.int64).reshape(-1)[sel]
        for post in self._plan.post:
            cache = self._snap.cached_outputs(post)
            todo: Any = sel
            if cache is not None:
                cached_rows, cached = cache
                slots = self._snap.row_slots(rows)
                hit = cached_rows[slots] == rows
                at = np.arange(len(self))[sel]
                for name, values in zip(post.outputs, cached, strict=True):
                    self._put(name, at[hit], values[slots[hit]])
                todo = at[~hit]
                if not todo.size:
                    continue
            k = len(self) if isinstance(todo, slice) else len(todo)
            values = compute(post, [self[f][todo] for f in post.inputs], k)
            for name, v in zip(post.outputs, values, strict=True):
                self._put(name, todo, v)

    def _put(self, name: str, where: Any, values: np.ndarray) -> None:
        """Write a transform's (k, w) output into an output field's rows ``where``."""
        dst = self[name]
        with np.errstate(over="ignore", invalid="ignore"):  # to float32: inf, as a cast
            dst[where] = values.reshape((-1, *dst.shape[1:]))

    @property
    def names(self) -> tuple[str, ...]:
        """The features of the batch, in request order."""
        return self._plan.names

    @property
    def arms(self) -> np.ndarray | None:
        """A read with ``experiment=``: each key's arm, an int16 code into
        :attr:`variants` (-1: not in the experiment, served the request as asked);
        otherwise None."""
        return self._arms

    @property
    def variants(self) -> tuple[str, ...]:
        """The variant names the codes of :attr:`arms` index (() without experiment)."""
        return self._variants

    @property
    def row_bytes(self) -> int:
        """Bytes a key takes in the batch's block (what ``get(out=)`` needs per key)."""
        return self._plan.row_bytes

    def __len__(self) -> int:
        return self._found.shape[0]

    def __repr__(self) -> str:
        n = len(self)
        missing = int(n - np.count_nonzero(self._found))
        return f"<FeatureBatch {n} keys x {list(self.names)}, {missing} missing>"

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    @property
    def keys(self) -> np.ndarray:
        """The requested keys, in request order (int64 array, or an object array of str)."""
        keys = self._keys
        if isinstance(keys, np.ndarray):
            return keys
        if self._snap.str_keys:
            out = np.empty(len(self), dtype=object)
            out[:] = [keys] if isinstance(keys, str) else list(keys)
            return out
        return np.asarray([keys] if isinstance(keys, int) else keys, dtype=np.int64).reshape(-1)

    @property
    def found(self) -> np.ndarray:
        """True where the key was found."""
        return self._found.copy()

    @property
    def mask(self) -> np.ndarray:
        """True where the key was missing."""
        return ~self._found

    @property
    def event_time(self) -> np.ndarray:
        """The event time of each key's row, datetime64[ns] (NaT where missing)."""
        rows = np.asarray(self._rows, dtype=np.int64).reshape(-1)
        t = self._snap.event_times(rows)
        t[~self._found] = np.iinfo(np.int64).min
        return t.view("datetime64[ns]")

    def _records(self) -> np.ndarray:
        rec = self._rec
        if rec is None:
            rec = self._rec = self._block.view(np.uint8).reshape(-1).view(self._plan.dtype)
        return rec

    def __getitem__(self, name: str) -> Any:
        cache = self._cache
        if cache is None:
            cache = self._cache = {}
        elif name in cache:
            return cache[name]
        plan = self._plan
        view = plan.views.get(name)
        if view is not None:  # stored as it reads: a strided view of the block
            dtype, offset, shape, strides = view
            n = self._found.shape[0]
            if n == 0:  # no block to view into
                value = np.zeros((0, *shape), dtype)
            else:
                value = np.ndarray(
                    (n, *shape), dtype, self._block, offset, (plan.row_bytes, *strides)
                )
            if not self._all and dtype.kind == "f":
                value[~self._found] = np.nan
        elif name in plan.types:
            value = self._snap.decode(plan.sources[name], self._records()[name], self._found)
        else:
            raise ParameterError(
                f"feature {name!r} is not in this batch; it holds {list(self.names)}"
            )
        cache[name] = value
        return value

    def to_dict(self) -> dict[str, Any]:
        """{feature name: values} for every feature of the batch."""
        return {name: self[name] for name in self.names}

    def to_numpy(
        self, features: Sequence[str] | None = None, *, dtype: Any = np.float32
    ) -> np.ndarray:
        """One (n, d) matrix of ``features`` (default: every non-sparse one, in order).

        Scalars take one column, dense vectors ``dim`` columns, categories their code
        (-1 where there is no value).  Missing keys are NaN rows.  Sparse features do not
        fit a dense matrix: read them with ``batch[name]`` (scipy.sparse CSR).  When every
        feature of the batch is float32 and every key was found, the result is the
        batch's own block, without a copy.
        """
        n = self._found.shape[0]
        if features is None and self._plan.all_f32 and (dtype is np.float32 or dtype == _F32):
            out = self._block  # already the (n, d) float32 matrix
            if not self._all:
                out[np.flatnonzero(~self._found)] = np.nan
            return out
        dt = np.dtype(dtype)
        if dt.kind != "f":
            raise ParameterError(f"to_numpy dtype must be a float dtype, got {dt}")
        types = self._plan.types
        if features is None:
            names = [f for f in self.names if not isinstance(types[f], Sparse)]
        else:
            names = list(features)
            for f in names:
                if f not in self.names:
                    raise ParameterError(f"feature {f!r} is not in this batch: {list(self.names)}")
                if isinstance(types[f], Sparse):
                    raise ParameterError(
                        f"feature {f!r} is sparse; read it with batch[{f!r}] "
                        "(a scipy.sparse CSR matrix)"
                    )
        width = sum(types[f].width for f in names)
        out = np.empty((n, width), dtype=dt)
        col = 0
        for f in names:
            w = types[f].width
            value = self.codes(f) if isinstance(types[f], Category) else self[f]
            with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, as cast
                out[:, col : col + w] = value.reshape(n, w)
            col += w
        out[~self._found] = np.nan
        return out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self.to_numpy(dtype=np.float32 if dtype is None else dtype)

    def codes(self, name: str) -> np.ndarray:
        """The int32 codes of a category feature (-1: no value or missing key)."""
        if not isinstance(self._plan.types.get(name), Category) or name not in self.names:
            raise ParameterError(f"{name!r} is not a category feature of this batch")
        codes = np.array(self._records()[name], dtype=np.int32)
        codes[~self._found] = -1
        return self._snap.check_codes(name, codes)

    # -- other libraries' types ---------------------------------------------------------

    def to_torch(self) -> Any:
        """``to_numpy()`` as a torch tensor; ``torch.from_numpy`` shares its memory."""
        torch = _optional("torch", "to_torch()")
        return torch.from_numpy(self.to_numpy())

    def to_pandas(self) -> Any:
        """A DataFrame indexed by the keys, one column per feature in request order.

        Floats are NaN where a key is missing; int64 and bool features become pandas'
        nullable Int64 and boolean when a key is missing; categories are str or None;
        dense vectors one array per row; sparse vectors one 1 x dim CSR per row.  When
        every feature is a float32 scalar the frame's one block is the batch's own.
        """
        pd = _optional("pandas", "to_pandas()")
        frame = self.frame(list(self.names), list(self.names), pd)
        frame.index = pd.Index(self.keys, name=self._snap.meta.key)
        return frame

    def frame(self, features: list[str], columns: list[str], pd: Any) -> Any:
        """A DataFrame (default index) of ``features`` named ``columns``."""
        types = self._plan.types
        if (
            self._plan.all_f32
            and features == list(self.names)
            and all(types[f].width == 1 for f in features)
        ):  # the block is the frame's one float32 block: no copy
            return pd.DataFrame(self.to_numpy(), columns=columns, copy=False)
        n = len(self)
        cols = {c: self._pandas_column(f, n, pd) for c, f in zip(columns, features, strict=True)}
        return pd.DataFrame(cols, index=pd.RangeIndex(n))

    def _pandas_column(self, feature: str, n: int, pd: Any) -> Any:
        value = self[feature]
        if isinstance(self._plan.types[feature], Sparse):
            return pd.Series([value[i] for i in range(n)], dtype=object)
        if value.ndim == 2:
            return pd.Series(list(value), dtype=object)
        if value.dtype == object:  # categories: str or None, whatever the rows hold
            return pd.Series(value, dtype=object)
        missing = self.mask
        if value.dtype.kind in "ib" and missing.any():
            kind = "Int64" if value.dtype.kind == "i" else "boolean"
            return pd.array(np.where(missing, None, value), dtype=kind)
        return value

    def to_arrow(self) -> Any:
        """A pyarrow RecordBatch: one column per feature in request order, null where a
        key is missing.  Scalars are primitive arrays, dense vectors fixed-size lists,
        categories dictionary arrays (int32 codes over the category strings), sparse
        vectors a struct of two lists (``indices`` int32, ``values`` float32) sharing the
        CSR's buffers.  A numeric column whose values lie contiguous in the batch's block
        (a one-feature batch, or the one feature of a row) is not copied."""
        pa = _optional("pyarrow", "to_arrow()")
        n = len(self)
        valid = None
        if not self._all:
            valid = pa.py_buffer(np.packbits(self._found, bitorder="little"))
        columns = [self._arrow_column(pa, name, n, valid) for name in self.names]
        return pa.RecordBatch.from_arrays(columns, names=list(self.names))

    def _arrow_column(self, pa: Any, name: str, n: int, valid: Any) -> Any:
        ftype = self._plan.types[name]
        if isinstance(ftype, Category):
            codes = self.codes(name)
            table = self._snap.category_table(name)
            return pa.DictionaryArray.from_arrays(
                pa.array(codes, mask=codes < 0), pa.array(table.tolist(), pa.string())
            )
        if isinstance(ftype, Sparse):
            csr = self[name]
            offsets = pa.py_buffer(np.ascontiguousarray(csr.indptr, dtype=np.int32))
            idx = pa.Array.from_buffers(
                pa.int32(), csr.nnz, [None, pa.py_buffer(_c(csr.indices, np.int32))]
            )
            val = pa.Array.from_buffers(
                pa.float32(), csr.nnz, [None, pa.py_buffer(_c(csr.data, np.float32))]
            )
            lists = [
                pa.ListArray.from_buffers(pa.list_(a.type), n, [None, offsets], children=[a])
                for a in (idx, val)
            ]
            return pa.StructArray.from_arrays(lists, ["indices", "values"], mask=_mask(pa, self))
        value = self[name]
        if value.dtype == np.bool_:  # arrow packs bools into bits: one copy
            values = pa.array(value.reshape(-1))
            if isinstance(ftype, Scalar):
                return pa.array(value, mask=None if valid is None else ~self._found)
        else:
            flat = _c(value, value.dtype)
            values = pa.Array.from_buffers(
                pa.from_numpy_dtype(flat.dtype), flat.size, [None, pa.py_buffer(flat)]
            )
            if isinstance(ftype, Scalar):
                return pa.Array.from_buffers(values.type, n, [valid, pa.py_buffer(flat)])
        assert isinstance(ftype, Dense)
        return pa.FixedSizeListArray.from_buffers(
            pa.list_(values.type, ftype.width), n, [valid], children=[values]
        )


def compute(post: Any, arrays: list[Any], m: int) -> list[np.ndarray]:
    """A post transform's outputs (one array per output, in the output's dtype) from its
    input features' values for m rows: the one code path of every transformed read."""
    t = post.transform
    if isinstance(t, CustomTransform):
        Y = t.call(arrays, m)
    else:
        X = input_matrix(arrays, list(post.types), t.categorical)
        Y = _normalize_per_feature(t, X, post.types) if t.kind == "normalizer" else t.transform(X)
    out, col = [], 0
    for w in post.widths:
        out.append(Y[:, col : col + w])
        col += w
    return out


def _normalize_per_feature(t: Transform, X: np.ndarray, types: Sequence[FeatureType]) -> np.ndarray:
    """A Normalizer normalises each input feature's vector on its own."""
    out = np.empty(X.shape, dtype=np.float32 if X.dtype == np.float32 else np.float64)
    col = 0
    for ty in types:
        out[:, col : col + ty.width] = t._apply(X[:, col : col + ty.width])
        col += ty.width
    return out


def _c(value: np.ndarray, dtype: Any) -> np.ndarray:
    """value as a C-contiguous array of dtype (itself when it already is one)."""
    return np.ascontiguousarray(value, dtype=dtype)


def _mask(pa: Any, batch: FeatureBatch) -> Any:
    return None if batch._all else pa.array(~batch._found)


def _optional(module: str, what: str) -> Any:
    """Import an optional dependency, or say which one ``what`` needs."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{what} needs {module}, an optional dependency: pip install {module}"
        ) from None
