"""EMA of the target encoder in one Triton launch: target ← target + (1 − momentum)·(online − target).

The parameters stay where they are (no flat copy): a pointer table of the target and online tensors plus a
block → (tensor, offset) table is built once per parameter list and cached on the device, so each step is one
launch whose only changing argument is the momentum, a runtime float (no recompilation as it is annealed).
Targets must be fp32 (bf16 targets would round the tiny updates away); online tensors may be fp32/fp16/bf16 —
one launch per online dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._common import TL_DTYPES, device_guard, interpreting

BLOCK = 4096  # elements per program; small tensors (biases, norms) get one mostly-masked block


@triton.jit
def _ema_kernel(tgt_tab, onl_tab, numel_tab, blk_tensor, blk_start, weight,
                ONLINE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    t = tl.load(blk_tensor + pid)
    start = tl.load(blk_start + pid)
    n = tl.load(numel_tab + t)
    tp = tl.load(tgt_tab + t).to(tl.pointer_type(tl.float32))
    op = tl.load(onl_tab + t).to(tl.pointer_type(ONLINE))
    offs = start + tl.arange(0, BLOCK)
    if ALIGNED:  # every tensor is 16-byte aligned and starts blocks at multiples of BLOCK: vectorised access
        offs = tl.max_contiguous(tl.multiple_of(offs, BLOCK), BLOCK)
        tp = tl.multiple_of(tp, 16)
        op = tl.multiple_of(op, 16)
    mask = offs < n
    a = tl.load(tp + offs, mask=mask)
    b = tl.load(op + offs, mask=mask).to(tl.float32)
    tl.store(tp + offs, a + weight * (b - a), mask=mask)


@dataclass
class _Plan:
    tgt_tab: torch.Tensor
    onl_tab: torch.Tensor
    numel_tab: torch.Tensor
    blk_tensor: torch.Tensor
    blk_start: torch.Tensor
    online_dtype: torch.dtype
    aligned: bool
    keepalive: list  # the tensors whose addresses the tables hold


_PLANS: dict[tuple, list[_Plan]] = {}
_MAX_PLANS = 8


def _key(target: list[torch.Tensor], online: list[torch.Tensor]) -> tuple:
    # Addresses alone identify a plan: each plan keeps its tensors' storage alive (keepalive), so no other tensor
    # can reuse one of its addresses while it is cached. Cheap enough to recompute every step (~0.2 µs/param).
    return tuple(t.data_ptr() for t in target) + tuple(o.data_ptr() for o in online)


def _validate(target: list[torch.Tensor], online: list[torch.Tensor]) -> None:
    if len(target) != len(online):
        raise ValueError(f"ema_update_: {len(target)} target vs {len(online)} online tensors")
    for i, (t, o) in enumerate(zip(target, online)):
        if t.dtype != torch.float32:
            raise TypeError(f"ema_update_: target tensor {i} is {t.dtype}; EMA targets must be fp32")
        if o.dtype not in TL_DTYPES:
            raise TypeError(f"ema_update_: online tensor {i} has unsupported dtype {o.dtype}")
        if t.shape != o.shape:
            raise ValueError(f"ema_update_: tensor {i} shapes differ: target {tuple(t.shape)}, online {tuple(o.shape)}")
        if t.device != o.device:
            raise ValueError(f"ema_update_: tensor {i} on {t.device} (target) vs {o.device} (online)")
        if not (t.is_contiguous() and o.is_contiguous()):
            raise ValueError(f"ema_update_: tensor {i} is not contiguous")


def _build(target: list[torch.Tensor], online: list[torch.Tensor]) -> list[_Plan]:
    _validate(target, online)
    device = target[0].device
    plans = []
    for dtype in sorted({o.dtype for o in online}, key=str):
        pairs = [(t, o) for t, o in zip(target, online) if o.dtype == dtype and t.numel() > 0]
        if not pairs:
            continue
        blk_tensor, blk_start = [], []
        for i, (t, _) in enumerate(pairs):
            starts = range(0, t.numel(), BLOCK)
            blk_tensor += [i] * len(starts)
            blk_start += list(starts)
        aligned = all(t.data_ptr() % 16 == 0 and o.data_ptr() % 16 == 0 for t, o in pairs)
        as_dev = lambda v, dt: torch.tensor(v, dtype=dt, device=device)  # noqa: E731
        plans.append(_Plan(
            tgt_tab=as_dev([t.data_ptr() for t, _ in pairs], torch.int64),
            onl_tab=as_dev([o.data_ptr() for _, o in pairs], torch.int64),
            numel_tab=as_dev([t.numel() for t, _ in pairs], torch.int64),
            blk_tensor=as_dev(blk_tensor, torch.int32), blk_start=as_dev(blk_start, torch.int64),
            online_dtype=dtype, aligned=aligned, keepalive=[x.detach() for p in pairs for x in p]))
    return plans


@torch.no_grad()
def ema_update_(target: list[torch.Tensor], online: list[torch.Tensor], momentum: float) -> None:
    """In place: target ← momentum·target + (1 − momentum)·online for every pair, one launch per online dtype."""
    if len(target) != len(online):
        raise ValueError(f"ema_update_: {len(target)} target vs {len(online)} online tensors")
    if not target:
        return
    key = _key(target, online)
    plans = _PLANS.get(key)
    if plans is None:
        plans = _build(target, online)
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.pop(next(iter(_PLANS)))
        _PLANS[key] = plans
    weight = 1.0 - float(momentum)
    with device_guard(target[0]):
        for p in plans:
            grid = (p.blk_tensor.numel(),)
            _ema_kernel[grid](p.tgt_tab, p.onl_tab, p.numel_tab, p.blk_tensor, p.blk_start, weight,
                              ONLINE=TL_DTYPES[p.online_dtype], ALIGNED=p.aligned and not interpreting(),
                              BLOCK=BLOCK, num_warps=8)
