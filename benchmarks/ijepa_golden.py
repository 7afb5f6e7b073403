"""Golden fixtures from the official I-JEPA code, for tests/test_ijepa_golden.py (not run by CI or the tests).

The official code (facebookresearch/ijepa, commit 52c1ae9) is CC BY-NC 4.0: it must never enter this repository.
Only numbers produced by running it are stored here. To regenerate the fixtures:

    git clone https://github.com/facebookresearch/ijepa /tmp/ijepa        # or extract a snapshot of it there
    git -C /tmp/ijepa checkout 52c1ae9
    .venv/bin/python benchmarks/ijepa_golden.py --official /tmp/ijepa --out tests/fixtures/ijepa_golden

The script puts --official on sys.path, imports its `src.*` modules and drives them unmodified; everything it needs
beyond torch/numpy/pyyaml is replaced from outside (single process instead of SLURM/DDP, an in-memory batch list
instead of ImageNet, CPU instead of CUDA timers). It runs on CPU in fp64 and writes:

  train_nenc{1,2}.safetensors/.json  `src.train.main` itself for 3 optimizer steps (1 epoch of 3 batches) on a tiny
        config: 2-block ViT (width 12, 2 heads), 112 px / patch 14, predictor depth 2 (width 8), batch 4, 4 targets,
        one or two context blocks, smooth-L1, official init, MaskCollator, AdamW param groups, schedulers and EMA.
        Stored: the initial weights, the images (uint8, normalised as (u/255 − 0.5)/0.25 in fp64), the masks, and
        per step the loss, every gradient, the parameters after the update and the target encoder after the EMA.
  official_checkpoint.pth.tar       the checkpoint `main` saved for nenc=1 (official format: `module.` keys,
        4 AdamW param groups), cast to fp32 to stay small: the input of the `--init-from` conversion test.
  schedules.json      the official LR / WD schedulers and momentum generator over 40 steps (warmup 6).
  init_stds.json      std of every Linear / the patch conv after `helper.init_model` (width 192, 4 + 4 blocks).
  collator_stats.json the official MaskCollator at 224 px / patch 14 (16x16 grid), defaults of its ViT-H config:
        block sizes over 10^5 draws, target corners over 400 batches of 64, context length after truncation.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import json
import sys
import tempfile
from collections import Counter
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

GRID_PX, PATCH, WIDTH, HEADS, PRED_WIDTH, DEPTH, BATCH, STEPS = 112, 14, 12, 2, 8, 2, 4, 3


class _SingleProcessDDP(nn.Module):
    """Stands in for DistributedDataParallel: same `module.` key prefix, no process group."""
    instances: list[nn.Module] = []

    def __init__(self, module, **_):
        super().__init__()
        self.module = module
        _SingleProcessDDP.instances.append(module)

    def forward(self, *a, **kw):
        return self.module(*a, **kw)


class _Recorder:
    """What the wrappers see while `main` runs: losses, and per optimizer step grads / params / groups."""

    def __init__(self):
        self.losses, self.steps, self.names, self.initial, self.targets = [], [], {}, {}, []

    def snapshot_target(self) -> None:
        target = _SingleProcessDDP.instances[2]          # wrapped third, after encoder and predictor
        self.targets.append({f"target_encoder.{n}": t.detach().clone() for n, t in target.state_dict().items()})


def _recording_adamw(rec: _Recorder):
    class RecordingAdamW(torch.optim.AdamW):
        @torch.no_grad()
        def step(self, closure=None):
            if rec.steps:                                 # the EMA of the previous step is done by now
                rec.snapshot_target()
            grads = {rec.names[id(p)]: p.grad.detach().clone() for g in self.param_groups for p in g["params"]
                     if p.grad is not None}
            groups = [{"lr": g["lr"], "weight_decay": g["weight_decay"], "n": len(g["params"])}
                      for g in self.param_groups]
            out = super().step(closure)
            params = {rec.names[id(p)]: p.detach().clone() for g in self.param_groups for p in g["params"]
                      if p.requires_grad}
            rec.steps.append({"grads": grads, "params": params, "groups": groups})
            return out
    return RecordingAdamW


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, GRID_PX, GRID_PX), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def normalise(u8: torch.Tensor) -> torch.Tensor:
    """The model input of the fixture (the test applies the same expression)."""
    return (u8.double() / 255 - 0.5) / 0.25


def run_official_training(src_train, helper, vit, n_enc: int, enc_scale, folder: Path) -> dict:
    """`src.train.main` for one epoch of 3 batches of 4 images; returns what the recorder saw."""
    rec = _Recorder()
    vit.vit_golden = partial(vit.VisionTransformer, in_chans=1, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS,
                             mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
    official_init = helper.init_model

    def init_model_fp64(**kw):
        enc, pred = official_init(**kw)
        enc, pred = enc.double(), pred.double()
        rec.names.update({id(p): f"encoder.{n}" for n, p in enc.named_parameters()})
        rec.names.update({id(p): f"predictor.{n}" for n, p in pred.named_parameters()})
        rec.initial = {f"encoder.{n}": t.clone() for n, t in enc.state_dict().items()}
        rec.initial.update({f"predictor.{n}": t.clone() for n, t in pred.state_dict().items()})
        return enc, pred

    u8 = _images(STEPS * BATCH)
    rec.images = u8
    rec.masks = []

    def fake_imagenet(transform, batch_size, collator, **_):
        batches = []
        for s in range(STEPS):
            samples = [(normalise(u8[s * BATCH + i]), 0) for i in range(batch_size)]
            udata, m_enc, m_pred = collator(samples)
            rec.masks.append((torch.stack(list(m_enc)), torch.stack(list(m_pred))))
            batches.append((udata, m_enc, m_pred))
        sampler = type("Sampler", (), {"set_epoch": lambda self, e: None})()
        return None, batches, sampler

    class RecordingAllReduce:
        @staticmethod
        def apply(x):
            rec.losses.append(x.detach().clone())
            return x

    _SingleProcessDDP.instances = []
    patches = {"init_distributed": lambda: (1, 0), "DistributedDataParallel": _SingleProcessDDP,
               "make_imagenet1k": fake_imagenet, "init_model": init_model_fp64, "AllReduce": RecordingAllReduce}
    saved = {k: getattr(src_train, k) for k in patches}
    saved_adamw, saved_mem = torch.optim.AdamW, torch.cuda.max_memory_allocated
    try:
        for k, v in patches.items():
            setattr(src_train, k, v)
        torch.optim.AdamW = _recording_adamw(rec)
        torch.cuda.max_memory_allocated = lambda *a, **k: 0
        torch.manual_seed(0)
        src_train.main(_official_args(folder, n_enc, enc_scale))
    finally:
        for k, v in saved.items():
            setattr(src_train, k, v)
        torch.optim.AdamW, torch.cuda.max_memory_allocated = saved_adamw, saved_mem
    rec.snapshot_target()
    return rec


def _official_args(folder: Path, n_enc: int, enc_scale) -> dict:
    return {
        "meta": {"use_bfloat16": False, "model_name": "vit_golden", "load_checkpoint": False,
                 "read_checkpoint": None, "copy_data": False, "pred_depth": DEPTH, "pred_emb_dim": PRED_WIDTH},
        "data": {"use_gaussian_blur": False, "use_horizontal_flip": False, "use_color_distortion": False,
                 "color_jitter_strength": 0.0, "batch_size": BATCH, "pin_mem": False, "num_workers": 0,
                 "root_path": "-", "image_folder": "-", "crop_size": GRID_PX, "crop_scale": [0.3, 1.0]},
        "mask": {"allow_overlap": False, "patch_size": PATCH, "num_enc_masks": n_enc, "min_keep": 4,
                 "enc_mask_scale": list(enc_scale), "num_pred_masks": 4, "pred_mask_scale": [0.15, 0.2],
                 "aspect_ratio": [0.75, 1.5]},
        # warmup 0.7 epochs of 3 iterations = int(2.1) = 2 warmup steps; T_max = 3.
        "optimization": {"ema": [0.996, 1.0], "ipe_scale": 1.0, "weight_decay": 0.04, "final_weight_decay": 0.4,
                         "epochs": 1, "warmup": 0.7, "start_lr": 0.0002, "lr": 0.001, "final_lr": 1e-06},
        "logging": {"folder": str(folder), "write_tag": "jepa"},
    }


def save_training(rec: _Recorder, out: Path, name: str, meta: dict) -> None:
    from safetensors.torch import save_file
    t = {f"initial/{k}": v for k, v in rec.initial.items()}
    t["images_u8"] = rec.images
    for s, (m_enc, m_pred) in enumerate(rec.masks):
        t[f"step{s}/masks_enc"], t[f"step{s}/masks_pred"] = m_enc.contiguous(), m_pred.contiguous()
        t[f"step{s}/loss"] = rec.losses[s].reshape(1)
        t.update({f"step{s}/grad/{k}": v for k, v in rec.steps[s]["grads"].items()})
        t.update({f"step{s}/param/{k}": v for k, v in rec.steps[s]["params"].items()})
        t.update({f"step{s}/target/{k}": v for k, v in rec.targets[s].items() if "pos_embed" not in k})
    t = {k: v.contiguous() for k, v in t.items()}
    save_file(t, str(out / f"{name}.safetensors"))
    groups = [st["groups"] for st in rec.steps]
    (out / f"{name}.json").write_text(json.dumps({**meta, "groups_per_step": groups,
                                                   "losses": [float(x) for x in rec.losses]}, indent=1))


def official_schedules(sched_mod, train_src: Path, total: int = 40, warmup: int = 6) -> dict:
    """The official LR/WD schedulers (stepped `total` times) and momentum generator (read `total` times)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)
    opt.param_groups[0]["weight_decay"] = 0.0
    lr = sched_mod.WarmupCosineSchedule(opt, warmup_steps=warmup, start_lr=2e-4, ref_lr=1e-3, final_lr=1e-6,
                                        T_max=total)
    wd = sched_mod.CosineWDSchedule(opt, ref_wd=0.04, final_wd=0.4, T_max=total)
    lrs, wds = [], []
    for _ in range(total):
        lrs.append(lr.step())
        wds.append(wd.step())
    # The momentum generator is an expression inside train.main: evaluate that expression from the file itself.
    tree = ast.parse(train_src.read_text())
    expr = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", None) == "momentum_scheduler")
    scope = {"range": range, "int": int, "ema": [0.996, 1.0], "ipe": total, "num_epochs": 1, "ipe_scale": 1.0}
    gen = eval(compile(ast.Expression(expr), str(train_src), "eval"), scope)
    moms = [next(gen) for _ in range(total)]
    return {"total_steps": total, "warmup_steps": warmup, "start_lr": 2e-4, "lr": 1e-3, "final_lr": 1e-6,
            "wd": 0.04, "final_wd": 0.4, "ema": [0.996, 1.0], "lr_per_update": lrs, "wd_per_update": wds,
            "momentum_per_update": moms}


