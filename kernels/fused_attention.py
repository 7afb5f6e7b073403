"""Flash-style fused attention (forward + backward) for encoder and predictor shapes, in Triton.

softmax(q kᵀ/√d) v without materialising the N×N scores in HBM: the forward streams key blocks with an online
softmax and saves one log-sum-exp per query; the backward recomputes the probabilities from it in two passes
without atomics (Triton tutorial 06): one program per key block accumulates dK, dV over all queries, one per query
block accumulates dQ over all keys. Beyond the tutorial: any length 1–N (loads are masked, no multiple-of-128
requirement), head dims 24/32/64/… padded to the next power of two, key padding masks [B, N], and packed
variable-length batches (cu_seqlens) so the variable-length collator needs no truncation. Queries whose keys are
all padding output 0 (their lse is stored as +inf so the backward gives them zero gradient too).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from . import _common
from ._common import check_device, configs, device_guard, dot_precision, interpreting, to_dtype, upcast

LOG2E = 1.4426950408889634
# Integer arguments that change with the batch's sequence lengths. Triton would otherwise compile one variant per
# (value == 1, value % 16 == 0) pattern of each, so variable-length batches (and ranks with different lengths)
# would recompile inside the training loop; the lengths only bound loops and masks, so nothing is lost.
_LENGTH_ARGS = ["N_Q", "N_K", "slb", "slh", "stride_kpm", "N_BUCKET", "BH_BUCKET"]
MAX_GRID_Y = 65_535  # CUDA's limit on grid axes 1 and 2 (axis 0 allows 2**31 - 1)


@triton.jit
def _seq_bounds(CU, b, N_Q, N_K, VARLEN: tl.constexpr):
    """(token offset, query length, key length) of sequence b: packed sequences share one length."""
    if VARLEN:
        start = tl.load(CU + b).to(tl.int64)
        n = (tl.load(CU + b + 1) - start).to(tl.int32)
        return start, n, n
    return tl.zeros([], tl.int64), N_Q, N_K


@triton.jit
def _program_coords(CU, H, N_Q, N_K, VARLEN: tl.constexpr):
    """(block index, batch as int64, head, token offset, query length, key length) of this program. Grid axis 0 is
    batch·head (up to 2**31 − 1 programs; axis 1 stops at 65,535), axis 1 the block along the sequence."""
    pid_bh = tl.program_id(0)
    b = pid_bh // H
    tok, n_q, n_k = _seq_bounds(CU, b, N_Q, N_K, VARLEN)
    # batch offsets in int64: b * stride can pass 2**31 on big batches
    return tl.program_id(1), b.to(tl.int64), pid_bh % H, tok, n_q, n_k


@triton.jit
def _tile_load(base, rows, stride, dims, rmask, dmask, UPCAST: tl.constexpr):
    """A [len(rows), BLOCK_D] tile, zero outside rmask × dmask; fp32 under the interpreter (UPCAST), where bf16
    arithmetic is wrong."""
    t = tl.load(base + rows[:, None] * stride + dims[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
    if UPCAST:
        t = t.to(tl.float32)
    return t


@triton.jit
def _dot_operand(x, DTYPE: tl.constexpr, UPCAST: tl.constexpr):
    """fp32 probabilities/gradients as a dot operand in the inputs' dtype (a bf16/fp16 tensor-core operand on the
    GPU). Under the interpreter they are rounded to that dtype the GPU's way and multiplied in fp32, so the tests
    see the GPU's rounding and run the cast, without the interpreter's wrong bf16 arithmetic."""
    y = to_dtype(x, DTYPE, UPCAST)
    if UPCAST:
        y = y.to(tl.float32)
    return y


@triton.jit
def _key_valid(KPM, stride_kpm, b, cols, n_k, HAS_KPM: tl.constexpr):
    valid = cols < n_k
    if HAS_KPM:
        valid = valid & (tl.load(KPM + b * stride_kpm + cols, mask=valid, other=0) != 0)
    return valid


@triton.jit(do_not_specialize=_LENGTH_ARGS)
def _attn_fwd(Q, K, V, O, LSE, KPM, CU,
              sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, slb, slh, stride_kpm,
              H, N_Q, N_K, qk_scale, N_BUCKET, BH_BUCKET,
              HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, VARLEN: tl.constexpr, HAS_KPM: tl.constexpr,
              UPCAST: tl.constexpr, PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m, bb, h, tok, n_q, n_k = _program_coords(CU, H, N_Q, N_K, VARLEN)
    if pid_m * BLOCK_M >= n_q:
        return
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    dmask = dims < HEAD_DIM
    rmask = rows < n_q
    q = _tile_load(Q + bb * sqb + h * sqh + tok * sqn, rows, sqn, dims, rmask, dmask, UPCAST)
    k_base = K + bb * skb + h * skh + tok * skn
    v_base = V + bb * svb + h * svh + tok * svn
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)  # finite start: fully-masked blocks give exp2(-inf) = 0, no NaN
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, n_k, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        k = _tile_load(k_base, cols, skn, dims, cols < n_k, dmask, UPCAST)
        v = _tile_load(v_base, cols, svn, dims, cols < n_k, dmask, UPCAST)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
        valid = _key_valid(KPM, stride_kpm, bb, cols, n_k, HAS_KPM)
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(_dot_operand(p, V.dtype.element_ty, UPCAST), v, input_precision=PREC)
        m_i = m_new
    has_key = l_i > 0.0
    out = acc / tl.where(has_key, l_i, 1.0)[:, None]
    lse = tl.where(has_key, m_i + tl.math.log2(tl.where(has_key, l_i, 1.0)), float("inf"))
    tl.store(O + bb * sob + h * soh + (tok + rows)[:, None] * son + dims[None, :],
             to_dtype(out, O.dtype.element_ty, UPCAST), mask=rmask[:, None] & dmask[None, :])
    tl.store(LSE + bb * slb + h * slh + tok + rows, lse, mask=rmask)


@triton.jit(do_not_specialize=["N_Q", "slb", "slh"])
def _attn_bwd_pre(O, DO, DELTA, CU, sob, soh, son, sdb, sdh, sdn, slb, slh, H, N_Q,
                  HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, VARLEN: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta_i = Σ_d o_id · do_id (the softmax-backward row term)."""
    pid_m, bb, h, tok, n_q, _ = _program_coords(CU, H, N_Q, N_Q, VARLEN)
    if pid_m * BLOCK_M >= n_q:
        return
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    rmask, dmask = rows < n_q, dims < HEAD_DIM
    o = _tile_load(O + bb * sob + h * soh + tok * son, rows, son, dims, rmask, dmask, False)
    do = _tile_load(DO + bb * sdb + h * sdh + tok * sdn, rows, sdn, dims, rmask, dmask, False)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bb * slb + h * slh + tok + rows, delta, mask=rows < n_q)


