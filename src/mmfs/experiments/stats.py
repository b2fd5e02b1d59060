"""Checks on an experiment's traffic."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from mmfs.errors import ParameterError

__all__ = ["SRMResult", "srm_test"]


class SRMResult(NamedTuple):
    """A sample-ratio-mismatch test: the chi-square statistic, its p-value, the degrees
    of freedom, and whether p < alpha (a mismatch: the split is not what it should be)."""

    statistic: float
    pvalue: float
    df: int
    mismatch: bool


def srm_test(counts: Any, weights: Any, *, alpha: float = 0.001) -> SRMResult:
    """Sample-ratio-mismatch test: were ``counts`` (keys seen per arm) drawn with the
    split ``weights`` (any positive scale: percentages, fractions, slots)?  Pearson's
    chi-square goodness of fit over the arms with a positive weight; an arm with weight 0
    and a positive count is a mismatch outright (p = 0).  ``alpha``: the threshold of
    ``mismatch`` (0.001 is the usual one for SRM alarms: they are checked often)."""
    c = np.asarray(counts, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if c.ndim != 1 or c.shape != w.shape or c.size < 2:
        raise ParameterError(
            f"counts and weights must be 1-D of one length >= 2, got {c.shape} and {w.shape}"
        )
    if not (np.isfinite(c).all() and (c >= 0).all() and (c == np.round(c)).all()):
        raise ParameterError(f"counts must be non-negative integers, got {counts!r}")
    if not (np.isfinite(w).all() and (w >= 0).all() and w.sum() > 0):
        raise ParameterError(f"weights must be non-negative and not all 0, got {weights!r}")
    if not 0 < alpha < 1:
        raise ParameterError(f"alpha must be in (0, 1), got {alpha!r}")
    live = w > 0
    if (c[~live] > 0).any():
        return SRMResult(float("inf"), 0.0, int(live.sum()) - 1, True)
    n = c.sum()
    if n == 0 or live.sum() < 2:
        return SRMResult(0.0, 1.0, max(0, int(live.sum()) - 1), False)
    expected = n * w[live] / w[live].sum()
    stat = float((((c[live] - expected) ** 2) / expected).sum())
    df = int(live.sum()) - 1
    p = float(stats.chi2.sf(stat, df))
    return SRMResult(stat, p, df, p < alpha)
