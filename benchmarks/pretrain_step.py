"""Throughput of one I-JEPA pretraining step (encoder + predictor + target forward, AdamW, EMA).

CPU: images/s. CUDA: images/s and model FLOPs utilisation (MFU) of ViT-B/14 at 224 px in bf16, with the eager and the
Triton kernels side by side. Model FLOPs are counted analytically from the actual mask sizes (matmuls and attention;
backward = 2 × forward; the target encoder and the context encoder's patch embedding are forward/partial only), so
MFU does not credit padding or recomputation. Data loading and mask sampling are excluded (masks are pre-drawn; the
collator's own rate is printed for reference).

    python benchmarks/pretrain_step.py                                   # CPU, vit_tiny at 112 px
    python benchmarks/pretrain_step.py --model vit_base --image-size 224 --batch-size 128 --kernels eager,triton \\
        --results benchmarks/RESULTS.md                                  # GPU: MFU, appended to RESULTS.md
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from NVIDIA's data sheets, matched on the device name in this
# order (the most specific first: "H100 PCIe" and "H100 NVL" are slower cards than the SXM "H100 80GB HBM3").
PEAK_BF16 = [("H200 NVL", 835e12), ("H200", 989e12), ("H100 NVL", 835e12), ("H100 PCIe", 756e12),
             ("H100", 989e12), ("H800 PCIe", 756e12), ("H800", 989e12), ("A100", 312e12), ("L40S", 362e12),
             ("A10", 125e12), ("RTX 4090", 165e12)]
BACKENDS = ("eager", "triton", "auto", "compile")   # compile = torch.compile of the model with the eager kernels


def peak_bf16(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU by its torch device name; None when the card is not in the table."""
    return next((v for k, v in PEAK_BF16 if k in device_name), None)


def loss_tolerance(cuda: bool) -> float:
    """Relative tolerance between backends' first-step losses: the kernels' own bound for the step's precision
    (bf16 autocast on CUDA, fp32 on CPU), from kernels/check.py so the two never drift apart."""
    import torch

    from radjepa_kernels.check import TOL
    return TOL[torch.bfloat16] if cuda else 100 * TOL[torch.float32]   # fp32: many ops' rounding accumulates


def ensure_kernels_importable() -> None:
    """On a machine where the package is not installed, map kernels/ to `radjepa_kernels` (as setuptools does)."""
    if importlib.util.find_spec("radjepa_kernels") is None:
        spec = importlib.util.spec_from_file_location("radjepa_kernels", ROOT / "kernels" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "kernels")])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["radjepa_kernels"] = mod
        spec.loader.exec_module(mod)


# ---------------------------------------------------------------------------------------------- FLOPs
def vit_forward_flops(tokens: float, dim: int, depth: int, mlp_ratio: float = 4.0, seqs: float = 1.0) -> float:
    """Forward FLOPs of `depth` transformer blocks over `seqs` sequences of `tokens` tokens (2 FLOPs per MAC):
    qkv + proj 4·D², MLP 2·r·D² per token, attention scores and weighted sum 2·T²·D per sequence, each × 2."""
    per_token = 2 * (4 * dim * dim + 2 * mlp_ratio * dim * dim)
    attention = 2 * 2 * tokens * tokens * dim
    return depth * seqs * (tokens * per_token + attention)


def jepa_step_flops(*, batch: int, n_patches: int, patch_dim: int, dim: int, depth: int, pred_dim: int,
                    pred_depth: int, n_ctx_masks: int, ctx_tokens: float, n_pred_masks: int, pred_tokens: float,
                    mlp_ratio: float = 4.0) -> dict[str, float]:
    """Model FLOPs of one training step on `batch` images (forward + backward where gradients flow)."""
    embed = 2 * n_patches * patch_dim * dim                                        # patch embedding, per image
    target = batch * (embed + vit_forward_flops(n_patches, dim, depth, mlp_ratio))  # no backward
    ctx_fwd = batch * n_ctx_masks * vit_forward_flops(ctx_tokens, dim, depth, mlp_ratio)
    context = 3 * ctx_fwd + 2 * batch * embed                                     # embed: fwd + weight grad
    rows = batch * n_ctx_masks * n_pred_masks
    pred_fwd = (rows * vit_forward_flops(ctx_tokens + pred_tokens, pred_dim, pred_depth, mlp_ratio)
                + batch * n_ctx_masks * 2 * ctx_tokens * dim * pred_dim     # embed: before the repeat per target
                + rows * 2 * pred_tokens * pred_dim * dim)
    predictor = 3 * pred_fwd
    return {"target": target, "context": context, "predictor": predictor, "total": target + context + predictor}


