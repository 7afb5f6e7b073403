"""Compile every Triton kernel for a GPU architecture without a GPU (`python -m radjepa_kernels.compile_check`).

The interpreter tests check numerics but not what only the GPU compiler sees (layouts, shared memory, dot shape and
dtype rules). This lowers each kernel variant the runtime can launch through TTIR → TTGIR → PTX → cubin with the
ptxas that ships with triton, and reports shared memory per variant: every head dim the model presets produce
(check.PRESET_HEAD_DIMS), every autotune config the runtime may try (`fused_attention.fits`), every dtype and
layout (dense / key padding / varlen). `--quick` (the test) compiles bf16 with key padding at every head dim, in
each kernel's biggest-tile config. Must run without TRITON_INTERPRET.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def _variants(quick: bool = False):
    import triton.language as tl

    from . import ema, fused_attention as fa, gather
    for dt in ("fp32", "bf16"):
        acc = tl.float32
        yield (f"gather_fwd[{dt}]", gather._gather_fwd_kernel,
               {"x_ptr": f"*{dt}", "pos_ptr": "*fp32", "idx_ptr": "*i64", "out_ptr": f"*{dt}"}, set(),
               dict(HAS_POS=True, ACC=acc, INTERPRET=False, BLOCK_R=4, BLOCK_D=1024))
        yield (f"gather_bwd[{dt}]", gather._gather_bwd_kernel,
               {"g_ptr": f"*{dt}", "order_ptr": "*i64", "start_ptr": "*i64", "gx_ptr": f"*{dt}"}, set(),
               dict(ACC=acc, INTERPRET=False, BLOCK_D=1024))
        yield (f"ema[{dt}]", ema._ema_kernel,
               {"tgt_tab": "*i64", "onl_tab": "*i64", "numel_tab": "*i64", "blk_tensor": "*i32", "blk_start": "*i64"},
               {"weight"}, dict(ONLINE={"fp32": tl.float32, "bf16": tl.bfloat16}[dt], ALIGNED=True, BLOCK=ema.BLOCK))
    from .check import PRESET_HEAD_DIMS
    for dt in ("bf16",) if quick else ("bf16", "fp16", "fp32"):
        for hd in PRESET_HEAD_DIMS:
            for layout in ("kpm",) if quick else ("dense", "kpm", "varlen"):
                varlen = layout == "varlen"
                base = dict(HEAD_DIM=hd, BLOCK_D=fa._head_block(hd), VARLEN=varlen, HAS_KPM=layout == "kpm",
                            UPCAST=False, PREC="ieee" if dt == "fp32" else "tf32")
                ptrs = {n: f"*{dt}" for n in ("Q", "K", "V", "O", "DO", "DK", "DV", "DQ")}
                ptrs.update(LSE="*fp32", DELTA="*fp32", KPM="*u8", CU="*i32")
                for unused in ("KPM",) * (layout != "kpm") + ("CU",) * (not varlen):
                    base[unused] = None
                tag = f"{dt},d{hd},{layout}"
                for name, fn in (("attn_fwd", fa._attn_fwd), ("attn_dkdv", fa._attn_bwd_dkdv),
                                 ("attn_dq", fa._attn_bwd_dq)):
                    tuned = fa.GPU_CONFIGS[name[5:]]
                    # quick: the config with the biggest tiles (most shared memory / registers) of each kernel
                    nbytes = {"fp32": 4, "fp16": 2, "bf16": 2}[dt]
                    runnable = [c for c in tuned if fa.fits(c, base["BLOCK_D"], nbytes)]  # what autotune may try
                    cfgs = [max(runnable, key=_tile_area)] if quick else runnable
                    for cfg in cfgs:
                        consts = dict(base, **cfg.kwargs)
                        blk = f"{cfg.kwargs['BLOCK_M']}x{cfg.kwargs['BLOCK_N']}"
                        yield (f"{name}[{tag},{blk},w{cfg.num_warps}s{cfg.num_stages}]", fn, ptrs,
                               {"qk_scale", "sm_scale"}, consts, cfg.num_warps, cfg.num_stages)
            if not quick:
                yield (f"attn_bwd_pre[{dt},d{hd}]", fa._attn_bwd_pre, {"O": f"*{dt}", "DO": f"*{dt}",
                       "DELTA": "*fp32", "CU": "*i32"}, set(),
                       dict(HEAD_DIM=hd, BLOCK_D=fa._head_block(hd), VARLEN=False, BLOCK_M=64, CU=None), 4, 2)


def _tile_area(cfg) -> tuple[int, int]:
    return cfg.kwargs["BLOCK_M"] * cfg.kwargs["BLOCK_N"], cfg.num_stages


def compile_all(arch: int = 90, only: str | None = None, quick: bool = False) -> list[tuple[str, int, float]]:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("compile_check needs TRITON_INTERPRET unset (it lowers to PTX)")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    results = []
    for name, fn, ptrs, floats, consts, *launch in _variants(quick):
        if only and only not in name:
            continue
        sig = {a: "constexpr" if a in consts else ptrs.get(a) or ("fp32" if a in floats else "i32")
               for a in fn.arg_names}
        options = dict(zip(("num_warps", "num_stages"), launch)) if launch else {}
        t0 = time.perf_counter()
        c = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=GPUTarget("cuda", arch, 32),
                           options=options)
        if not c.asm.get("cubin"):
            raise RuntimeError(f"{name}: no cubin produced")
        results.append((name, int(c.metadata.shared), time.perf_counter() - t0))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability ×10 (90 = H100/H200)")
    ap.add_argument("--only", default=None, help="compile only variants whose name contains this")
    ap.add_argument("--quick", action="store_true",
                    help="bf16, key padding, each kernel's biggest-tile config, every head dim (tests)")
    args = ap.parse_args(argv)
    smem_limit = 227 * 1024 if args.arch >= 90 else 163 * 1024
    bad = 0
    for name, shared, secs in compile_all(args.arch, args.only, args.quick):
        flag = "" if shared <= smem_limit else "  <-- exceeds shared memory"
        bad += bool(flag)
        print(f"{name:60s} smem {shared / 1024:6.1f} KiB  {secs:5.1f}s{flag}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
