"""Every error mmfs raises is from the mmfs.errors hierarchy AND the builtin a caller
would catch, and its message names what arrived and what was expected."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mmfs
from mmfs.errors import (
    CorruptStoreError,
    DimensionError,
    FormatError,
    MemoryBudgetError,
    MetricError,
    MmfsError,
    NotFoundError,
    ParameterError,
    StoreClosedError,
)

RNG = np.random.default_rng(3)
A = RNG.standard_normal((4, 3))
B = RNG.standard_normal((5, 3))


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (ParameterError, ValueError),
        (DimensionError, ValueError),
        (MetricError, ValueError),
        (FormatError, ValueError),
        (CorruptStoreError, ValueError),
        (MemoryBudgetError, MemoryError),
        (NotFoundError, KeyError),
        (StoreClosedError, RuntimeError),
    ],
)
def test_hierarchy(cls: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(cls, MmfsError)
    assert issubclass(cls, builtin)
    with pytest.raises(builtin):
        raise cls("x")
    with pytest.raises(MmfsError):
        raise cls("x")


def test_specific_parents() -> None:
    assert issubclass(DimensionError, ParameterError)
    assert issubclass(MetricError, ParameterError)
    assert issubclass(CorruptStoreError, FormatError)
    assert mmfs.errors.MmfsError is MmfsError
    assert str(NotFoundError("no metric named 'x'")) == "no metric named 'x'"  # not repr'd


def raises(cls: type[Exception], builtin: type[Exception], *needles: str):
    """Context manager: raises `cls`, catchable as `builtin`, message holds every needle."""

    class _Ctx:
        def __enter__(self) -> None:
            return None

        def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
            assert et is not None, f"expected {cls.__name__}, nothing was raised"
            assert isinstance(ev, cls), f"expected {cls.__name__}, got {et.__name__}: {ev}"
            assert isinstance(ev, builtin)
            assert isinstance(ev, MmfsError)
            msg = str(ev)
            for needle in needles:
                assert needle in msg, f"{needle!r} not in message {msg!r}"
            return True

    return _Ctx()


# --------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------


def test_wrong_ndim() -> None:
    with raises(DimensionError, ValueError, "XA", "2-D", "(3,)"):
        mmfs.cdist(np.ones(3), B)
    with raises(DimensionError, ValueError, "XB", "2-D", "(2, 2, 3)"):
        mmfs.cdist(A, np.ones((2, 2, 3)))
    with raises(DimensionError, ValueError, "queries", "(2, 2, 3)"):
        mmfs.knn(A, np.ones((2, 2, 3)), 1)
    with raises(DimensionError, ValueError, "data", "(2, 2, 3)"):
        mmfs.knn(np.ones((2, 2, 3)), A, 1)
    with raises(DimensionError, ValueError, "queries", "(2, 2, 3)"):
        mmfs.radius(A, np.ones((2, 2, 3)), 1.0)


def test_mismatched_features() -> None:
    with raises(DimensionError, ValueError, "3", "4", "same number of features"):
        mmfs.cdist(A, np.ones((2, 4)))
    with raises(DimensionError, ValueError, "4", "3", "features"):
        mmfs.knn(A, np.ones((2, 4)), 1)
    with raises(DimensionError, ValueError, "4", "3", "features"):
        mmfs.radius(A, np.ones(4), 1.0)


@pytest.mark.parametrize("bad", [np.ones((2, 3), dtype=complex), np.array([["a", "b", "c"]])])
def test_complex_or_string_input(bad: np.ndarray) -> None:
    with raises(ParameterError, ValueError, "XA", str(bad.dtype), "real numbers"):
        mmfs.cdist(bad, A)
    with raises(ParameterError, ValueError, "XB", str(bad.dtype)):
        mmfs.cdist(A, bad)
    with raises(ParameterError, ValueError, "data", str(bad.dtype)):
        mmfs.knn(bad, A, 1)
    with raises(ParameterError, ValueError, "queries", str(bad.dtype)):
        mmfs.radius(A, bad, 1.0)


def test_ragged_input() -> None:
    with raises(ParameterError, ValueError, "XA"):
        mmfs.cdist([[1.0, 2.0], [3.0]], A)


# --------------------------------------------------------------------------------------
# metrics and their parameters
# --------------------------------------------------------------------------------------


def test_unknown_metric() -> None:
    with raises(MetricError, ValueError, "'nope'", "euclidean", "inner_product"):
        mmfs.cdist(A, B, "nope")
    with raises(MetricError, ValueError, "'nope'", "expected one of"):
        mmfs.knn(A, B, 1, metric="nope")
    with raises(MetricError, ValueError, "'nope'"):
        mmfs.radius(A, B, 1.0, metric="nope")
    with raises(MetricError, ValueError, "name or a callable", "3"):
        mmfs.cdist(A, B, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("p", "needle"),
    [(np.nan, "nan"), (-np.inf, "-inf"), (0, "0"), (-1.5, "-1.5"), ("three", "'three'")],
)
def test_minkowski_bad_p(p: Any, needle: str) -> None:
    with raises(MetricError, ValueError, "minkowski p", needle):
        mmfs.cdist(A, B, "minkowski", p=p)
    with raises(MetricError, ValueError, "minkowski p", needle):
        mmfs.knn(A, B, 2, metric="minkowski", p=p)


def test_unexpected_keyword_for_metric() -> None:
    with raises(MetricError, ValueError, "'euclidean'", "p", "no parameters"):
        mmfs.cdist(A, B, "euclidean", p=3)
    with raises(MetricError, ValueError, "'minkowski'", "takes p", "VI"):
        mmfs.cdist(A, B, "minkowski", VI=np.eye(3))
    with raises(MetricError, ValueError, "'seuclidean'", "takes V", "w"):
        mmfs.knn(A, B, 1, metric="seuclidean", w=np.ones(3))
    with raises(MetricError, ValueError, "'cityblock'", "p"):
        mmfs.cdist(A, B, "manhattan", p=1)


def test_mahalanobis_bad_vi() -> None:
    with raises(MetricError, ValueError, "square", "(3, 2)"):
        mmfs.cdist(A, B, "mahalanobis", VI=np.ones((3, 2)))
    with raises(MetricError, ValueError, "square", "(3,)"):
        mmfs.cdist(A, B, "mahalanobis", VI=np.ones(3))
    with raises(MetricError, ValueError, "(3, 3)", "(4, 4)"):
        mmfs.cdist(A, B, "mahalanobis", VI=np.eye(4))
    for bad in (np.nan, np.inf):
        VI = np.eye(3)
        VI[1, 2] = bad
        with raises(MetricError, ValueError, "VI", "finite"):
            mmfs.cdist(A, B, "mahalanobis", VI=VI)
    with raises(MetricError, ValueError, "(3, 3)", "(2, 2)"):
        mmfs.knn(A, B, 1, metric="mahalanobis", VI=np.eye(2))


def test_mahalanobis_without_vi_needs_rows() -> None:
    X = np.ones((2, 5))
    with raises(MetricError, ValueError, "4 rows", "5 dimensions", "VI="):
        mmfs.cdist(X, X, "mahalanobis")


def test_seuclidean_bad_v() -> None:
    with raises(MetricError, ValueError, "(3,)", "(4,)"):
        mmfs.cdist(A, B, "seuclidean", V=np.ones(4))
    with raises(MetricError, ValueError, "(3,)", "(3, 1)"):
        mmfs.cdist(A, B, "seuclidean", V=np.ones((3, 1)))
    for bad in (0.0, -1.0, np.nan, np.inf):
        with raises(MetricError, ValueError, "V", "positive"):
            mmfs.cdist(A, B, "seuclidean", V=np.array([1.0, bad, 1.0]))


# --------------------------------------------------------------------------------------
# k, r, n_threads, dtype, working_memory
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "needle"), [(0, "0"), (-1, "-1"), (1.5, "1.5"), (True, "True")])
def test_bad_k(k: Any, needle: str) -> None:
    with raises(ParameterError, ValueError, "k must be a positive integer", needle):
        mmfs.knn(A, B, k)


def test_k_accepts_numpy_integers() -> None:
    idx, _ = mmfs.knn(A, B, np.int64(2))  # pyright: ignore[reportArgumentType]
    assert idx.shape == (5, 2)


@pytest.mark.parametrize(("r", "needle"), [(np.nan, "nan"), ("far", "'far'"), (None, "None")])
def test_bad_radius(r: Any, needle: str) -> None:
    with raises(ParameterError, ValueError, "r must be a number", needle):
        mmfs.radius(A, B, r)


@pytest.mark.parametrize(("n", "needle"), [(0, "n_threads=0"), (1.5, "1.5"), ("2", "'2'")])
def test_bad_n_threads(n: Any, needle: str) -> None:
    with raises(ParameterError, ValueError, needle):
        mmfs.cdist(A, B, n_threads=n)
    with raises(ParameterError, ValueError, needle):
        mmfs.knn(A, B, 1, n_threads=n)
    with raises(ParameterError, ValueError, needle):
        mmfs.effective_n_threads(n)


def test_bad_dtype_and_working_memory() -> None:
    with raises(ParameterError, ValueError, "float32 or float64", "int64"):
        mmfs.cdist(A, B, dtype=np.int64)
    with raises(ParameterError, ValueError, "float32 or float64"):
        mmfs.cdist(A, B, dtype="not a dtype")
    with raises(ParameterError, ValueError, "working_memory", "0"):
        mmfs.knn(A, B, 1, working_memory=0)
    with raises(ParameterError, ValueError, "working_memory", "-5"):
        mmfs.radius(A, B, 1.0, working_memory=-5)


def test_registry_errors() -> None:
    with raises(ParameterError, ValueError, "non-empty string"):
        mmfs.register_metric("", lambda a, b: a)
    with raises(MetricError, ValueError, "'cosine'", "built-in"):
        mmfs.register_metric("cosine", lambda a, b: a)
    with raises(NotFoundError, KeyError, "'never_registered'"):
        mmfs.unregister_metric("never_registered")