def bulk_stats(w: torch.Tensor, cut: float = 0.2) -> dict:
    """Std of the weights within ±cut (10σ), their count, and the count outside. trunc_normal_ (official and torch
    alike) maps a uniform draw of exactly ±1 through erfinv to ±inf, clamped to the ±2 bound: one such value in a
    layer moves its plain std by ~10 standard errors, so the bulk and the outliers are compared separately."""
    w = w.detach().double().reshape(-1)
    inside = w.abs() <= cut
    return {"std": w[inside].std().item(), "numel": int(inside.sum()), "outliers": int((~inside).sum())}


def official_init_stds(helper, vit) -> dict:
    """Weight statistics of every Linear / the patch conv after `helper.init_model` (width 192, 4 + 4 blocks)."""
    vit.vit_init_probe = partial(vit.VisionTransformer, embed_dim=192, depth=4, num_heads=3, mlp_ratio=4,
                                 qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
    torch.manual_seed(0)
    enc, pred = helper.init_model(device="cpu", patch_size=16, model_name="vit_init_probe", crop_size=224,
                                  pred_depth=4, pred_emb_dim=192)
    stds = {}
    for part, m in (("encoder", enc), ("predictor", pred)):
        for n, mod in m.named_modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                stds[f"{part}.{n}"] = bulk_stats(mod.weight)
                stds[f"{part}.{n}"]["bias_abs_max"] = mod.bias.abs().max().item()
    return {"config": {"embed_dim": 192, "depth": 4, "num_heads": 3, "patch_size": 16, "img_size": 224,
                       "pred_depth": 4, "pred_dim": 192},
            "mask_token_std": pred.mask_token.std().item(), "stds": stds}


def corner_stats(masks: torch.Tensor, side: int) -> tuple[list, list, list, list]:
    """Per target mask [*, K] (whole h×w blocks, ascending indices): heights, widths, top rows, left columns.
    Corners are compared per block size: one size is shared by a whole batch, so only given the size are a
    batch's corners independent draws."""
    first, last = masks[:, 0], masks[:, -1]
    h, w = last // side - first // side + 1, last % side - first % side + 1
    return h.tolist(), w.tolist(), (first // side).tolist(), (first % side).tolist()


def official_collator_stats(multiblock, n_sizes: int = 100_000, n_batches: int = 400, batch: int = 64) -> dict:
    cfg = dict(input_size=(224, 224), patch_size=14, enc_mask_scale=(0.85, 1.0), pred_mask_scale=(0.15, 0.2),
               aspect_ratio=(0.75, 1.5), nenc=1, npred=4, min_keep=10, allow_overlap=False)
    col = multiblock.MaskCollator(**cfg)
    g = torch.Generator().manual_seed(1)
    tgt_sizes, ctx_sizes = Counter(), Counter()
    for _ in range(n_sizes):
        tgt_sizes[col._sample_block_size(g, col.pred_mask_scale, col.aspect_ratio)] += 1
        ctx_sizes[col._sample_block_size(g, col.enc_mask_scale, (1.0, 1.0))] += 1
    torch.manual_seed(2)
    rows, cols, ctx_len = Counter(), Counter(), Counter()
    for _ in range(n_batches):
        _, m_enc, m_pred = col([torch.zeros(1) for _ in range(batch)])
        pred = torch.stack(list(m_pred)).reshape(-1, m_pred[0].shape[-1])
        rows.update(f"{h}:{r}" for h, r in zip(*corner_stats(pred, 16)[::2]))
        cols.update(f"{w}:{c}" for w, c in zip(*corner_stats(pred, 16)[1::2]))
        ctx_len[int(m_enc[0].shape[-1])] += 1
    key = lambda c: {f"{k[0]}x{k[1]}" if isinstance(k, tuple) else str(k): v for k, v in sorted(c.items())}  # noqa
    return {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}, "grid": [16, 16],
            "batch": batch, "n_size_draws": n_sizes, "n_batches": n_batches,
            "target_size": key(tgt_sizes), "context_size": key(ctx_sizes), "target_height:top_row": key(rows),
            "target_width:left_col": key(cols), "context_len_after_truncation": key(ctx_len)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", required=True, type=Path, help="root of the official ijepa checkout (has src/)")
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/ijepa_golden"))
    args = ap.parse_args(argv)
    if not (args.official / "src" / "train.py").is_file():
        sys.exit(f"{args.official}: no src/train.py; point --official at the root of the ijepa checkout")
    sys.path.insert(0, str(args.official.resolve()))
    torch.set_default_dtype(torch.float32)
    import src.helper as helper
    import src.masks.multiblock as multiblock
    import src.models.vision_transformer as vit
    import src.train as src_train
    import src.utils.schedulers as sched_mod

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"official_commit": "52c1ae9", "img_size": GRID_PX, "patch_size": PATCH, "embed_dim": WIDTH,
            "num_heads": HEADS, "depth": DEPTH, "pred_depth": DEPTH, "pred_dim": PRED_WIDTH, "batch": BATCH,
            "steps": STEPS, "n_targets": 4, "min_keep": 4, "warmup_steps": 2, "total_steps": 3, "lr": 1e-3,
            "start_lr": 2e-4, "final_lr": 1e-6, "wd": 0.04, "final_wd": 0.4, "ema": [0.996, 1.0],
            "loss": "smooth_l1", "normalise": "(u8 / 255 - 0.5) / 0.25"}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        for n_enc, enc_scale in ((1, (0.85, 1.0)), (2, (0.4, 0.5))):
            folder = Path(tmp) / f"nenc{n_enc}"
            folder.mkdir()
            rec = run_official_training(src_train, helper, vit, n_enc, enc_scale, folder)
            save_training(rec, args.out, f"train_nenc{n_enc}", {**meta, "n_context": n_enc,
                                                                  "context_scale": list(enc_scale)})
            if n_enc == 1:
                # the official checkpoint holds only state dicts and numbers: the safe loader reads it
                ck = torch.load(folder / "jepa-latest.pth.tar", map_location="cpu", weights_only=True)
                ck = _to_fp32(ck)
                torch.save(ck, args.out / "official_checkpoint.pth.tar")
    (args.out / "schedules.json").write_text(json.dumps(official_schedules(sched_mod,
                                                                           args.official / "src" / "train.py")))
    (args.out / "init_stds.json").write_text(json.dumps(official_init_stds(helper, vit), indent=1))
    (args.out / "collator_stats.json").write_text(json.dumps(official_collator_stats(multiblock), indent=1))
    print(f"wrote {sorted(p.name for p in args.out.iterdir())} to {args.out}")


def _to_fp32(obj):
    if torch.is_tensor(obj):
        return obj.float() if obj.dtype == torch.float64 else obj
    if isinstance(obj, dict):
        return {k: _to_fp32(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_fp32(v) for v in obj]
    return obj


if __name__ == "__main__":
    main()
