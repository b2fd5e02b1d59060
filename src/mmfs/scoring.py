"""Multi-process batch scoring: :func:`score` and :class:`Scorer`.

``mmfs.score(store, group, keys, fn, features=..., workers=N)`` splits ``keys`` into
batches, reads each batch in a worker process (``group.get(batch_keys, features)``) and
calls ``fn(batch)``, which returns one result per key (an array, or anything
``numpy.asarray`` makes one of).  The results come back concatenated in key order.

- Each worker opens the store by path once, read-only, when it starts; the data is shared
  through the page cache, so a worker's own memory is its batch and its results.
- Every batch reads the same version: the store's newest at the call unless ``version=``
  says otherwise, so commits made while a job runs never mix into its results.
- Workers start by ``forkserver`` (``spawn`` where there is none), never ``fork``: a fork
  of a process whose OpenMP threads have run can deadlock.  ``fn`` must therefore be
  picklable (a module-level function, or an object whose class is importable).
- A batch whose ``fn`` raises stops the job: :class:`~mmfs.errors.ScoringError` in the
  caller, with the batch's keys and the worker's traceback.  A worker that dies (killed,
  crashed) raises :class:`~mmfs.errors.WorkerDiedError`; ``timeout=`` bounds the whole
  call.  Nothing waits forever on a worker that will not answer.
- The result depends on neither ``workers`` nor ``batch_size``: each key is read alone by
  the same kernel, and the batches are put back in order.
- ``transform=`` applies stored transforms during each worker's read, exactly as
  ``group.get(..., transform=)`` does (a name without a version is resolved once, in the
  caller, at the pinned version).  A custom transform must be registered in the workers
  too: define it in an importable module or in ``__main__`` (both are preloaded).

:class:`Scorer` keeps its workers between calls (``with mmfs.Scorer(...) as s:
s.score(keys)``), for jobs that score many key sets; :func:`score` is one Scorer used
once.  ``workers=0`` runs in the calling process (for debugging ``fn``).
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing as mp
import os
import pickle
import time
import traceback
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

import numpy as np

from mmfs._config import effective_n_threads, usable_cpu_count
from mmfs.errors import ParameterError, ScoringError, StoreClosedError, WorkerDiedError
from mmfs.featurebatch import FeatureBatch
from mmfs.group import key_sequence

if TYPE_CHECKING:  # pragma: no cover
    from mmfs.group import FeatureGroup
    from mmfs.store import Store

__all__ = ["Scorer", "score"]

_MAX_BATCH = 1 << 16  # default batch size, at most
_MIN_BATCH = 1 << 10  # ... and at least (smaller batches cost more than they read)

# The worker's state: the group it opened (at its pinned version), fn, get()'s arguments.
_WORKER: dict[str, Any] = {}


def _start_worker(path: str, name: str, version: int, fn: Any, options: dict[str, Any]) -> None:
    from mmfs.store import open as open_store

    _WORKER["group"] = open_store(path, mode="r").group(name, version=version)
    _WORKER["fn"] = fn
    _WORKER["options"] = options


def _score_batch(index: int, keys: Any, as_of: Any) -> np.ndarray:
    """Worker side: read one batch, apply fn, return one result per key."""
    try:
        return _apply(_WORKER["group"], _WORKER["fn"], _WORKER["options"], keys, as_of)
    except BaseException:  # SystemExit too: it would end the caller, not this batch
        raise ScoringError(
            f"batch {index} ({len(keys)} keys, first {_first(keys)!r}) failed in worker "
            f"process {os.getpid()}:\n{traceback.format_exc()}"
        ) from None


def _apply(group: FeatureGroup, fn: Any, options: dict[str, Any], keys: Any, as_of: Any) -> Any:
    batch = group.get(keys, as_of=as_of, **options)
    try:
        result = np.asarray(fn(batch))
    except Exception as exc:  # in the calling process (workers=0): the same error type
        raise ScoringError(f"fn failed on a batch of {len(keys)} keys: {exc!r}") from exc
    if result.ndim == 0 or result.shape[0] != len(keys):
        raise ScoringError(
            f"fn must return one result per key ({len(keys)}), got an array of shape {result.shape}"
        )
    return result


def _first(keys: Any) -> Any:
    return keys[0] if len(keys) else None


class Scorer:
    """A pool of scoring workers bound to one group, one version and one ``fn`` (see
    the module docstring); ``score(keys)`` may be called many times."""

    def __init__(
        self,
        store: str | os.PathLike[str] | Store,
        group: str | FeatureGroup,
        fn: Callable[[FeatureBatch], Any],
        features: Any = None,
        *,
        workers: int | None = None,
        batch_size: int | None = None,
        version: int | str | None = None,
        n_threads: int | None = None,
        timeout: float | None = None,
        start_method: str | None = None,
        transform: Any = None,
    ) -> None:
        from mmfs.group import FeatureGroup
        from mmfs.store import Store
        from mmfs.store import open as open_store

        if isinstance(group, FeatureGroup):
            if version is None:
                version = group._version
            group = group.name
        if not isinstance(group, str):
            raise ParameterError(f"group must be a name or a FeatureGroup, got {group!r}")
        path = store.path if isinstance(store, Store) else os.fspath(store)
        workers = usable_cpu_count() if workers is None else workers
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ParameterError(f"workers must be None or an int >= 0, got {workers!r}")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ParameterError(f"batch_size must be None or an int >= 1, got {batch_size!r}")
        if timeout is not None and not (
            isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0
        ):
            raise ParameterError(f"timeout must be None or seconds > 0, got {timeout!r}")
        if not callable(fn):
            raise ParameterError(f"fn must be callable, got {fn!r}")
        if n_threads is not None:
            effective_n_threads(n_threads)  # checks it
        self._local = open_store(path, mode="r")  # pins the version, checks the arguments
        try:
            version = self._local.generation if version is None else self._local.version(version)
            self._group = self._local.group(group, version=version)
            snap = self._group._resolve(None, None)[0]
            if transform is not None:  # resolved here: every worker applies these versions
                sel = self._group._selection(snap, features, transform)
                transform = [st.ref for st in sel.transforms]
                snap.plan(sel)
            else:
                snap.plan(features)  # unknown features: now
            if workers:
                try:
                    pickle.dumps(fn)
                except Exception as exc:
                    raise ParameterError(
                        f"fn must be picklable to reach the worker processes (a module-level "
                        f"function, not a lambda or a closure): {exc}"
                    ) from None
                self._context = _context(start_method)
        except BaseException:
            self._local.close()
            raise
        self.path = path
        self.group = group
        self.version = version
        self.workers = workers
        self.batch_size = batch_size
        self.timeout = timeout
        threads = (
            n_threads if n_threads is not None else max(1, usable_cpu_count() // max(1, workers))
        )
        self._options = {"features": features, "n_threads": threads, "transform": transform}
        self._fn = fn
        self._pool: cf.ProcessPoolExecutor | None = None
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<mmfs.Scorer {self.path!r} group={self.group!r} version={self.version} "
            f"workers={self.workers}>"
        )

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (they finish nothing further) and close the store."""
        self._closed = True
        self._stop(kill=False)
        self._local.close()

    def _stop(self, *, kill: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if kill:  # workers stuck in fn (a timeout) or half dead (a crash)
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
        pool.shutdown(wait=True, cancel_futures=True)

    def _start(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                self.workers,
                mp_context=self._context,
                initializer=_start_worker,
                initargs=(self.path, self.group, self.version, self._fn, self._options),
            )
        return self._pool

    def score(self, keys: Any, *, as_of: Any = None) -> np.ndarray:
        """``fn`` of the batch of every key, concatenated in key order.  ``as_of``: one
        event time, or one per key (see ``FeatureGroup.get``)."""
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed")
        keys = key_sequence(keys)
        if isinstance(keys, np.ndarray) and keys.ndim != 1:
            raise ParameterError(f"keys must be one-dimensional, got shape {keys.shape}")
        n = len(keys)
        times = None
        if as_of is not None:
            from mmfs._times import to_ns

            times = to_ns(as_of, n).view("datetime64[ns]")
        if n == 0 or self.workers == 0:
            return _apply(self._group, self._fn, self._options, keys, times)
        size = self.batch_size or min(
            _MAX_BATCH, max(_MIN_BATCH, math.ceil(n / (4 * self.workers)))
        )
        bounds = [(a, min(n, a + size)) for a in range(0, n, size)]
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        pool = self._start()
        futures = [
            pool.submit(_score_batch, i, keys[a:b], None if times is None else times[a:b])
            for i, (a, b) in enumerate(bounds)
        ]
        results = []
        try:
            for i, future in enumerate(futures):
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    results.append(future.result(timeout=left))
                except cf.TimeoutError:
                    raise ScoringError(
                        f"scoring timed out after {self.timeout} s with {i} of {len(bounds)} "
                        "batches done; the workers were stopped"
                    ) from None
                except BrokenProcessPool:
                    a = bounds[i][0]
                    raise WorkerDiedError(
                        f"a scoring worker process died (killed or crashed) while the pool "
                        f"ran batch {i} or a later one (keys {a} onwards of {n}); the workers "
                        "were stopped"
                    ) from None
        except BaseException:
            self._stop(kill=True)
            raise
        return np.concatenate(results, axis=0)


def _context(start_method: str | None) -> Any:
    methods = mp.get_all_start_methods()
    if start_method is None:
        start_method = "forkserver" if "forkserver" in methods else "spawn"
    if start_method == "fork":
        raise ParameterError(
            'start_method="fork" is refused: forking a process whose OpenMP threads have run '
            'can deadlock the child; use "forkserver" or "spawn"'
        )
    if start_method not in methods:
        raise ParameterError(
            f"start_method must be one of {methods} (not fork), got {start_method!r}"
        )
    if start_method == "forkserver":
        _preload_mmfs()
    return mp.get_context(start_method)


def _preload_mmfs() -> None:
    """Have the forkserver import mmfs before it forks workers, so that each worker
    starts in a fraction of a second instead of importing numpy, scipy and mmfs (about
    1.5 s) itself.  Only when the server has not started yet and nobody changed its
    preload list (multiprocessing keeps both in private attributes, hence the care).
    Importing mmfs runs no OpenMP region, so forking the server stays safe."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    if (
        server is not None
        and getattr(server, "_forkserver_pid", 0) is None
        and getattr(server, "_preload_modules", None) == ["__main__"]
    ):
        forkserver.set_forkserver_preload(["__main__", "mmfs"])


def score(
    store: str | os.PathLike[str] | Store,
    group: str | FeatureGroup,
    keys: Any,
    fn: Callable[[FeatureBatch], Any],
    features: Any = None,
    *,
    workers: int | None = None,
    batch_size: int | None = None,
    version: int | str | None = None,
    as_of: Any = None,
    n_threads: int | None = None,
    timeout: float | None = None,
    start_method: str | None = None,
    transform: Any = None,
) -> np.ndarray:
    """``fn(batch)`` for every batch of ``keys``, in ``workers`` processes, results in key
    order (see the module docstring).  ``workers=None``: one per usable core;
    ``batch_size=None``: about four batches per worker, 1,024 to 65,536 keys each."""
    with Scorer(
        store, group, fn, features, workers=workers, batch_size=batch_size, version=version,
        n_threads=n_threads, timeout=timeout, start_method=start_method, transform=transform,
    ) as scorer:  # fmt: skip
        return scorer.score(keys, as_of=as_of)
