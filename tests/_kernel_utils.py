"""Shared helpers of the kernel tests (ANCHORS.md test rule: fp64 oracle, relative norm, NaN-poisoned outputs)."""
from __future__ import annotations

import pytest
import torch

from radjepa_kernels import _common

# Relative-norm tolerances against an fp64 reference under the interpreter (ANCHORS.md).
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


def rel_err(a: torch.Tensor, ref: torch.Tensor, floor: float = 1e-6) -> float:
    """‖a − ref‖ / max(‖ref‖, floor·√numel): relative, but not blown up when the reference is ~0."""
    a, ref = a.detach().double(), ref.detach().double()
    denom = max(ref.norm().item(), floor * ref.numel() ** 0.5)
    return (a - ref).norm().item() / denom if ref.numel() else 0.0


@pytest.fixture
def poison(monkeypatch):
    """Every kernel output starts as NaN, so an element the kernel forgets to write fails the test."""
    monkeypatch.setattr(_common, "POISON_OUTPUTS", True)
