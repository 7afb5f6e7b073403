"""Benchmark radjepa's Triton kernels against eager PyTorch: `python benchmarks/kernels.py [--out DIR]`.

One command: checks correctness on the device first (fp64 references), then times each kernel against
  (a) the I-JEPA-style eager code (per-parameter mul_().add_(); index repeat + gather + cat; materialised scores),
  (b) the best eager PyTorch (_foreach_lerp_; index_select; SDPA with each backend pinned; xformers if installed),
  (c) torch.compile of the eager code,
  (d) ours (radjepa_kernels).
Reports the median time (triton.testing.do_bench on CUDA, rotating input buffers, random data), the bytes each op
must move, achieved GB/s, % of the measured device copy bandwidth, and speed-ups. Sized to finish in under 5 minutes
on one H100. The whole pretraining step, eager vs fused kernels, is benchmarks/pretrain_step.py's job.

Without a GPU it runs on CPU at small shapes, timing the reference (our CPU path) against the eager baselines,
labelled CPU, so the script never rots. Needs only torch (+ triton on GPU); it imports the kernels from this
checkout even when the package is not installed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def _load_kernels():
    """`kernels/` of this checkout as `radjepa_kernels` (the installed copy, if any, is not used)."""
    spec = importlib.util.spec_from_file_location("radjepa_kernels", ROOT / "kernels" / "__init__.py",
                                                  submodule_search_locations=[str(ROOT / "kernels")])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["radjepa_kernels"] = mod
    spec.loader.exec_module(mod)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # radjepa_cli.pretrain.launch for --device cuda:N
    return mod


K = _load_kernels()
KCHECK = importlib.import_module("radjepa_kernels.check")   # tolerances and rel_err shared with the self-check
T0 = time.perf_counter()
BUDGET_S = 240.0  # set from --budget-s
RESULTS: list[dict] = []
CHECKS: list[dict] = []
BUDGET_CUT: list[str] = []   # shapes/parts the time budget left out: the run then exits 1 (its table is partial)
PARTS = ("check", "ema", "gather", "attn")   # in the order they run


# ----------------------------------------------------------------------------------------------------- timing
def bench_ms(fn, device: torch.device, budget_s: float = 0.25) -> float:
    """Median milliseconds of fn(); do_bench (cache flushed between runs) on CUDA, perf_counter on CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench
        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()
    times, start = [], time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < budget_s and len(times) < 200):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def rotating(sets: list, op):
    """fn() calling op on a different input set each time, so no call reads what the previous one cached."""
    state = {"i": 0}

    def fn():
        state["i"] += 1
        return op(*sets[state["i"] % len(sets)])
    return fn


