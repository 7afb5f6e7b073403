"""radjepa_kernels: the performance-critical ops of I-JEPA pretraining, installed from `kernels/`.

Each op has a pure-PyTorch reference (`reference.py`, the CPU path and the test oracle) and a Triton
implementation. Dispatch by backend (`set_backend`):
  eager  → reference everywhere;
  triton → Triton (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1);
  auto   → Triton for CUDA tensors when triton imports, reference otherwise.

Triton implementations (imported lazily, so CPU-only use never needs triton): `gather.py` (masked-block gather,
CSR backward without atomics), `fused_attention.py` (flash-style forward/backward, padding + varlen), `ema.py`
(one-launch EMA over a cached pointer table, called outside autograd/compile). Gather and attention are
`torch.library` custom ops (`torch.ops.radjepa.*`) with fake implementations and registered autograd, so
torch.compile traces through them. `python -m radjepa_kernels.compile_check` compiles every
kernel variant for sm90 without a GPU; `benchmarks/kernels.py` checks and times them on a GPU.
"""
from __future__ import annotations

import os

import torch

from . import reference

_BACKENDS = ("auto", "triton", "eager")
_backend = "auto"


def set_backend(name: str) -> None:
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"kernel backend must be one of {_BACKENDS}, not {name!r}")
    _backend = name


def get_backend() -> str:
    return _backend


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def use_triton(t: torch.Tensor) -> bool:
    """Whether an op on tensor `t` takes the Triton path under the current backend."""
    if _backend == "eager":
        return False
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if _backend == "triton":
        if not triton_available():
            raise RuntimeError("--kernels triton: triton is not importable on this machine")
        if t.is_cuda or interpret:
            return True
        raise RuntimeError("--kernels triton needs CUDA tensors, or TRITON_INTERPRET=1 on CPU (slow; for tests)")
    return t.is_cuda and triton_available()


def gather_tokens(x: torch.Tensor, idx: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
    """Masked-block gather: see reference.gather_tokens."""
    if use_triton(x):
        from .gather import gather_tokens as gather_triton
        return gather_triton(x, idx, pos)
    return reference.gather_tokens(x, idx, pos)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              key_padding_mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """Scaled dot-product attention over [B, H, N, d] with optional key padding: see reference.attention."""
    if use_triton(q):
        from .fused_attention import attention as attention_triton
        return attention_triton(q, k, v, key_padding_mask, scale=scale)
    return reference.attention(q, k, v, key_padding_mask, scale=scale)


def attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                     max_seqlen: int | None = None, scale: float | None = None) -> torch.Tensor:
    """Packed variable-length attention over [T, H, d]: see reference.attention_varlen."""
    if use_triton(q):
        from .fused_attention import attention_varlen as varlen_triton
        return varlen_triton(q, k, v, cu_seqlens, max_seqlen, scale=scale)
    return reference.attention_varlen(q, k, v, cu_seqlens, scale=scale)


def ema_update_(target: list[torch.Tensor], online: list[torch.Tensor], momentum: float) -> None:
    """In-place EMA of fp32 target parameters: see reference.ema_update_."""
    if target and use_triton(target[0]):
        from .ema import ema_update_ as ema_triton
        return ema_triton(target, online, momentum)
    return reference.ema_update_(target, online, momentum)


__all__ = ["set_backend", "get_backend", "use_triton", "triton_available", "gather_tokens", "attention",
           "attention_varlen", "ema_update_", "reference"]
