"""Numerical self-check of the Triton kernels on one device, so `--kernels auto` uses a kernel only where it is proven.

A *family* is what one compiled kernel variant serves: op × dtype (× head dim × layout for attention). For each
family the check runs the Triton op on a small input of that family on the device, forward and backward, and
compares it with `reference.py` evaluated in fp64 on the same device. The tolerance is the larger of a fixed
relative-norm bound per dtype and twice the error of PyTorch's own op in the same dtype (so a device where torch
itself is less precise, e.g. fp32 matmuls in TF32, is not held to a stricter standard than torch).

Verdicts are cached in memory and in a JSON file (`$RADJEPA_KERNEL_CACHE`, default
`~/.cache/radjepa/kernel_selfcheck.json`) under a key of GPU model, torch, triton and a hash of the kernel sources,
so each family is checked once per machine/software combination, and again after the kernels change.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

import torch

from . import reference

# Relative-norm bound against the fp64 reference, per dtype: the one table the self-check and the tests share.
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_DTYPES = {v: k for k, v in DTYPE_NAMES.items()}
OPS = ("gather_tokens", "attention", "attention_varlen", "ema_update_")
# Head dims the model presets produce: encoders 64 (tiny…large) and 80 (huge); the 384-wide predictor 128/64/32/24.
PRESET_HEAD_DIMS = (24, 32, 64, 80, 128)


@dataclasses.dataclass(frozen=True)
class Family:
    """One kernel variant: op, dtype name, head dim (attention only) and layout ("dense" | "kpm" for attention,
    "pos" | "nopos" for gather, "" otherwise)."""
    op: str
    dtype: str
    head_dim: int = 0
    variant: str = ""

    @property
    def name(self) -> str:
        extra = [f"d{self.head_dim}"] if self.head_dim else []
        extra += [self.variant] if self.variant else []
        return f"{self.op}[{','.join([self.dtype, *extra])}]"


def default_families() -> list[Family]:
    """What `selfcheck(device)` checks when not told: every family the model presets run in bf16 training and fp32
    inference (attention with and without key padding, varlen; gather without positions; EMA)."""
    fams = [Family("gather_tokens", dt, variant="nopos") for dt in ("fp32", "bf16")]
    fams += [Family("ema_update_", dt) for dt in ("fp32", "bf16")]
    for dt in ("bf16", "fp32"):
        for hd in PRESET_HEAD_DIMS:
            fams += [Family("attention", dt, hd, "dense"), Family("attention", dt, hd, "kpm"),
                     Family("attention_varlen", dt, hd)]
    return fams


# ---------------------------------------------------------------------------------------------------- checking
def rel_err(a: torch.Tensor, ref: torch.Tensor, floor: float = 1e-6) -> float:
    """‖a − ref‖ / max(‖ref‖, floor·√numel): relative, but not blown up when the reference is ~0; NaN → inf."""
    a, ref = a.detach().double(), ref.detach().double()
    if not ref.numel():
        return 0.0
    denom = max(ref.norm().item(), floor * ref.numel() ** 0.5)
    err = (a - ref).norm().item() / denom
    return err if err == err else float("inf")  # NaN → inf, so it fails every comparison the same way


def _grads(out, inputs, g):
    return torch.autograd.grad(out, inputs, g)


def _compare(fused: list[torch.Tensor], ref64: list[torch.Tensor], own: list[torch.Tensor],
             dtype: torch.dtype) -> tuple[float, float]:
    """(max relative error of the fused outputs, tolerance) over matched lists of outputs/gradients."""
    err = max(rel_err(a, r) for a, r in zip(fused, ref64))
    own_err = max(rel_err(a, r) for a, r in zip(own, ref64))
    return err, max(TOL[dtype], 2.0 * own_err + 1e-6)


def _check_attention(fam: Family, device: torch.device, gen: torch.Generator) -> tuple[float, float, list]:
    from . import fused_attention
    dtype = _DTYPES[fam.dtype]
    B, H, N, d = 3, 2, 37, fam.head_dim
    q, k, v = (torch.randn(B, H, N, d, generator=gen).to(device=device, dtype=dtype) for _ in range(3))
    kpm = None
    if fam.variant == "kpm":
        kpm = torch.rand(B, N, generator=gen) > 0.3
        kpm[:, 0] = True
        kpm[1, N // 2:] = False  # a long padded tail, as variable-length masks give
        kpm = kpm.to(device)
    g = torch.randn(B, H, N, d, generator=gen).to(device=device, dtype=dtype)

    def run(fn, ins, cast=None):
        ins = [t.detach().to(cast or t.dtype).requires_grad_() for t in ins]
        out = fn(*ins, kpm)
        return [out, *_grads(out, ins, g.to(out.dtype))]

    fused = run(fused_attention.attention, (q, k, v))
    ref64 = run(reference.attention, (q, k, v), torch.float64)
    own = run(reference.attention, (q, k, v))
    err, tol = _compare(fused, ref64, own, dtype)
    return err, tol, [[B, H, N, d]] + ([[B, N]] if kpm is not None else [])


def _check_varlen(fam: Family, device: torch.device, gen: torch.Generator) -> tuple[float, float, list]:
    from . import fused_attention
    dtype = _DTYPES[fam.dtype]
    lens = [23, 1, 40, 0, 17]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=device)
    T, H, d = sum(lens), 2, fam.head_dim
    q, k, v = (torch.randn(T, H, d, generator=gen).to(device=device, dtype=dtype) for _ in range(3))
    g = torch.randn(T, H, d, generator=gen).to(device=device, dtype=dtype)

    def run(fn, cast=None, **kw):
        ins = [t.detach().to(cast or t.dtype).requires_grad_() for t in (q, k, v)]
        out = fn(*ins, cu, **kw)
        return [out, *_grads(out, ins, g.to(out.dtype))]

    fused = run(fused_attention.attention_varlen, max_seqlen=max(lens))
    ref64 = run(reference.attention_varlen, torch.float64)
    own = run(reference.attention_varlen)
    err, tol = _compare(fused, ref64, own, dtype)
    return err, tol, [[T, H, d], [len(lens) + 1]]


def _check_gather(fam: Family, device: torch.device, gen: torch.Generator) -> tuple[float, float, list]:
    from . import gather
    dtype = _DTYPES[fam.dtype]
    B, N, D, M, Kk = 3, 49, 96, 2, 20
    x = torch.randn(B, N, D, generator=gen).to(device=device, dtype=dtype)
    idx = torch.stack([torch.randperm(N, generator=gen)[:Kk] for _ in range(M * B)]).view(M, B, Kk)
    idx[1, 2, Kk - 5:] = -1  # padding rows
    idx = idx.to(device)
    pos = torch.randn(N, D, generator=gen).to(device) if fam.variant == "pos" else None
    g = torch.randn(M * B, Kk, D, generator=gen).to(device=device, dtype=dtype)

    def run(fn, cast=None):
        xx = x.detach().to(cast or x.dtype).requires_grad_()
        out = fn(xx, idx, None if pos is None else pos.to(cast or pos.dtype))
        return [out, *_grads(out, [xx], g.to(out.dtype))]

    fused = run(gather.gather_tokens)
    ref64 = run(reference.gather_tokens, torch.float64)
    own = run(reference.gather_tokens)
    err, tol = _compare(fused, ref64, own, dtype)
    return err, tol, [[B, N, D], [M, B, Kk]]


def _check_ema(fam: Family, device: torch.device, gen: torch.Generator) -> tuple[float, float, list]:
    from . import ema
    dtype = _DTYPES[fam.dtype]
    shapes = [(300, 17), (5,), (4099,)]
    tgt = [torch.randn(*s, generator=gen).to(device) for s in shapes]
    onl = [torch.randn(*s, generator=gen).to(device=device, dtype=dtype) for s in shapes]
    fused = [t.clone() for t in tgt]
    ema.ema_update_(fused, onl, 0.996)
    ref64 = [t.double() for t in tgt]
    reference.ema_update_(ref64, [o.double() for o in onl], 0.996)
    own = [t.clone() for t in tgt]
    reference.ema_update_(own, onl, 0.996)
    err, tol = _compare(fused, ref64, own, torch.float32)  # targets are fp32 whatever the online dtype
    return err, tol, [list(s) for s in shapes]


_CHECKS = {"attention": _check_attention, "attention_varlen": _check_varlen, "gather_tokens": _check_gather,
           "ema_update_": _check_ema}


def check_family(fam: Family, device: torch.device) -> dict[str, Any]:
    """Run one family's check; any exception (compile error, launch failure) is a failed check with its message."""
    row: dict[str, Any] = {"op": fam.op, "dtype": fam.dtype, "head_dim": fam.head_dim or None,
                           "variant": fam.variant or None}
    gen = torch.Generator().manual_seed(len(fam.name))
    t0 = time.perf_counter()
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    try:
        with on_device, torch.autocast(device.type, enabled=False), torch.inference_mode(False), \
                torch.enable_grad():
            err, tol, shapes = _CHECKS[fam.op](fam, device, gen)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        row.update(passed=err <= tol, max_rel_err=err, tol=tol, shapes=shapes, error=None)
    except Exception as e:  # noqa: BLE001 - a kernel that cannot run on this device simply fails its check
        row.update(passed=False, max_rel_err=None, tol=None, shapes=None, error=f"{type(e).__name__}: {e}"[:400])
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