def copy_bandwidth(device: torch.device) -> float:
    """Measured device copy bandwidth in GB/s (read + write of a buffer far larger than any cache)."""
    n = (1 << 28) if device.type == "cuda" else (1 << 24)  # 1 GiB / 64 MiB of fp32
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src), device)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def record(kernel: str, shape: str, impl: str, direction: str, fn, nbytes: float, device, note: str = ""):
    row = dict(kernel=kernel, shape=shape, impl=impl, direction=direction, bytes=nbytes, note=note)
    try:
        ms = bench_ms(fn, device)
        row.update(ms=ms, gbps=nbytes / (ms * 1e-3) / 1e9)
    except Exception as e:  # a baseline the device does not support (e.g. a pinned SDPA backend)
        row.update(ms=None, gbps=None, error=f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
    RESULTS.append(row)
    shown = f"{row['ms']:.4f} ms  {row['gbps']:8.1f} GB/s" if row.get("ms") else row["error"]
    print(f"  {kernel:9s} {direction:4s} {shape:34s} {impl:28s} {shown}", flush=True)
    return row


def compiled(fn, enabled: bool):
    """torch.compile baseline, unless disabled or half the time budget is gone (compiling is the slow part)."""
    if not enabled or time.perf_counter() - T0 > 0.5 * BUDGET_S:
        return None
    try:
        return torch.compile(fn, dynamic=False)
    except Exception:
        return None


rel_err = KCHECK.rel_err   # one definition of the error measure, shared with the self-check and the tests


def check(name: str, err: float, tol: float):
    ok = bool(err <= tol) and math.isfinite(err)
    CHECKS.append(dict(check=name, rel_err=err, tol=tol, ok=ok))
    print(f"  [{'ok' if ok else 'FAIL'}] {name:58s} rel.err {err:.2e} (tol {tol:.0e})", flush=True)


# ----------------------------------------------------------------------------------------------- correctness
def correctness(device: torch.device):
    """Our kernels against fp64 references on the device (the interpreter tests cannot see GPU codegen)."""
    print("correctness (ours vs fp64 reference):")
    interpret = os.environ.get("TRITON_INTERPRET") == "1"  # CPU + interpreter: checks the Triton path (slow)
    K.set_backend("triton" if device.type == "cuda" or interpret else "eager")
    g = torch.Generator(device="cpu").manual_seed(0)
    rnd = lambda *s, dtype=torch.float32: torch.randn(*s, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    tol = dict(KCHECK.TOL)
    if torch.get_float32_matmul_precision() != "highest":   # fp32 matmuls in TF32 (10-bit mantissa)
        tol[torch.float32] = max(tol[torch.float32], 2e-3)
    for dtype in (torch.float32, torch.bfloat16):
        x, pos = rnd(3, 50, 96, dtype=dtype).requires_grad_(), rnd(50, 96)
        idx = torch.stack([torch.randperm(50, generator=g)[:37] for _ in range(6)]).view(2, 3, 37)
        idx[1, 2, 30:] = -1
        idx = idx.to(device)
        out = K.gather_tokens(x, idx, pos)
        gout = rnd(*out.shape, dtype=dtype)
        (gx,) = torch.autograd.grad(out, x, gout)
        x64 = x.detach().double().requires_grad_()
        ref = K.reference.gather_tokens(x64, idx, pos.to(dtype).double())
        (rx,) = torch.autograd.grad(ref, x64, gout.double())
        check(f"gather fwd {dtype}", rel_err(out, ref), tol[dtype] if dtype != torch.float32 else 1e-6)
        check(f"gather bwd {dtype}", rel_err(gx, rx), tol[dtype] if dtype != torch.float32 else 1e-6)
        gx2 = torch.autograd.grad(K.gather_tokens(x, idx, pos), x, gout)[0]
        check(f"gather bwd {dtype} bitwise deterministic", float((gx2 != gx).sum()), 0.0)
    # Few (dtype, head dim, padding) combinations: each one compiles every autotune candidate on the GPU.
    for (B, H, N, d, dtype, pad) in [(3, 2, 77, 24, torch.float32, True), (4, 12, 200, 64, torch.bfloat16, True),
                                     (2, 6, 131, 32, torch.float16, False), (8, 12, 50, 32, torch.bfloat16, False),
                                     (2, 3, 1, 32, torch.bfloat16, False), (2, 12, 256, 64, torch.bfloat16, False)]:
        if interpret:  # ~0.5 ms per program: same lengths and head dims, fewer sequences
            B, H = min(B, 2), min(H, 2)
        q, k, v = [rnd(B, H, N, d, dtype=dtype).requires_grad_() for _ in range(3)]
        kpm = None
        if pad:
            kpm = (torch.rand(B, N, generator=g) > 0.2).to(device)
            kpm[:, 0] = True
        out = K.attention(q, k, v, kpm)
        gout = rnd(*out.shape, dtype=dtype)
        grads = torch.autograd.grad(out, (q, k, v), gout)
        ins = [t.detach().double().requires_grad_() for t in (q, k, v)]
        ref = K.reference.attention(*ins, kpm)
        rgrads = torch.autograd.grad(ref, ins, gout.double())
        name = f"attention B{B} H{H} N{N} d{d} {dtype}{' pad' if pad else ''}"
        check(name + " fwd", rel_err(out, ref), tol[dtype])
        for n, a, r in zip("qkv", grads, rgrads):
            check(f"{name} d{n}", rel_err(a, r) if r.norm() > 1e-6 else a.abs().max().item(), tol[dtype])
    lens = torch.tensor([0, 17, 1, 0, 200, 63])
    cu = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)]).to(device=device, dtype=torch.int32)
    q, k, v = [rnd(int(lens.sum()), 2 if interpret else 6, 32, dtype=torch.bfloat16).requires_grad_()
               for _ in range(3)]
    out = K.attention_varlen(q, k, v, cu, int(lens.max()))
    ins = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = K.reference.attention_varlen(*ins, cu)
    gout = rnd(*out.shape, dtype=torch.bfloat16)
    check("attention varlen bf16 fwd", rel_err(out, ref), tol[torch.bfloat16])
    for n, a, r in zip("qkv", torch.autograd.grad(out, (q, k, v), gout),
                       torch.autograd.grad(ref, ins, gout.double())):
        check(f"attention varlen bf16 d{n}", rel_err(a, r), tol[torch.bfloat16])
    for odt in (torch.float32, torch.bfloat16):
        tgt = [rnd(s) for s in [(768, 2304), (2304,), (1,), (4097,)]]
        onl = [rnd(*t.shape, dtype=odt) for t in tgt]
        want = [0.996 * t.double() + 0.004 * o.double() for t, o in zip(tgt, onl)]
        K.ema_update_(tgt, onl, 0.996)
        check(f"ema online {odt}", max(rel_err(t, w) for t, w in zip(tgt, want)), 1e-6)
    K.set_backend("auto")