@triton.jit(do_not_specialize=_LENGTH_ARGS)
def _attn_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, KPM, CU,
                   sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn,
                   sdkb, sdkh, sdkn, sdvb, sdvh, sdvn, slb, slh, stride_kpm,
                   H, N_Q, N_K, qk_scale, sm_scale, N_BUCKET, BH_BUCKET,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, VARLEN: tl.constexpr, HAS_KPM: tl.constexpr,
                   UPCAST: tl.constexpr, PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program per key block: dV = Σ_q Pᵀ dO, dK = scale · Σ_q dSᵀ Q, recomputing P from the saved lse."""
    pid_n, bb, h, tok, n_q, n_k = _program_coords(CU, H, N_Q, N_K, VARLEN)
    if pid_n * BLOCK_N >= n_k:
        return
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    dmask = dims < HEAD_DIM
    kv_mask = (cols < n_k)[:, None] & dmask[None, :]
    k = _tile_load(K + bb * skb + h * skh + tok * skn, cols, skn, dims, cols < n_k, dmask, UPCAST)
    v = _tile_load(V + bb * svb + h * svh + tok * svn, cols, svn, dims, cols < n_k, dmask, UPCAST)
    valid = _key_valid(KPM, stride_kpm, bb, cols, n_k, HAS_KPM)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    q_base = Q + bb * sqb + h * sqh + tok * sqn
    do_base = DO + bb * sdb + h * sdh + tok * sdn
    l_base = bb * slb + h * slh + tok
    for start_m in range(0, n_q, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        rmask = rows < n_q
        q = _tile_load(q_base, rows, sqn, dims, rmask, dmask, UPCAST)
        do = _tile_load(do_base, rows, sdn, dims, rmask, dmask, UPCAST)
        lse = tl.load(LSE + l_base + rows, mask=rmask, other=float("inf"))
        delta = tl.load(DELTA + l_base + rows, mask=rmask, other=0.0)
        s_t = tl.dot(k, tl.trans(q), input_precision=PREC) * qk_scale  # [BLOCK_N, BLOCK_M]
        p_t = tl.where(valid[:, None], tl.math.exp2(s_t - lse[None, :]), 0.0)
        dv += tl.dot(_dot_operand(p_t, DO.dtype.element_ty, UPCAST), do, input_precision=PREC)
        dp_t = tl.dot(v, tl.trans(do), input_precision=PREC)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += tl.dot(_dot_operand(ds_t, Q.dtype.element_ty, UPCAST), q, input_precision=PREC)
    dk = dk * sm_scale
    tl.store(DK + bb * sdkb + h * sdkh + (tok + cols)[:, None] * sdkn + dims[None, :],
             to_dtype(dk, DK.dtype.element_ty, UPCAST), mask=kv_mask)
    tl.store(DV + bb * sdvb + h * sdvh + (tok + cols)[:, None] * sdvn + dims[None, :],
             to_dtype(dv, DV.dtype.element_ty, UPCAST), mask=kv_mask)


@triton.jit(do_not_specialize=_LENGTH_ARGS)
def _attn_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, KPM, CU,
                 sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn, sdqb, sdqh, sdqn, slb, slh, stride_kpm,
                 H, N_Q, N_K, qk_scale, sm_scale, N_BUCKET, BH_BUCKET,
                 HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, VARLEN: tl.constexpr, HAS_KPM: tl.constexpr,
                 UPCAST: tl.constexpr, PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program per query block: dQ = scale · Σ_k dS K."""
    pid_m, bb, h, tok, n_q, n_k = _program_coords(CU, H, N_Q, N_K, VARLEN)
    if pid_m * BLOCK_M >= n_q:
        return
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    dmask = dims < HEAD_DIM
    rmask = rows < n_q
    q_mask = rmask[:, None] & dmask[None, :]
    q = _tile_load(Q + bb * sqb + h * sqh + tok * sqn, rows, sqn, dims, rmask, dmask, UPCAST)
    do = _tile_load(DO + bb * sdb + h * sdh + tok * sdn, rows, sdn, dims, rmask, dmask, UPCAST)
    l_off = bb * slb + h * slh + tok + rows
    lse = tl.load(LSE + l_off, mask=rmask, other=float("inf"))
    delta = tl.load(DELTA + l_off, mask=rmask, other=0.0)
    k_base = K + bb * skb + h * skh + tok * skn
    v_base = V + bb * svb + h * svh + tok * svn
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, n_k, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        k = _tile_load(k_base, cols, skn, dims, cols < n_k, dmask, UPCAST)
        v = _tile_load(v_base, cols, svn, dims, cols < n_k, dmask, UPCAST)
        valid = _key_valid(KPM, stride_kpm, bb, cols, n_k, HAS_KPM)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
        p = tl.where(valid[None, :], tl.math.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PREC)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(_dot_operand(ds, K.dtype.element_ty, UPCAST), k, input_precision=PREC)
    dq = dq * sm_scale
    tl.store(DQ + bb * sdqb + h * sdqh + (tok + rows)[:, None] * sdqn + dims[None, :],
             to_dtype(dq, DQ.dtype.element_ty, UPCAST), mask=q_mask)