def mask_token_counts(masks_enc, masks_pred) -> tuple[float, float]:
    """Mean real (non-padding) tokens per context mask and per target mask."""
    return float((masks_enc >= 0).sum(-1).float().mean()), float((masks_pred >= 0).sum(-1).float().mean())


# ---------------------------------------------------------------------------------------------- timing
def bench_one(args, kernels: str) -> dict:
    import torch

    import radjepa_kernels
    from radjepa_cli.pretrain.masks import MaskConfig, MultiBlockMaskCollator
    from radjepa_cli.pretrain.train import PretrainConfig, build_model

    if kernels not in BACKENDS:
        raise ValueError(f"--kernels takes a comma list of {', '.join(BACKENDS)}, not {kernels!r}")
    radjepa_kernels.set_backend("eager" if kernels == "compile" else kernels)
    dev = torch.device(args.device)
    if dev.type == "cuda":   # each backend's peak alone: free the previous one's cache, then reset the counter
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    torch.manual_seed(0)
    cfg = PretrainConfig(shards="-", out="-", model=args.model, depth=args.depth, image_size=args.image_size,
                         patch_size=args.patch_size, pred_depth=args.pred_depth, pred_dim=args.pred_dim, steps=1)
    model = build_model(cfg).to(dev)
    forward = torch.compile(model) if kernels == "compile" else model
    opt = torch.optim.AdamW(model.param_groups(), lr=1e-4,
                            **({"fused": True} if dev.type == "cuda" else {"foreach": True}))
    grid = model.encoder.grid_size
    collator = MultiBlockMaskCollator(MaskConfig(min_keep=args.min_keep, variable_length=args.variable_length), grid)
    n_batches = 8
    masks = [collator.sample_masks(args.batch_size, i) for i in range(n_batches)]
    t0 = time.perf_counter()
    for i in range(50):
        collator.sample_masks(args.batch_size, 1000 + i)
    masks_per_s = 50 * args.batch_size / (time.perf_counter() - t0)
    g = torch.Generator(device="cpu").manual_seed(0)
    images = [torch.rand(args.batch_size, 1, args.image_size, args.image_size, generator=g).to(dev)
              for _ in range(2)]   # fresh data, never zeros
    masks = [(me.to(dev), mp.to(dev)) for me, mp in masks]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast(
        "cpu", enabled=False)

    losses = []

    def step(i: int) -> None:
        me, mp = masks[i % n_batches]
        with autocast:
            loss = forward((images[i % 2] - 0.5) / 0.25, me, mp)
        if not losses:   # the first step: same seed, weights and batch for every backend, so comparable
            losses.append(loss.detach().float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.update_target(0.996)

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    # torch.compile recompiles for each new mask length (then once more with dynamic shapes): warm it up on every
    # pre-drawn batch so no compile lands in the timed steps.
    for i in range(max(args.warmup, n_batches) if kernels == "compile" else args.warmup):
        step(i)
    sync()
    times = []
    for i in range(args.steps):
        t = time.perf_counter()
        step(i)
        sync()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    ctx_tok, pred_tok = zip(*[mask_token_counts(me, mp) for me, mp in masks])
    enc = model.encoder
    flops = jepa_step_flops(batch=args.batch_size, n_patches=grid[0] * grid[1], patch_dim=args.patch_size ** 2,
                            dim=enc.embed_dim, depth=len(enc.blocks), pred_dim=model.predictor.predictor_dim,
                            pred_depth=model.predictor.depth, n_ctx_masks=masks[0][0].shape[0],
                            ctx_tokens=statistics.mean(ctx_tok), n_pred_masks=masks[0][1].shape[0],
                            pred_tokens=statistics.mean(pred_tok))
    out = {"kernels": kernels, "loss_first_step": float(losses[0]), "step_s_median": med,
           "images_per_s": args.batch_size / med,
           "model_tflop_per_step": flops["total"] / 1e12, "achieved_tflops": flops["total"] / med / 1e12,
           "flops_split": {k: round(v / flops["total"], 3) for k, v in flops.items() if k != "total"},
           "masks_per_s": masks_per_s, "ctx_tokens": statistics.mean(ctx_tok), "pred_tokens": statistics.mean(pred_tok)}
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        peak = peak_bf16(name)
        out.update(device=name, peak_tflops=peak / 1e12 if peak else None,
                   mfu=flops["total"] / med / peak if peak else None,
                   max_memory_gib=torch.cuda.max_memory_allocated(dev) / 2 ** 30)
    else:
        out.update(device=f"cpu ({torch.get_num_threads()} threads)")
    return out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="default: vit_base on CUDA, vit_tiny on CPU")
    p.add_argument("--image-size", type=int, default=None, help="default: 224 on CUDA, 112 on CPU")
    p.add_argument("--patch-size", type=int, default=14)
    p.add_argument("--batch-size", type=int, default=None, help="default: 128 on CUDA, 16 on CPU")
    p.add_argument("--depth", type=int, default=None, help="encoder blocks (default: the preset's)")
    p.add_argument("--pred-depth", type=int, default=None)
    p.add_argument("--pred-dim", type=int, default=384)
    p.add_argument("--min-keep", type=int, default=None, help="default 10 (4 below a 12×12 patch grid)")
    p.add_argument("--variable-length", action="store_true")
    p.add_argument("--kernels", default=None, help="comma list of auto|triton|eager (default: eager,triton on "
                                                   "CUDA, eager on CPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 20 CUDA, 5 CPU)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--results", type=Path, default=None, help="append a row per result to this Markdown file")
    args = p.parse_args(argv)

    import torch
    ensure_kernels_importable()
    cuda = torch.cuda.is_available() if args.device is None else args.device.startswith("cuda")
    args.device = args.device or ("cuda" if cuda else "cpu")
    args.model = args.model or ("vit_base" if cuda else "vit_tiny")
    args.image_size = args.image_size or (224 if cuda else 112)
    args.batch_size = args.batch_size or (128 if cuda else 16)
    args.steps = args.steps or (20 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    grid = args.image_size // args.patch_size
    args.min_keep = args.min_keep if args.min_keep is not None else (10 if grid >= 12 else 4)
    if args.threads:
        torch.set_num_threads(args.threads)
    kernels = (args.kernels or ("eager,triton,compile" if cuda else "eager")).split(",")
    if cuda:
        from radjepa_cli.pretrain.launch import bind_cuda_device
        args.device = str(bind_cuda_device(args.device))   # Triton launches on the current device: make it ours

    results = []
    for k in kernels:
        r = {"model": args.model, "image_size": args.image_size, "patch_size": args.patch_size,
             "batch_size": args.batch_size}
        try:
            r.update(bench_one(args, k))
        except Exception as e:   # one backend's crash is a failed check; the others still run
            r.update(kernels=k, error=f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
                     failed=[f"{k}: crashed"])
            results.append(r)
            print(f"[{k}] FAILED: {r['error']}", flush=True)
            continue
        results.append(r)
        mfu = f"  MFU {100 * r['mfu']:.1f}% of {r['peak_tflops']:.0f} TFLOP/s" if r.get("mfu") else ""
        mem = f", peak {r['max_memory_gib']:.1f} GiB" if r.get("max_memory_gib") is not None else ""
        print(f"{args.model}/{args.patch_size} @ {args.image_size}px batch {args.batch_size} [{k}] on {r['device']}: "
              f"{r['images_per_s']:.1f} img/s, {r['achieved_tflops']:.2f} model TFLOP/s{mfu}{mem}; "
              f"first loss {r['loss_first_step']:.5f}; collator {r['masks_per_s']:.0f} masks/s", flush=True)
    compare_losses(results, loss_tolerance(cuda))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    if args.results:
        date = datetime.date.today().isoformat()
        with args.results.open("a") as f:
            for r in (r for r in results if "error" not in r):
                mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "-"
                f.write(f"| {date} | {r['device']} | pretrain step {r['model']}/{r['patch_size']} {r['image_size']}px "
                        f"b{r['batch_size']} | {r['kernels']} | {r['images_per_s']:.1f} img/s | "
                        f"{r['achieved_tflops']:.1f} TFLOP/s | MFU {mfu} |\n")
    return results


def compare_losses(results: list[dict], tol: float) -> None:
    """Mark each backend's first-step loss against the first backend's (eager when listed first): a fused kernel
    that trains a different model fails here even when it is fast. Non-finite losses fail too."""
    import math

    import torch

    from radjepa_kernels.check import rel_err
    ok_rows = [r for r in results if "error" not in r]
    ref = ok_rows[0] if ok_rows else None
    for r in ok_rows:
        r.setdefault("failed", [])
        loss = r["loss_first_step"]
        if not math.isfinite(loss):
            r["failed"].append(f"{r['kernels']}: non-finite loss {loss}")
            continue
        err = rel_err(torch.tensor(loss, dtype=torch.float64),
                      torch.tensor(ref["loss_first_step"], dtype=torch.float64))
        r.update(loss_ref=ref["kernels"], loss_rel_err=err, loss_tol=tol)
        if err > tol:
            r["failed"].append(f"{r['kernels']}: first-step loss {loss:.6f} vs {ref['kernels']} "
                               f"{ref['loss_first_step']:.6f} (rel. err {err:.1e} > {tol:.0e})")
            print(f"[{r['kernels']}] FAILED: {r['failed'][-1]}", flush=True)


def failures(results: list[dict]) -> list[str]:
    return [f for r in results for f in r.get("failed", [])]


if __name__ == "__main__":
    sys.exit(1 if failures(main()) else 0)