# ---------------------------------------------------------------------------------------------------- kernels
def vit_param_shapes(model: str) -> list[tuple[int, ...]]:
    from radjepa_cli.models.vit import build_encoder
    with torch.device("meta"):
        enc = build_encoder(model)
    return [tuple(p.shape) for p in enc.parameters()]


def bench_ema(device, cpu: bool, use_compile: bool):
    model = "vit_tiny" if cpu else "vit_base"
    shapes = vit_param_shapes(model)
    n = sum(math.prod(s) for s in shapes)
    label = f"{model} {n / 1e6:.1f}M fp32"
    sets = [([torch.randn(s, device=device) for s in shapes], [torch.randn(s, device=device) for s in shapes])
            for _ in range(2)]
    nbytes = 12 * n  # read target + online, write target
    m = 0.9965

    def ijepa(t, o):  # ijepa/src/train.py: param_k.data.mul_(m).add_((1.-m) * param_q.detach().data)
        for pk, pq in zip(t, o):
            pk.mul_(m).add_((1.0 - m) * pq)

    print(f"EMA ({label}):")
    record("ema", label, "(a) I-JEPA per-param mul_.add_", "fwd", rotating(sets, ijepa), nbytes, device)
    record("ema", label, "(b) torch._foreach_lerp_", "fwd",
           rotating(sets, lambda t, o: torch._foreach_lerp_(t, o, 1.0 - m)), nbytes, device)
    cfn = compiled(ijepa, use_compile)
    if cfn is not None:
        record("ema", label, "(c) torch.compile(per-param)", "fwd", rotating(sets, cfn), nbytes, device)
    ours = "(d) ours: one launch" if not cpu else "(d) ours: CPU path (= _foreach_lerp_)"
    record("ema", label, ours, "fwd", rotating(sets, lambda t, o: K.ema_update_(t, o, m)), nbytes, device)


