"""Shared fixtures.  Every test runs against the installed build (``uv run --no-sync``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mmfs


@pytest.fixture(autouse=True)
def _clean_metric_registry() -> Iterator[None]:
    """A test that registers a custom metric must not leak it into the next test."""
    before = set(mmfs.registered_metrics())
    yield
    for name in set(mmfs.registered_metrics()) - before:
        mmfs.unregister_metric(name)
