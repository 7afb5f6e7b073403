"""radjepa_kernels: the performance-critical ops of I-JEPA pretraining, installed from `kernels/`.

Each op has a pure-PyTorch reference (`reference.py`, the CPU path and the test oracle) and a Triton
implementation. Dispatch by backend (`set_backend`, else $RADJEPA_KERNELS, else auto):
  eager  → reference everywhere;
  triton → Triton (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1), unchecked;
  auto   → Triton for a CUDA op only once its kernel family (op × dtype × head dim × layout) has passed the
           numerical self-check on that device (`check.py`, cached per GPU model + torch + triton + kernel
           sources); eager with one warning line otherwise, and always eager on CPU.

Triton implementations (imported lazily, so CPU-only use never needs triton): `gather.py` (masked-block gather,
CSR backward without atomics), `fused_attention.py` (flash-style forward/backward, padding + varlen), `ema.py`
(one-launch EMA over a cached pointer table, called outside autograd/compile). Gather and attention are
`torch.library` custom ops (`torch.ops.radjepa.*`) with fake implementations and registered autograd, so
torch.compile traces through them. `python -m radjepa_kernels.compile_check` compiles every
kernel variant for sm90 without a GPU; `benchmarks/kernels.py` checks and times them on a GPU.
"""
from __future__ import annotations

import os
import warnings

import torch

from . import reference

_BACKENDS = ("auto", "triton", "eager")
ENV_VAR = "RADJEPA_KERNELS"
_backend: str | None = None  # None: take RADJEPA_KERNELS (default auto)
_VERDICTS: dict[tuple[str, str], bool] = {}  # (device, family name) → self-check passed, this process


def set_backend(name: str | None) -> None:
    """Pick the backend for this process; None goes back to $RADJEPA_KERNELS (default auto)."""
    global _backend
    if name is not None and name not in _BACKENDS:
        raise ValueError(f"kernel backend must be one of {_BACKENDS}, not {name!r}")
    _backend = name


def get_backend() -> str:
    if _backend is not None:
        return _backend
    env = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if env not in _BACKENDS:
        raise ValueError(f"{ENV_VAR}={env!r}: must be one of {', '.join(_BACKENDS)}")
    return env


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def _on_gpu(t: torch.Tensor) -> bool:
    """Where `auto` considers Triton at all (tests monkeypatch this to stand a CPU in for a GPU)."""
    return t.is_cuda


def use_triton(t: torch.Tensor, family=None) -> bool:
    """Whether an op on tensor `t` takes the Triton path under the current backend. Under `auto` a CUDA op takes it
    only once its kernel `family` (check.Family) passed the numerical self-check on that device."""
    backend = get_backend()
    if backend == "eager":
        return False
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("--kernels triton: triton is not importable on this machine")
        if t.is_cuda or interpret:
            return True
        raise RuntimeError("--kernels triton needs CUDA tensors, or TRITON_INTERPRET=1 on CPU (slow; for tests)")
    if not _on_gpu(t):
        return False
    if family is None or family.dtype not in ("fp32", "fp16", "bf16"):
        return False  # no self-check covers it (e.g. fp64): the reference is exact enough and always right
    if not triton_available():
        _warn_once(t.device, "triton", "triton is not importable")
        return False
    return _proven(t.device, family)


def _warn_once(device: torch.device, what: str, why: str) -> None:
    key = (str(device), "warned:" + what)
    if key not in _VERDICTS:
        _VERDICTS[key] = False
        warnings.warn(f"radjepa_kernels: {what} on {device} runs eager PyTorch: {why} "
                      f"({ENV_VAR}=triton or --kernels triton forces the kernel)", RuntimeWarning, stacklevel=4)


@torch.compiler.disable
def _proven(device: torch.device, family) -> bool:
    key = (str(device), family.name)
    if key not in _VERDICTS:
        from .check import failure_reason, selfcheck
        row = selfcheck(device, [family])["checks"][family.name]
        _VERDICTS[key] = bool(row["passed"])
        if not row["passed"]:
            _warn_once(device, family.name, "its Triton self-check failed: " + failure_reason(row))
    return _VERDICTS[key]


def _family(op: str, t: torch.Tensor | torch.dtype, head_dim: int = 0, variant: str = ""):
    from .check import DTYPE_NAMES, Family
    dtype = t if isinstance(t, torch.dtype) else t.dtype
    return Family(op, DTYPE_NAMES.get(dtype, str(dtype)), head_dim, variant)


def varlen_fused(t: torch.Tensor, head_dim: int) -> bool:
    """Whether `attention_varlen` on activations like `t` (in autocast's dtype when autocast is on) runs the fused
    kernel. Models pack variable-length batches only then: the reference loops over the sequences in Python."""
    backend = get_backend()
    if backend == "eager" or (backend == "auto" and not _on_gpu(t)):
        return False
    dtype = t.dtype
    if torch.is_autocast_enabled(t.device.type):
        dtype = torch.get_autocast_dtype(t.device.type)
    return use_triton(t, _family("attention_varlen", dtype, head_dim))


def gather_tokens(x: torch.Tensor, idx: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
    """Masked-block gather: see reference.gather_tokens."""
    if use_triton(x, _family("gather_tokens", x, variant="nopos" if pos is None else "pos")):
        from .gather import gather_tokens as gather_triton
        return gather_triton(x, idx, pos)
    return reference.gather_tokens(x, idx, pos)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              key_padding_mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """Scaled dot-product attention over [B, H, N, d] with optional key padding: see reference.attention."""
    if use_triton(q, _family("attention", q, q.shape[-1], "dense" if key_padding_mask is None else "kpm")):
        from .fused_attention import attention as attention_triton
        return attention_triton(q, k, v, key_padding_mask, scale=scale)
    return reference.attention(q, k, v, key_padding_mask, scale=scale)


def attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                     max_seqlen: int | None = None, scale: float | None = None) -> torch.Tensor:
    """Packed variable-length attention over [T, H, d]: see reference.attention_varlen."""
    if use_triton(q, _family("attention_varlen", q, q.shape[-1])):
        from .fused_attention import attention_varlen as varlen_triton
        return varlen_triton(q, k, v, cu_seqlens, max_seqlen, scale=scale)
    return reference.attention_varlen(q, k, v, cu_seqlens, scale=scale)


def ema_update_(target: list[torch.Tensor], online: list[torch.Tensor], momentum: float) -> None:
    """In-place EMA of fp32 target parameters: see reference.ema_update_."""
    if target and all(use_triton(target[0], _family("ema_update_", o)) for o in {o.dtype: o for o in online}.values()):
        from .ema import ema_update_ as ema_triton
        return ema_triton(target, online, momentum)
    return reference.ema_update_(target, online, momentum)


def selfcheck(device="cuda", families=None, use_cache: bool = True) -> dict:
    """Numerical self-check of the Triton kernels on `device` (see check.selfcheck for the report's fields)."""
    from .check import selfcheck as run
    return run(device, families, use_cache)


__all__ = ["set_backend", "get_backend", "use_triton", "triton_available", "selfcheck", "ENV_VAR", "varlen_fused",
           "gather_tokens", "attention",
           "attention_varlen", "ema_update_", "reference"]