def bench_gather(device, cpu: bool, use_compile: bool):
    B, N, D = (8, 256, 192) if cpu else (128, 256, 768)
    dtype = torch.float32 if cpu else torch.bfloat16
    esz = torch.finfo(dtype).bits // 8
    for M, Kk in ((1, 192), (4, 48)):  # one 75% context mask; four target blocks
        label = f"B{B} N{N} D{D} {M}x{Kk} {str(dtype)[6:]} +pos"
        print(f"gather ({label}):")
        pos = torch.randn(N, D, device=device, dtype=dtype)

        def make():
            x = torch.randn(B, N, D, device=device, dtype=dtype, requires_grad=True)
            idx = torch.stack([torch.stack([torch.randperm(N, device=device)[:Kk].sort().values
                                            for _ in range(B)]) for _ in range(M)])
            return x, idx

        sets = [make() for _ in range(3)]

        def ijepa(x, idx):  # ijepa/src/masks/utils.py apply_masks, after x = x + pos_embed
            x = x + pos
            return torch.cat([torch.gather(x, 1, m.unsqueeze(-1).repeat(1, 1, D)) for m in idx], dim=0)

        def best_eager(x, idx):
            rows = (idx + torch.arange(B, device=device).view(1, B, 1) * N).reshape(-1)
            out = x.reshape(B * N, D).index_select(0, rows) + pos.index_select(0, idx.reshape(-1))
            return out.view(M * B, Kk, D)

        impls = [("(a) I-JEPA repeat+gather+cat", ijepa), ("(b) index_select", best_eager)]
        cfn = compiled(ijepa, use_compile)
        if cfn is not None:
            impls.append(("(c) torch.compile(I-JEPA)", cfn))
        ours = "(d) ours" if not cpu else "(d) ours: CPU path (reference)"
        impls.append((ours, lambda x, i: K.gather_tokens(x, i, pos)))
        fwd_bytes = 2 * M * B * Kk * D * esz
        bwd_bytes = M * B * Kk * D * esz + B * N * D * esz
        for name, fn in impls:
            record("gather", label, name, "fwd", rotating(sets, lambda x, i, f=fn: f(x.detach(), i)), fwd_bytes, device)
            outs = [(fn(x, i), torch.randn(M * B, Kk, D, device=device, dtype=dtype), x) for x, i in sets]
            record("gather", label, name, "bwd", rotating(
                outs, lambda o, g, x: torch.autograd.grad(o, x, g, retain_graph=True)), bwd_bytes, device)


def attention_shapes(cpu: bool) -> list[tuple[int, int, int, int, str]]:
    """(B, H, N, d, mode) in priority order (the time budget cuts from the end). Predictor shapes: B·masks 512,
    12 heads of 32 (ViT-B's 384-wide predictor) or 64, 3 heads of 128 (vit_tiny's); mode dense | kpm (key padding,
    what --variable-length pads to) | varlen (the same lengths packed, no padding compute)."""
    if cpu:
        return [(16, 3, 50, 32, "dense"), (16, 3, 50, 32, "kpm"), (16, 3, 50, 32, "varlen"),
                (16, 3, 50, 128, "dense"), (16, 3, 200, 64, "dense")]
    return [(512, 12, 200, 32, "dense"), (512, 12, 200, 32, "kpm"), (512, 12, 200, 32, "varlen"),
            (512, 12, 200, 64, "dense"), (512, 3, 200, 128, "dense"), (512, 3, 200, 128, "kpm"),
            (512, 3, 200, 128, "varlen"), (512, 12, 50, 32, "dense"), (512, 12, 100, 32, "dense"),
            (512, 12, 50, 64, "dense"), (512, 12, 100, 64, "dense")]


