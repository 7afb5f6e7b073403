"""Helpers shared by the Triton kernels: interpreter detection, dtype maps, matmul precision."""
from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl


def interpreting() -> bool:
    """Triton's CPU interpreter is on (tests). It computes bf16 arithmetic wrongly, so kernels upcast to fp32
    right after each load when this is true, and autotuning is restricted to one config."""
    return os.environ.get("TRITON_INTERPRET") == "1"


# Tests set this to run the bf16 load/cast/store code of the kernels under the interpreter (see `upcast`).
NO_UPCAST = False


def upcast() -> bool:
    """Kernels' UPCAST flag: load tiles as fp32 under the interpreter, where bf16 arithmetic is wrong. A test turns it
    off for dtypes where the interpreter computes right (fp16, fp32), so the cast-to-input-dtype paths the GPU
    takes run in tests too."""
    return interpreting() and not NO_UPCAST


def device_guard(t: torch.Tensor):
    """Launch on t's device: Triton launches on the *current* CUDA device, which is not t's for `cuda:1` tensors
    in a process whose current device is 0 (benchmarks' --device cuda:1, or a rank that never called set_device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


# Tests set this to fill every kernel output with NaN before the kernel runs, so unwritten elements show up.
POISON_OUTPUTS = False


def empty(*shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """torch.empty for kernel outputs (NaN-filled when POISON_OUTPUTS is set)."""
    if POISON_OUTPUTS and dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 dots follow torch's matmul setting: tf32 only when the user allowed it (as torch.matmul does)."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


def configs(gpu: list[triton.Config], interp: triton.Config) -> list[triton.Config]:
    return [interp] if interpreting() else gpu


def check_device(*tensors: torch.Tensor) -> None:
    devs = {t.device for t in tensors if t is not None}
    if len(devs) > 1:
        raise ValueError(f"tensors live on different devices: {sorted(map(str, devs))}")


@triton.jit
def to_dtype(x, DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """Cast fp32 `x` to DTYPE. The interpreter truncates fp32→bf16 where GPUs round to nearest even; under the
    interpreter we round the bits ourselves first so tests see GPU rounding."""
    if INTERPRET and DTYPE == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(DTYPE)
