"""Scoring functions for test_scoring.py, at module level so that the worker processes
of :class:`mmfs.Scorer` can unpickle them (pytest puts ``tests/`` on ``sys.path``, and
forkserver/spawn children get the parent's ``sys.path``, so they import this module by
the same name).

Each function reads only what it needs of a :class:`mmfs.FeatureBatch`; the tests
compute the expected results from the values they wrote, not through mmfs.  The
"trouble" functions misbehave only for batches that hold one of the poison keys below,
so one Scorer can fail on one call and score normally on the next.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import numpy as np

RAISE_KEY = -101  # fn raises ValueError
WRONG_ROWS_KEY = -102  # fn returns one row too many
SCALAR_KEY = -103  # fn returns a 0-d array
EXIT_KEY = -104  # the worker process ends itself with os._exit(3)
KILL_KEY = -105  # the worker process sends itself SIGKILL
SLEEP_KEY = -106  # fn sleeps for 30 s
SYS_EXIT_KEY = -107  # fn calls sys.exit(3) (raises SystemExit)


def fn_sum(batch: Any) -> np.ndarray:
    """One float64 per key: x + e[0] + e[1] + e[2] (NaN for a missing key)."""
    return np.asarray(batch["x"], dtype=np.float64) + batch["e"].astype(np.float64).sum(axis=1)


def fn_x(batch: Any) -> np.ndarray:
    """The feature x of each key, float64 (NaN for a missing key)."""
    return np.asarray(batch["x"], dtype=np.float64)


class Matrix:
    """A picklable callable object: one row of 6 float64 per key,
    [scale * x, e[0], e[1], e[2], found (0/1), number of features in the batch]."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, batch: Any) -> np.ndarray:
        n = len(batch)
        return np.column_stack(
            [
                self.scale * np.asarray(batch["x"], dtype=np.float64),
                batch["e"].astype(np.float64).reshape(n, 3),
                batch.found.astype(np.float64),
                np.full(n, float(len(batch.names))),
            ]
        )


def fn_matrix(batch: Any) -> np.ndarray:
    """The batch's (n, d) float32 matrix, as it reads (transformed reads included)."""
    return batch.to_numpy()


def _has(batch: Any, key: int) -> bool:
    return bool(np.any(np.asarray(batch.keys) == key))


def fn_trouble(batch: Any) -> Any:
    """fn_x, except for batches holding a poison key (see the constants above)."""
    if _has(batch, RAISE_KEY):
        raise ValueError(f"poisoned batch of {len(batch)} keys")
    if _has(batch, WRONG_ROWS_KEY):
        return np.zeros((len(batch) + 1, 2))
    if _has(batch, SCALAR_KEY):
        return np.float64(1.0)
    if _has(batch, EXIT_KEY):
        os._exit(3)
    if _has(batch, KILL_KEY):
        os.kill(os.getpid(), signal.SIGKILL)
    if _has(batch, SYS_EXIT_KEY):
        sys.exit(3)
    return fn_x(batch)


def fn_sleep(batch: Any) -> np.ndarray:
    """fn_x, after 30 s for a batch holding SLEEP_KEY."""
    if _has(batch, SLEEP_KEY):
        time.sleep(30)
    return fn_x(batch)
