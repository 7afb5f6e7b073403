"""Masked-block gather (I-JEPA's `apply_masks`) as one Triton launch for all masks, with a deterministic backward.

Forward:  out[m*B + b, j] = x[b, idx[m, b, j]] (+ pos[idx[m, b, j]]); idx < 0 → zero row (key padding).
Backward: grad_x[b, n] = Σ over (m, j) with idx[m, b, j] == n of grad_out[m*B + b, j]. Instead of scattering with
atomics (non-deterministic order, and contention when masks overlap), we build a CSR inverse index — a stable sort
of the (b, n) keys plus a searchsorted — so every input-gradient row is written exactly once by one program that
sums its sources in a fixed order. Rows no mask selects get exact zeros.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import _common
from ._common import check_device, device_guard, interpreting, to_dtype


@triton.jit
def _gather_fwd_kernel(x_ptr, pos_ptr, idx_ptr, out_ptr, R, B, K, N, D, stride_xb, stride_xn, stride_pn,
                       HAS_POS: tl.constexpr, ACC: tl.constexpr, INTERPRET: tl.constexpr,
                       BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # flat output rows (m*B + b)*K + j
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    rmask = rows < R
    cmask = cols < D
    src = tl.load(idx_ptr + rows, mask=rmask, other=-1).to(tl.int64)
    b = (rows // K) % B
    valid = rmask & (src >= 0) & (src < N)  # memory-safe even if the host-side range check is skipped
    lmask = valid[:, None] & cmask[None, :]
    val = tl.load(x_ptr + (b.to(tl.int64) * stride_xb + src * stride_xn)[:, None] + cols[None, :],
                  mask=lmask, other=0.0).to(ACC)
    if HAS_POS:
        # Round pos to x's dtype first so the sum equals eager `x + pos.to(x.dtype)`.
        p = tl.load(pos_ptr + (src * stride_pn)[:, None] + cols[None, :], mask=lmask, other=0.0)
        val += to_dtype(p.to(ACC), x_ptr.dtype.element_ty, INTERPRET).to(ACC)
    out_off = rows.to(tl.int64)[:, None] * D + cols[None, :]
    smask = rmask[:, None] & cmask[None, :]
    tl.store(out_ptr + out_off, to_dtype(val, out_ptr.dtype.element_ty, INTERPRET), mask=smask)


@triton.jit
def _gather_bwd_kernel(g_ptr, order_ptr, start_ptr, gx_ptr, D, ACC: tl.constexpr, INTERPRET: tl.constexpr,
                       BLOCK_D: tl.constexpr):
    row = tl.program_id(0)  # source row b*N + n: exactly one program writes it
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    lo = tl.load(start_ptr + row)
    hi = tl.load(start_ptr + row + 1)
    acc = tl.zeros([BLOCK_D], dtype=ACC)
    for e in range(lo, hi):  # the (m, j) entries that selected this row, in sorted (deterministic) order
        r = tl.load(order_ptr + e).to(tl.int64)
        acc += tl.load(g_ptr + r * D + cols, mask=cmask, other=0.0).to(ACC)
    tl.store(gx_ptr + row.to(tl.int64) * D + cols, to_dtype(acc, gx_ptr.dtype.element_ty, INTERPRET), mask=cmask)


def _check_idx(idx: torch.Tensor, n_tokens: int) -> None:
    if idx.numel() == 0:
        return
    if idx.is_cuda:  # no host sync: the check fails the stream asynchronously
        torch._assert_async(idx.max() < n_tokens, "gather_tokens: index out of range")
    elif int(idx.max()) >= n_tokens:
        raise IndexError(f"gather_tokens: index {int(idx.max())} out of range for {n_tokens} tokens")


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _block_d(D: int) -> int:
    return min(triton.next_power_of_2(D), 1024)


@torch.library.custom_op("radjepa::gather_tokens", mutates_args=())
def _gather_op(x: torch.Tensor, idx: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
    M, B, K = idx.shape
    N, D = x.shape[1], x.shape[2]
    _check_idx(idx, N)
    out = _common.empty(M * B, K, D, dtype=x.dtype, device=x.device)
    R = M * B * K
    if R == 0 or D == 0:
        return out
    BLOCK_D = _block_d(D)
    BLOCK_R = 16 if interpreting() else max(1, 4096 // BLOCK_D)
    grid = (triton.cdiv(R, BLOCK_R), triton.cdiv(D, BLOCK_D))
    with device_guard(x):
        _gather_fwd_kernel[grid](x, pos if pos is not None else x, idx, out, R, B, K, N, D, x.stride(0),
                                 x.stride(1), pos.stride(0) if pos is not None else 0, HAS_POS=pos is not None,
                                 ACC=_acc(x.dtype), INTERPRET=interpreting(), BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D,
                                 num_warps=4)
    return out


@_gather_op.register_fake
def _(x, idx, pos):
    M, B, K = idx.shape
    return x.new_empty(M * B, K, x.shape[2])


def inverse_index(idx: torch.Tensor, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR of the gather: `order` lists flat output rows grouped by source row b*N + n (stable, so the summation
    order is fixed); source row s owns order[start[s]:start[s+1]]. Padding (-1) sorts past the last row."""
    M, B, K = idx.shape
    b = torch.arange(B, device=idx.device).view(1, B, 1)
    key = torch.where(idx >= 0, b * n_tokens + idx.long(), B * n_tokens).reshape(-1)
    sorted_key, order = torch.sort(key, stable=True)
    start = torch.searchsorted(sorted_key, torch.arange(B * n_tokens + 1, device=idx.device, dtype=torch.long))
    return order, start