# ---------------------------------------------------------------------------------------------------- cache
def cache_path() -> Path:
    return Path(os.environ.get("RADJEPA_KERNEL_CACHE")
                or Path.home() / ".cache" / "radjepa" / "kernel_selfcheck.json")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} (Triton interpreter)"


def _sources_hash() -> str:
    h = hashlib.sha256()
    for name in ("_common.py", "fused_attention.py", "gather.py", "ema.py", "check.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:12]


def cache_key(device: torch.device) -> str:
    import triton
    return (f"{device_name(device)} | torch {torch.__version__} | triton {triton.__version__} | "
            f"kernels {_sources_hash()}")


def _load_cache() -> dict[str, dict]:
    try:
        data = json.loads(cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(key: str, rows: dict[str, dict]) -> None:
    """Merge `rows` into the file atomically (ranks on one node may write at once); an unwritable cache only costs
    a re-check next time."""
    path = cache_path()
    try:
        data = _load_cache()
        data.setdefault(key, {}).update(rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------------- public
def selfcheck(device: torch.device | str | int = "cuda", families: Iterable[Family] | None = None,
              use_cache: bool = True) -> dict[str, Any]:
    """Check the Triton kernels on `device` against the reference; returns a report dict:

    {"device": str, "key": str (cache key), "cache": path, "passed": bool (all families),
     "checks": {family name: {"op", "dtype", "head_dim", "variant", "passed", "max_rel_err", "tol", "shapes",
                              "error", "seconds", "cached"}},
     "ops": {op: bool (all its checked families passed)}}

    Families already in the cache (same GPU model, torch, triton, kernel sources) are not re-run unless
    use_cache=False; new results are written back."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    fams = list(default_families() if families is None else families)
    key = cache_key(device)
    cached = _load_cache().get(key, {}) if use_cache else {}
    checks, fresh = {}, {}
    for fam in fams:
        row = cached.get(fam.name)
        if row is None:
            row = fresh[fam.name] = check_family(fam, device)
        checks[fam.name] = dict(row, cached=fam.name not in fresh)
    if fresh:
        _save_cache(key, fresh)
    ops: dict[str, bool] = {}
    for row in checks.values():
        ops[row["op"]] = ops.get(row["op"], True) and bool(row["passed"])
    return {"device": device_name(device), "key": key, "cache": str(cache_path()),
            "passed": all(r["passed"] for r in checks.values()), "checks": checks, "ops": ops}


def failure_reason(row: dict[str, Any]) -> str:
    if row.get("error"):
        return row["error"]
    return f"max rel err {row['max_rel_err']:.3g} > tol {row['tol']:.3g} at shapes {row['shapes']}"


def main(argv: list[str] | None = None) -> int:
    """`python -m radjepa_kernels.check [--device cuda:0] [--no-cache]`: the report as JSON; exit 1 on a failure."""
    import argparse
    import sys
    ap = argparse.ArgumentParser(description="Numerical self-check of the Triton kernels on one device.")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-cache", action="store_true", help="re-run every check (and refresh the cache)")
    args = ap.parse_args(argv)
    report = selfcheck(args.device, use_cache=not args.no_cache)
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
