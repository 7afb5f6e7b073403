"""Shared helpers of the kernel tests (ANCHORS.md test rule: fp64 oracle, relative norm, NaN-poisoned outputs)."""
from __future__ import annotations

import pytest

from radjepa_kernels import _common
from radjepa_kernels.check import TOL, rel_err  # noqa: F401  (one metric, one tolerance table: ANCHORS.md)


@pytest.fixture
def poison(monkeypatch):
    """Every kernel output starts as NaN, so an element the kernel forgets to write fails the test."""
    monkeypatch.setattr(_common, "POISON_OUTPUTS", True)