@torch.library.custom_op("radjepa::gather_tokens_backward", mutates_args=())
def _gather_bwd_op(grad: torch.Tensor, idx: torch.Tensor, n_tokens: int, out_dtype: torch.dtype) -> torch.Tensor:
    M, B, K = idx.shape
    D = grad.shape[-1]
    grad = grad.contiguous()
    gx = _common.empty(B, n_tokens, D, dtype=out_dtype, device=grad.device)
    if B * n_tokens == 0 or D == 0:
        return gx
    order, start = inverse_index(idx, n_tokens)
    BLOCK_D = _block_d(D)
    grid = (B * n_tokens, triton.cdiv(D, BLOCK_D))
    with device_guard(grad):
        _gather_bwd_kernel[grid](grad, order, start, gx, D, ACC=_acc(grad.dtype), INTERPRET=interpreting(),
                                 BLOCK_D=BLOCK_D, num_warps=4 if BLOCK_D >= 512 else 2)
    return gx


@_gather_bwd_op.register_fake
def _(grad, idx, n_tokens, out_dtype):
    return grad.new_empty(idx.shape[1], n_tokens, grad.shape[-1], dtype=out_dtype)


def _setup_context(ctx, inputs, output):
    x, idx, pos = inputs
    ctx.save_for_backward(idx)
    ctx.n_tokens = x.shape[1]
    ctx.x_dtype = x.dtype
    ctx.pos_dtype = pos.dtype if pos is not None else None


def _backward(ctx, grad):
    (idx,) = ctx.saved_tensors
    need_x, _, need_pos = ctx.needs_input_grad
    if not (need_x or need_pos):
        return None, None, None
    # pos's gradient sums grad_x over the batch: keep fp32 until then.
    dtype = torch.promote_types(torch.float32, ctx.x_dtype) if need_pos else ctx.x_dtype
    gsrc = _gather_bwd_op(grad, idx, ctx.n_tokens, dtype)
    gx = gsrc.to(ctx.x_dtype) if need_x else None
    gpos = gsrc.sum(0).to(ctx.pos_dtype) if need_pos else None
    return gx, None, gpos


_gather_op.register_autograd(_backward, setup_context=_setup_context)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
    """Triton masked-block gather; same contract as reference.gather_tokens (x [B,N,D], idx [M,B,K] or [B,K])."""
    if idx.dim() == 2:
        idx = idx.unsqueeze(0)
    if x.dim() != 3 or idx.dim() != 3:
        raise ValueError(f"gather_tokens: x must be [B,N,D] and idx [M,B,K], got {tuple(x.shape)}, {tuple(idx.shape)}")
    if idx.shape[1] != x.shape[0]:
        raise ValueError(f"gather_tokens: x has batch {x.shape[0]} but idx has batch {idx.shape[1]}")
    if idx.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"gather_tokens: idx must be int32/int64, got {idx.dtype}")
    if pos is not None and pos.shape != x.shape[1:]:
        raise ValueError(f"gather_tokens: pos must be [N,D]={tuple(x.shape[1:])}, got {tuple(pos.shape)}")
    check_device(x, idx, pos)
    if x.stride(-1) != 1:
        x = x.contiguous()
    if pos is not None and pos.stride(-1) != 1:
        pos = pos.contiguous()
    return _gather_op(x, idx.contiguous(), pos)