def bench_attention(device, cpu: bool, use_compile: bool, budget_s: float, shapes=None):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    dtype = torch.float32 if cpu else torch.bfloat16
    esz = torch.finfo(dtype).bits // 8
    shapes = shapes or attention_shapes(cpu)
    try:
        import xformers.ops as xops
    except Exception:
        xops = None

    def materialised(q, k, v, kpm=None):  # I-JEPA / timm pre-SDPA attention
        a = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        if kpm is not None:
            a = a.masked_fill(~kpm[:, None, None, :], float("-inf"))
        return a.softmax(dim=-1) @ v

    def pinned(backend, kpm=None):
        mask = None if kpm is None else kpm[:, None, None, :]   # bool, True = attend

        def fn(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return fn

    cmat = compiled(materialised, use_compile)
    g = torch.Generator(device="cpu").manual_seed(0)
    for i, (B, H, N, d, mode) in enumerate(shapes):
        if time.perf_counter() - T0 > budget_s:
            cut = [f"attn B{b} H{h} N{n} d{dd} {m}" for b, h, n, dd, m in shapes[i:]]
            BUDGET_CUT.extend(cut)
            print(f"  (time budget reached: {len(cut)} attention shapes skipped: {', '.join(cut)})")
            break
        label = f"B{B} H{H} N{N} d{d} {str(dtype)[6:]}{'' if mode == 'dense' else ' ' + mode}"
        print(f"attention ({label}):")
        kpm, lens = None, torch.full((B,), N)
        if mode != "dense":   # lengths as --variable-length makes them: between half and all of N
            lens = torch.randint(N // 2, N + 1, (B,), generator=g)
            lens[0] = N
            kpm = (torch.arange(N)[None, :] < lens[:, None]).to(device)
        sets = [[torch.randn(B, H, N, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]
                for _ in range(2)]
        impls = [("(a) materialised scores", lambda q, k, v, m=kpm: materialised(q, k, v, m), sets)]
        for be in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                   SDPBackend.MATH):
            impls.append((f"(b) SDPA {be.name.lower()}", pinned(be, kpm), sets))
        if xops is not None and not cpu and mode == "dense":
            impls.append(("(b) xformers", lambda q, k, v: xops.memory_efficient_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2), sets))
        if cmat is not None:
            impls.append(("(c) torch.compile(materialised)", lambda q, k, v, m=kpm: cmat(q, k, v, m), sets))
        ours = "(d) ours" if not cpu else "(d) ours: CPU path (SDPA)"
        if mode == "varlen":
            cu = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)]).to(device=device, dtype=torch.int32)
            total, max_len = int(lens.sum()), int(lens.max())
            packed = [[torch.randn(total, H, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]
                      for _ in range(2)]
            impls.append((ours + " varlen (packed)",
                          lambda q, k, v: K.attention_varlen(q, k, v, cu, max_len), packed))
        else:
            impls.append((ours, lambda q, k, v, m=kpm: K.attention(q, k, v, m), sets))
        x = int(lens.sum()) * H * d * esz   # bytes of one real q/k/v/o: padding is not useful work
        for name, fn, ins in impls:
            row = record("attn", label, name, "fwd", rotating(ins, lambda q, k, v, f=fn: f(
                q.detach(), k.detach(), v.detach())), 4 * x, device)
            if row.get("ms") is None:
                continue
            try:
                outs = [(fn(*s), torch.randn_like(fn(*s)), s) for s in ins]
            except Exception as e:
                RESULTS.append(dict(kernel="attn", shape=label, impl=name, direction="bwd", ms=None,
                                    error=f"{type(e).__name__}: {e}"[:160]))
                continue
            record("attn", label, name, "bwd", rotating(outs, lambda o, gr, s: torch.autograd.grad(
                o, s, gr, retain_graph=True)), 8 * x, device)
            del outs


# ----------------------------------------------------------------------------------------------------- report
def speedups():
    """Per (kernel, shape, direction): speed-up of ours over every other impl."""
    for r in RESULTS:
        if r.get("ms") is None:
            continue
        ours = [o for o in RESULTS if (o["kernel"], o["shape"], o["direction"]) == (r["kernel"], r["shape"],
                r["direction"]) and o["impl"].startswith("(d)") and o.get("ms")]
        if ours:
            r["ours_speedup"] = r["ms"] / ours[0]["ms"]


def markdown(meta: dict) -> str:
    load = f"; load average {meta['loadavg']:.1f}" if meta.get("loadavg") is not None else ""
    lines = [f"Device: {meta['device']} ({meta['label']}); torch {meta['torch']}, triton {meta['triton']}; "
             f"{meta['date']}; copy bandwidth {meta['copy_gbps']:.0f} GB/s{load}.", "",
             "| kernel | shape | dir | impl | median ms | GB/s | % copy BW | ours × faster |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for r in RESULTS:
        ms = f"{r['ms']:.4f}" if r.get("ms") else f"n/a ({r.get('error', '')[:60]})"
        gb = f"{r['gbps']:.0f}" if r.get("gbps") else ""
        pct = f"{100 * r['gbps'] / meta['copy_gbps']:.0f}%" if r.get("gbps") else ""
        sp = f"{r['ours_speedup']:.2f}" if r.get("ours_speedup") and not r["impl"].startswith("(d)") else ""
        lines.append(f"| {r['kernel']} | {r['shape']} | {r['direction']} | {r['impl']} | {ms} | {gb} | {pct} | {sp} |")
    lines += ["", "Correctness on the device (ours vs fp64 reference):", "", "| check | rel. err | tol | ok |",
              "|---|---:|---:|---|"]
    lines += [f"| {c['check']} | {c['rel_err']:.2e} | {c['tol']:.0e} | {'yes' if c['ok'] else 'NO'} |" for c in CHECKS]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="write kernels.json + kernels.md here")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                    help="time torch.compile baselines (auto: on for CUDA, off on CPU where compiling is slow)")
    ap.add_argument("--skip", default="", help=f"comma list of parts to skip: {','.join(PARTS)}")
    ap.add_argument("--budget-s", type=float, default=250.0, help="stop starting new parts after this many seconds")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (default 1: on a busy shared machine each OpenMP wake-up can cost ~10 ms)")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if "step" in skip:   # this script timed the step once; a stale command line learns where it went
        ap.error("--skip step: kernels.py has no step part; the pretraining step is benchmarks/pretrain_step.py")
    if skip - set(PARTS):   # a misspelt part would otherwise run silently
        ap.error(f"--skip takes parts of {','.join(PARTS)}, not {','.join(sorted(skip - set(PARTS)))}")
    global BUDGET_S
    BUDGET_S = args.budget_s
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    if not cpu:   # Triton launches, do_bench's events and synchronize() act on the current device
        from radjepa_cli.pretrain.launch import bind_cuda_device
        device = bind_cuda_device(args.device)
    use_compile = args.compile == "on" or (args.compile == "auto" and not cpu)
    if cpu:
        torch.set_num_threads(max(1, min(args.threads, os.cpu_count() or 1)))
    try:
        import triton
        triton_version = triton.__version__
    except Exception:
        triton_version = "not installed"
    name = torch.cuda.get_device_name(device) if not cpu else (platform.processor() or platform.machine())
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    label = "GPU" if not cpu else (f"CPU, {torch.get_num_threads()} threads, timings of the reference path; "
                                   f"correctness {'via the Triton interpreter' if interp else 'of the reference'}")
    print(f"{name} | {label} | torch {torch.__version__} | triton {triton_version}", flush=True)
    meta = dict(device=name, label=label, torch=torch.__version__, triton=triton_version,
                date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                tf32=torch.get_float32_matmul_precision(),
                loadavg=os.getloadavg()[0] if hasattr(os, "getloadavg") else None)
    meta["copy_gbps"] = copy_bandwidth(device)
    print(f"copy bandwidth: {meta['copy_gbps']:.0f} GB/s", flush=True)
    parts = [("check", lambda: correctness(device)), ("ema", lambda: bench_ema(device, cpu, use_compile)),
             ("gather", lambda: bench_gather(device, cpu, use_compile)),
             ("attn", lambda: bench_attention(device, cpu, use_compile, args.budget_s))]
    assert tuple(p for p, _ in parts) == PARTS
    failed = []
    for part, fn in parts:
        if part in skip:
            continue
        try:
            fn()
        except Exception:
            failed.append(part)
            traceback.print_exc()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    speedups()
    meta["elapsed_s"] = time.perf_counter() - T0
    meta["failed_parts"] = failed
    meta["budget_cut"] = BUDGET_CUT
    bad = [c for c in CHECKS if not c["ok"]]
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out / "kernels.json", json.dumps(dict(meta=meta, checks=CHECKS, results=RESULTS),
                                                           indent=1))
        write_atomic(args.out / "kernels.md", markdown(meta))
        print(f"wrote {args.out / 'kernels.json'} and {args.out / 'kernels.md'}")
    print(f"done in {meta['elapsed_s']:.0f} s; {len(bad)} failed correctness checks; failed parts: {failed or 'none'}"
          f"; cut by the time budget: {', '.join(BUDGET_CUT) or 'nothing'}")
    return 1 if bad or failed or BUDGET_CUT else 0


if __name__ == "__main__":
    sys.exit(main())