# Block shapes: GPU candidates are autotuned per (length bucket, head dim, layout, dtype); the interpreter gets one
# small config (it runs ~0.5 ms per program).
_C = triton.Config
# Few candidates on purpose: every (head dim, dtype, padding/varlen) combination compiles all of them.
_KEY = ["N_BUCKET", "BH_BUCKET", "HEAD_DIM", "VARLEN", "HAS_KPM"]
GPU_CONFIGS = {  # per kernel; compile_check lowers every one of them for sm90
    "fwd": [_C({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=2),
            _C({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=2),
            _C({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=3),
            _C({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=2)],
    "dkdv": [_C({"BLOCK_M": 32, "BLOCK_N": 64}, num_warps=4, num_stages=2),
             _C({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=2),
             _C({"BLOCK_M": 64, "BLOCK_N": 128}, num_warps=8, num_stages=2)],
    "dq": [_C({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=2),
           _C({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=2),
           _C({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=2)],
}
_INTERP_CONFIG = _C({"BLOCK_M": 16, "BLOCK_N": 16})
SMEM_BYTES = 227 * 1024  # per block on sm90 (H100/H200)


def fits(cfg: triton.Config, block_d: int, elem_bytes: int) -> bool:
    """Whether a config's pipelined q/k/v tiles fit in shared memory: (BLOCK_M + BLOCK_N) × BLOCK_D × bytes × stages
    (exact for the forward's biggest tile; compile_check measures every variant). In fp32 at head dim 80/128 the
    128×128 forward tile needs 256 KiB."""
    k = cfg.kwargs
    return (k["BLOCK_M"] + k["BLOCK_N"]) * block_d * elem_bytes * cfg.num_stages <= SMEM_BYTES


def _prune(configs_, named_args, **kwargs):
    kept = [c for c in configs_ if fits(c, kwargs["BLOCK_D"], named_args["Q"].element_size())]
    return kept or configs_[:1]


_tune = dict(key=_KEY, prune_configs_by={"early_config_prune": _prune})
_fwd_kernel = triton.autotune(configs(GPU_CONFIGS["fwd"], _INTERP_CONFIG), **_tune)(_attn_fwd)
_dkdv_kernel = triton.autotune(configs(GPU_CONFIGS["dkdv"], _INTERP_CONFIG), **_tune)(_attn_bwd_dkdv)
_dq_kernel = triton.autotune(configs(GPU_CONFIGS["dq"], _INTERP_CONFIG), **_tune)(_attn_bwd_dq)


def _bucket(n: int) -> int:
    """Autotune key: lengths 50–200 share a few buckets, so predictor shapes do not retune every step."""
    return triton.next_power_of_2(max(int(n), 16))


def _bh_bucket(b: int, h: int) -> int:
    """Autotune key: the best tiles for a few sequences differ from those for a full batch (occupancy)."""
    return min(triton.next_power_of_2(max(b * h, 1)), 4096)


def _head_block(d: int) -> int:
    if d > 256:
        raise ValueError(f"attention: head dim {d} > 256 is not supported by the fused kernel")
    return max(16, triton.next_power_of_2(d))


def launch_grid(bh: int, n: int, block: int) -> tuple[int, int]:
    """(batch·head, sequence blocks): B·H goes on axis 0, whose limit is 2**31 − 1, so batches of any practical
    size launch (on axis 1 it capped the predictor at ~1,365 images per GPU)."""
    blocks = triton.cdiv(n, block)
    if bh >= 2**31 or blocks > MAX_GRID_Y:
        raise ValueError(f"attention: {bh} sequence·heads × {blocks} blocks of {block} exceed CUDA's grid limits")
    return (bh, blocks)


def _layout(t: torch.Tensor, varlen: bool) -> tuple[int, int, int]:
    """(batch, head, token) strides; packed [T, H, d] tensors have no batch stride."""
    return (0, t.stride(1), t.stride(0)) if varlen else (t.stride(0), t.stride(1), t.stride(2))


def _alloc_like_bnhd(q: torch.Tensor, varlen: bool, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Outputs in [B, N, H, d] memory viewed as [B, H, N, d], so the model's transpose(1, 2).reshape is free."""
    dtype = dtype or q.dtype
    if varlen:
        return _common.empty(*q.shape, dtype=dtype, device=q.device)
    B, H, N, d = q.shape
    return _common.empty(B, N, H, d, dtype=dtype, device=q.device).transpose(1, 2)


def _geometry(q, k, cu, max_seqlen):
    varlen = cu is not None
    if varlen:
        B, H, n_q, n_k = cu.numel() - 1, q.shape[1], max_seqlen, max_seqlen
    else:
        B, H, n_q, n_k = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    return varlen, B, H, n_q, n_k


def _kpm_args(kpm):
    return (kpm, kpm.stride(0)) if kpm is not None else (None, 0)


@torch.library.custom_op("radjepa::attention_fwd", mutates_args=())
def _attn_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kpm: Optional[torch.Tensor],
                 cu: Optional[torch.Tensor], max_seqlen: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    varlen, B, H, n_q, n_k = _geometry(q, k, cu, max_seqlen)
    o = _alloc_like_bnhd(q, varlen)
    lse = _common.empty(*((H, q.shape[0]) if varlen else (B, H, n_q)), dtype=torch.float32, device=q.device)
    if B * H == 0 or n_q == 0 or q.shape[-1] == 0:
        o.zero_()
        lse.fill_(float("inf"))
        return o, lse
    kpm_t, s_kpm = _kpm_args(kpm)
    slb, slh = (0, lse.stride(0)) if varlen else (lse.stride(0), lse.stride(1))
    grid = lambda meta: launch_grid(B * H, n_q, meta["BLOCK_M"])  # noqa: E731
    with device_guard(q):
        _fwd_kernel[grid](q, k, v, o, lse, kpm_t, cu, *_layout(q, varlen), *_layout(k, varlen), *_layout(v, varlen),
                          *_layout(o, varlen), slb, slh, s_kpm, H, n_q, n_k, scale * LOG2E, _bucket(max(n_q, n_k)),
                          _bh_bucket(B, H), HEAD_DIM=q.shape[-1], BLOCK_D=_head_block(q.shape[-1]), VARLEN=varlen,
                          HAS_KPM=kpm is not None, UPCAST=upcast(), PREC=dot_precision(q.dtype))
    return o, lse


@_attn_fwd_op.register_fake
def _(q, k, v, kpm, cu, max_seqlen, scale):
    varlen = cu is not None
    lse_shape = (q.shape[1], q.shape[0]) if varlen else (q.shape[0], q.shape[1], q.shape[2])
    return _alloc_like_bnhd(q, varlen), q.new_empty(lse_shape, dtype=torch.float32)


@torch.library.custom_op("radjepa::attention_bwd", mutates_args=())
def _attn_bwd_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                 lse: torch.Tensor, kpm: Optional[torch.Tensor], cu: Optional[torch.Tensor], max_seqlen: int,
                 scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    varlen, B, H, n_q, n_k = _geometry(q, k, cu, max_seqlen)
    if do.stride(-1) != 1:
        do = do.contiguous()
    dq, dk, dv = _alloc_like_bnhd(q, varlen), _alloc_like_bnhd(k, varlen), _alloc_like_bnhd(v, varlen)
    if B * H == 0 or max(n_q, n_k) == 0 or q.shape[-1] == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    d = q.shape[-1]
    common = dict(HEAD_DIM=d, BLOCK_D=_head_block(d), VARLEN=varlen)
    delta = _common.empty(*lse.shape, dtype=torch.float32, device=lse.device)
    slb, slh = (0, lse.stride(0)) if varlen else (lse.stride(0), lse.stride(1))
    pre_block = 16 if interpreting() else 64
    kpm_t, s_kpm = _kpm_args(kpm)
    tail = dict(HAS_KPM=kpm is not None, UPCAST=upcast(), PREC=dot_precision(q.dtype), **common)
    strides = (*_layout(q, varlen), *_layout(k, varlen), *_layout(v, varlen), *_layout(do, varlen))
    bucket = _bucket(max(n_q, n_k))
    with device_guard(q):
        _attn_bwd_pre[launch_grid(B * H, n_q, pre_block)](
            o, do, delta, cu, *_layout(o, varlen), *_layout(do, varlen), slb, slh, H, n_q, BLOCK_M=pre_block,
            **common)
        _dkdv_kernel[lambda meta: launch_grid(B * H, n_k, meta["BLOCK_N"])](
            q, k, v, do, lse, delta, dk, dv, kpm_t, cu, *strides, *_layout(dk, varlen), *_layout(dv, varlen),
            slb, slh, s_kpm, H, n_q, n_k, scale * LOG2E, scale, bucket, _bh_bucket(B, H), **tail)
        _dq_kernel[lambda meta: launch_grid(B * H, n_q, meta["BLOCK_M"])](
            q, k, v, do, lse, delta, dq, kpm_t, cu, *strides, *_layout(dq, varlen),
            slb, slh, s_kpm, H, n_q, n_k, scale * LOG2E, scale, bucket, _bh_bucket(B, H), **tail)
    return dq, dk, dv


@_attn_bwd_op.register_fake
def _(do, q, k, v, o, lse, kpm, cu, max_seqlen, scale):
    varlen = cu is not None
    return _alloc_like_bnhd(q, varlen), _alloc_like_bnhd(k, varlen), _alloc_like_bnhd(v, varlen)


def _setup_context(ctx, inputs, output):
    q, k, v, kpm, cu, max_seqlen, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, kpm, cu)
    ctx.max_seqlen, ctx.scale = max_seqlen, scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, do, _dlse):
    q, k, v, o, lse, kpm, cu = ctx.saved_tensors
    dq, dk, dv = _attn_bwd_op(do, q, k, v, o, lse, kpm, cu, ctx.max_seqlen, ctx.scale)
    return dq, dk, dv, None, None, None, None


_attn_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def _prepare(q, k, v):
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"attention: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"attention: fused kernel takes fp32/fp16/bf16, got {q.dtype}")
    check_device(q, k, v)
    return [t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v)]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
              scale: float | None = None) -> torch.Tensor:
    """Fused softmax(q kᵀ·scale) v over [B, H, N, d]; key_padding_mask [B, N_k] bool, True = valid key."""
    if q.dim() != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention: expected q [B,H,Nq,d], k/v [B,H,Nk,d]; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    q, k, v = _prepare(q, k, v)
    kpm = None
    if key_padding_mask is not None:
        if key_padding_mask.shape != (k.shape[0], k.shape[2]):
            raise ValueError(f"attention: key_padding_mask must be [B, N_k]={k.shape[0], k.shape[2]}, "
                             f"got {tuple(key_padding_mask.shape)}")
        kpm = key_padding_mask.to(device=q.device, dtype=torch.bool).contiguous().view(torch.uint8)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return _attn_fwd_op(q, k, v, kpm, None, max(q.shape[2], k.shape[2]), scale)[0]


def attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                     max_seqlen: int | None = None, scale: float | None = None) -> torch.Tensor:
    """Packed variable-length attention: q, k, v [T, H, d]; sequence i spans cu_seqlens[i]:cu_seqlens[i+1]."""
    if q.dim() != 3 or q.shape != k.shape or k.shape != v.shape:
        raise ValueError(f"attention_varlen: q, k, v must share shape [T,H,d]; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1 or cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError("attention_varlen: cu_seqlens must be a 1-D int32/int64 tensor [n_seqs + 1]")
    q, k, v = _prepare(q, k, v)
    cu = cu_seqlens.to(q.device).contiguous()
    if max_seqlen is None:
        max_seqlen = int((cu[1:] - cu[:-1]).max()) if cu.numel() > 1 else 0
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return _attn_fwd_op(q, k, v, None, cu, int(max_seqlen), scale)[0]
