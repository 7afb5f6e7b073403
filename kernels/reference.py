"""Pure-PyTorch references: the CPU runtime path of every op and the oracle the Triton kernels are tested against."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_tokens(x: torch.Tensor, idx: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
    """out[m*B + b, j] = x[b, idx[m, b, j]] (+ pos[idx[m, b, j]]); idx < 0 marks padding (output row = 0).

    x: [B, N, D]; idx: [M, B, K] integer; pos: [N, D] or None. Returns [M*B, K, D] in I-JEPA's mask-major order.
    """
    if idx.dim() == 2:
        idx = idx.unsqueeze(0)
    M, B, K = idx.shape
    if x.shape[0] != B:
        raise ValueError(f"gather_tokens: x has batch {x.shape[0]} but idx has batch {B}")
    valid = idx >= 0
    safe = idx.clamp(min=0).long()
    src = x if pos is None else x + pos.unsqueeze(0).to(x.dtype)
    out = torch.gather(src.unsqueeze(0).expand(M, -1, -1, -1), 2,
                       safe.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1]))
    out = out * valid.unsqueeze(-1).to(out.dtype)
    return out.reshape(M * B, K, x.shape[-1])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              key_padding_mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """softmax(q kᵀ · scale) v over [B, H, N, d] (scale defaults to 1/√d); key_padding_mask [B, N] bool,
    True = valid key. Rows whose keys are all padding return 0 (SDPA would return NaN).
    """
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    mask = key_padding_mask[:, None, None, :].to(torch.bool)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    empty = ~key_padding_mask.any(dim=1)  # no `if empty.any()`: reading it back would stall a GPU stream
    return out.masked_fill(empty[:, None, None, None], 0.0)


def attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                     scale: float | None = None) -> torch.Tensor:
    """Packed variable-length attention: q, k, v [T, H, d]; sequence i spans cu_seqlens[i]:cu_seqlens[i+1]."""
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e > s:
            out[s:e] = F.scaled_dot_product_attention(
                q[s:e].transpose(0, 1), k[s:e].transpose(0, 1), v[s:e].transpose(0, 1), scale=scale).transpose(0, 1)
    return out


@torch.no_grad()
def ema_update_(target: list[torch.Tensor], online: list[torch.Tensor], momentum: float) -> None:
    """target ← momentum·target + (1 − momentum)·online, in place (timm ModelEmaV3's `_foreach_lerp_`)."""
    if len(target) != len(online):
        raise ValueError(f"ema_update_: {len(target)} target vs {len(online)} online tensors")
    if not target:
        return
    online = [o.to(t.dtype) if o.dtype != t.dtype else o for t, o in zip(target, online)]
    torch._foreach_lerp_(target, online, 1.0 - float(momentum))
