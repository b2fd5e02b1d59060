"""Argument checking shared by the public vector functions.

The public layer checks, the kernels only compute: everything here turns user input into
C-contiguous float32/float64 arrays of agreed shapes, or raises an error from
mmfs.errors that says what was expected and what arrived.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmfs.errors import DimensionError, ParameterError

__all__ = ["as_matrix", "check_out", "compute_dtype", "is_sparse"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def is_sparse(x: Any) -> bool:
    """True for any scipy.sparse matrix or array (scipy is imported lazily)."""
    if not hasattr(x, "tocsr"):
        return False
    import scipy.sparse as sp

    return sp.issparse(x)


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is not None:
        return f"{type(x).__name__} of shape {shape} and dtype {dtype}"
    return type(x).__name__


def as_array(x: Any, name: str) -> np.ndarray:
    """np.asarray with our error for things that are not numeric arrays."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{name} must be array-like, got {_describe(x)}: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise ParameterError(
            f"{name} must hold real numbers or booleans, got dtype {arr.dtype} ({_describe(x)})"
        )
    return arr


def compute_dtype(*arrays: np.ndarray, dtype: Any = None) -> np.dtype:
    """float32 when every input (and the requested output) is float32 or smaller, else
    float64.  Integers and booleans compute in float64, as scipy does."""
    wanted = None
    if dtype is not None:
        try:
            wanted = np.dtype(dtype)
        except TypeError:
            raise ParameterError(f"dtype must be float32 or float64, got {dtype!r}") from None
        if wanted not in _FLOATS:
            raise ParameterError(f"dtype must be float32 or float64, got {wanted}")
    single = all(a.dtype in (np.float32, np.float16) for a in arrays)
    if single and (wanted is None or wanted == np.float32):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def as_matrix(x: Any, name: str, dtype: np.dtype) -> np.ndarray:
    """A C-contiguous 2-D array of `dtype` (no copy when x already is one)."""
    arr = as_array(x, name)
    if arr.ndim != 2:
        raise DimensionError(
            f"{name} must be a 2-D array of shape (n_rows, n_features), got shape {arr.shape}"
        )
    return np.ascontiguousarray(arr, dtype=dtype)


def check_dims(a: np.ndarray | Any, b: np.ndarray | Any, names: tuple[str, str]) -> None:
    if a.shape[1] != b.shape[1]:
        raise DimensionError(
            f"{names[0]} has {a.shape[1]} columns but {names[1]} has {b.shape[1]}; "
            "both must have the same number of features"
        )


def check_out(out: Any, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """Validate a caller-provided output buffer."""
    if not isinstance(out, np.ndarray):
        raise ParameterError(f"out must be a numpy array, got {_describe(out)}")
    if out.shape != shape:
        raise DimensionError(f"out must have shape {shape}, got {out.shape}")
    if out.dtype != dtype:
        raise ParameterError(
            f"out must have dtype {dtype} (the result dtype), got {out.dtype}; "
            "pass dtype= to choose the result dtype"
        )
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ParameterError("out must be a writeable C-contiguous array")
    return out
