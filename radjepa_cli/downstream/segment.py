"""Semantic segmentation on a frozen encoder (the paper's Section 10.2 / Table 7).

Frozen encoder → decoder (linear / ViTDet / UPerNet, see decoders.py) → one sigmoid channel per structure;
loss = BCE + soft Dice over the structures each image has masks for; Adam (paper: 5e-4) with a cosine schedule;
the epoch with the lowest validation loss is kept (the paper's checkpoint selection) when the shards have a `val`
split; Dice per structure on `test`, as mean ± SD over seeds. Without `augment` the frozen block features are
computed once (eval transform, deterministic) and cached; with `augment` the training images get the paper's
augmentations (affine, elastic, brightness/contrast, gamma; flips only for ribs, with L/R channels swapped) and
their features are recomputed every epoch. Every seed's decoder is saved with a model.json for `radjepa predict`
(downstream/saved.py); the best seed is the one with the highest mean Dice on `val`.

Dice of a structure = mean over test images whose ground truth contains it of 2|P∩G| / (|P| + |G|), P = sigmoid > 0.5
(the one Dice, with its empty-mask rule, is metrics/dice.py).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from radjepa_cli.data.labels import SEG_TASKS
from radjepa_cli.downstream.common import best_seed, cosine_lr, has_split, split_features, start_run, write_model
from radjepa_cli.downstream.saved import save_head
from radjepa_cli.metrics.dice import dice_per_structure


@dataclasses.dataclass
class SegmentConfig:
    shards: str
    encoder: str
    out: str
    decoder: str = "upernet"
    task: str = "lungs"
    seeds: int = 3
    epochs: int = 100  # paper: 100
    lr: float = 5e-4  # paper: Adam 5e-4, cosine
    batch_size: int = 16
    layers: tuple[int, ...] | None = None  # UPerNet blocks; None = 3,5,7,11 of 12 scaled to the depth
    channels: int = 256  # decoder width (ViTDet / UPerNet)
    augment: bool = False
    image_size: int | None = None  # loader / mask resolution; None = the encoder's input size
    train_split: str = "train"
    val_split: str | None = "val"  # checkpoint selection; None or an empty split = keep the last epoch
    eval_split: str = "test"
    feature_batch_size: int = 32
    cache_dir: str | None = None
    use_cache: bool = True
    trust_remote_code: bool = False
    device: str = "auto"
    overlays: int = 4  # test images drawn in overlays.png
    progress: bool = True


def seg_loss(logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """BCE + (1 - soft Dice), both averaged over the (image, structure) pairs that have a mask."""
    w = known.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(2, 3))
    p = torch.sigmoid(logits)
    inter, denom = (p * target).sum(dim=(2, 3)), (p + target).sum(dim=(2, 3))
    dice = 1 - (2 * inter + 1) / (denom + 1)
    return ((bce + dice) * w).sum() / w.sum().clamp_min(1)


@torch.no_grad()
def predict(decoder: nn.Module, feats: list[torch.Tensor], size: tuple[int, int], device, batch: int = 32):
    decoder.eval()
    outs = [decoder([f[i:i + batch].to(device).float() for f in feats], size).cpu()
            for i in range(0, len(feats[0]), batch)]
    return torch.cat(outs)


def _eval_loss(decoder, feats, masks, known, device, batch: int = 32) -> float:
    logits = predict(decoder, feats, masks.shape[-2:], device, batch)
    return float(seg_loss(logits, masks.float(), known))


def train_decoder(cfg: SegmentConfig, seed: int, in_dim: int, n_struct: int, train, val, device,
                  epoch_features=None) -> tuple[nn.Module, list[dict]]:
    """train / val: (feats list [N, D, h, w], masks [N, M, S, S] uint8, known [N, M]) or None.
    epoch_features(epoch, generator) → train tuple (augment mode)."""
    from radjepa_cli.downstream.decoders import build_decoder
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    decoder = build_decoder(cfg.decoder, in_dim, n_struct, cfg.channels).to(device)
    opt = torch.optim.Adam(decoder.parameters(), lr=cfg.lr)
    n = len(train[1])
    total, step = cfg.epochs * math.ceil(n / cfg.batch_size), 0
    best, best_loss, history = None, float("inf"), []
    for epoch in range(cfg.epochs):
        feats, masks, known = epoch_features(epoch, g) if epoch_features is not None else train
        decoder.train()
        order = torch.randperm(n, generator=g)
        running = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            if len(idx) < 2 and n > 1:  # BatchNorm needs two samples
                continue
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, total, cfg.lr)
            target = masks[idx].to(device).float()
            logits = decoder([f[idx].to(device).float() for f in feats], target.shape[-2:])
            loss = seg_loss(logits, target, known[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item() * len(idx)
            step += 1
        rec = {"epoch": epoch, "train_loss": running / n}
        if val is not None:
            rec["val_loss"] = _eval_loss(decoder, *val, device)
            if rec["val_loss"] < best_loss:
                best_loss, best = rec["val_loss"], copy.deepcopy(decoder.state_dict())
        history.append(rec)
    if best is not None:
        decoder.load_state_dict(best)
    return decoder.eval(), history


def run_segment(cfg: SegmentConfig, console=None) -> dict:
    """Train and score the decoder for every seed; write results.json + overlays.png into cfg.out."""
    from radjepa_cli import config as config_mod
    from radjepa_cli.downstream.decoders import DECODERS, default_layers
    from radjepa_cli.io import write_json
    from radjepa_cli.models.features import FeatureSpec

    if cfg.task not in SEG_TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; choose one of {', '.join(SEG_TASKS)}")
    if cfg.decoder not in DECODERS:
        raise ValueError(f"unknown decoder {cfg.decoder!r}; choose one of {', '.join(DECODERS)}")
    out, device, encoder = start_run(cfg)
    structures = SEG_TASKS[cfg.task]
    if cfg.decoder == "upernet":
        layers = tuple(cfg.layers) if cfg.layers else default_layers(encoder.num_layers)
        if len(layers) != 4:
            raise ValueError(f"UPerNet takes 4 blocks, got --layers {','.join(map(str, layers))}")
    else:
        layers = (encoder.num_layers - 1,)  # linear and ViTDet read the last block
    cfg.layers = layers
    size = cfg.image_size or encoder.image_size
    spec = FeatureSpec(image_size=size, layers=layers, mask_names=tuple(structures))

    def split_data(split):
        fs = split_features(cfg, encoder, split, spec)
        return fs, (fs.layers(layers), fs.tensors["masks"], fs.tensors["mask_known"])

    t0 = time.perf_counter()
    train_fs, train = split_data(cfg.train_split)
    test_fs, test = split_data(cfg.eval_split)
    val = _optional_split(cfg, split_data)
    feature_s = time.perf_counter() - t0
    if not train[2].any():
        raise ValueError(f"{cfg.shards}: no {cfg.train_split} image has masks for {cfg.task} "
                         f"({', '.join(structures)})")
    epoch_features = _augmented(encoder, cfg, spec, structures, device) if cfg.augment else None

    per_seed, saved, t1 = [], [], time.perf_counter()
    in_dim = train[0][0].shape[1]
    for seed in range(cfg.seeds):
        decoder, history = train_decoder(cfg, seed, in_dim, len(structures), train, val, device, epoch_features)
        pred = predict(decoder, test[0], test[1].shape[-2:], device) > 0  # sigmoid > 0.5
        per_seed.append({**seed_dice(seed, pred, test[1], test[2], structures),
                         "best_epoch": min(history, key=lambda h: h.get("val_loss", -h["epoch"]))["epoch"],
                         "final_train_loss": history[-1]["train_loss"]})
        # the best seed: highest mean Dice on val, else lowest final training loss
        score = (seed_dice(seed, predict(decoder, val[0], val[1].shape[-2:], device) > 0, val[1], val[2],
                           structures)["mean_dice"] if val else -history[-1]["train_loss"])
        saved.append({**save_head(out, seed, decoder), "val_score": score})
        if seed == 0 and cfg.overlays > 0:
            _overlays(cfg, out, size, pred, structures)
    fit_s = time.perf_counter() - t1

    evaluated, per_structure, (md_mean, md_std) = summarize_dice(per_seed, structures)
    if not evaluated:
        raise ValueError(f"no {cfg.eval_split} image of {cfg.shards} has a mask for any of {list(structures)}")
    results = {
        "kind": "segment", "encoder": cfg.encoder, "decoder": cfg.decoder, "task": cfg.task,
        "structures": evaluated, "per_structure": per_structure,
        "mean_dice": {"mean": md_mean, "std": md_std}, "per_seed": per_seed,
        "layers": list(layers), "n_train": len(train_fs), "n_val": len(val[1]) if val else 0, "n_test": len(test_fs),
        "encoder_info": {"name": encoder.name, "fingerprint": encoder.fingerprint, "embed_dim": encoder.embed_dim,
                         "image_size": encoder.image_size},
        "timing_s": {"features": round(feature_s, 3), "fit_and_score": round(fit_s, 3)},
        "config": config_mod.to_dict(cfg),
    }
    config_mod.save(cfg, out)
    write_json(out / "results.json", results)
    _write_segment_model(cfg, out, encoder, size, layers, structures, in_dim, saved, val is not None,
                         (len(train_fs), len(test_fs)))
    return results


def seed_dice(seed: int, pred: torch.Tensor, masks: torch.Tensor, known: torch.Tensor, structures) -> dict:
    """One seed's Dice per structure (metrics/dice.py's rule) and its mean over the structures that have one."""
    dice = dice_per_structure(pred, masks.bool(), known)
    valid = [d for d in dice if d is not None]
    return {"seed": seed, "dice": dict(zip(structures, dice)), "mean_dice": float(np.mean(valid)) if valid else None}


def summarize_dice(per_seed: list[dict], structures) -> tuple[list[str], dict, tuple]:
    """(evaluated structures, per-structure Dice mean ± SD over seeds, mean Dice (mean, SD)): what results.json
    reports (and what `predict` reports against shards with masks)."""
    evaluated = [s for s in structures if per_seed[0]["dice"][s] is not None]
    per_structure = {}
    for s in evaluated:
        m, sd = _mean_std([p["dice"][s] for p in per_seed])
        per_structure[s] = {"dice_mean": m, "dice_std": sd}
    return evaluated, per_structure, (_mean_std([p["mean_dice"] for p in per_seed]) if evaluated else (None, None))


def _write_segment_model(cfg: SegmentConfig, out: Path, encoder, size: int, layers, structures, in_dim: int,
                         saved: list[dict], has_val: bool, counts) -> None:
    """model.json, last of all: the decoders are usable by `radjepa predict` from here on."""
    write_model(cfg, out, encoder, "segment", size, {
        "head": {"kind": cfg.decoder, "config": {"in_dim": int(in_dim), "n_out": len(structures),
                                                 "channels": cfg.channels},
                 "features": "layers", "layers": list(layers)},
        "structures": list(structures), "seg_task": cfg.task,
        "thresholds": {s: {"threshold": 0.5, "rule": "sigmoid > 0.5 (the Dice protocol)"} for s in structures},
        "seeds": saved, "best_seed": best_seed(saved),
        "best_seed_by": f"mean Dice on the {cfg.val_split} split" if has_val else "lowest final training loss",
        "trained_on": {"shards": str(Path(cfg.shards).resolve()), "train_split": cfg.train_split,
                       "val_split": cfg.val_split if has_val else None, "eval_split": cfg.eval_split,
                       "n_train": counts[0], "n_test": counts[1]},
    })


def _mean_std(values) -> tuple[float, float]:
    """Mean and sample SD over seeds (a structure missing in one seed's test set is left out there)."""
    v = [x for x in values if x is not None]
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def _optional_split(cfg: SegmentConfig, split_data):
    if not has_split(cfg.shards, cfg.val_split):
        return None
    _, val = split_data(cfg.val_split)
    return val if val[2].any() else None


def _overlays(cfg: SegmentConfig, out: Path, size: int, pred: torch.Tensor, structures) -> None:
    from radjepa_cli.data.loader import make_loader
    from radjepa_cli.downstream.plots import seg_overlays
    k = min(cfg.overlays, len(pred))
    batch = next(iter(make_loader(cfg.shards, split=cfg.eval_split, batch_size=k, image_size=size,
                                  mask_names=structures, shuffle=False)))
    seg_overlays(out / "overlays.png", batch["image"][:, 0].numpy(), (batch["masks"] > 0.5).numpy(),
                 pred[:k].numpy(), structures, title=f"{cfg.encoder} + {cfg.decoder} — {cfg.task} (seed 0)")


def _augmented(encoder, cfg: SegmentConfig, spec, structures, device):
    """Augment mode: re-read, augment (masks alike) and re-encode the training images every epoch."""
    from radjepa_cli.data.loader import make_loader
    from radjepa_cli.downstream.augment import AugmentConfig, augment, lr_swap_permutation
    # Lungs and lung zones: no flips (the paper); ribs: flips with L/R relabelled, when every rib has a partner.
    perm = lr_swap_permutation(structures) if cfg.task == "ribs" else None
    aug = AugmentConfig.segment(hflip=perm is not None)

    def features(epoch: int, g: torch.Generator):
        loader = make_loader(cfg.shards, split=cfg.train_split, batch_size=cfg.feature_batch_size,
                             image_size=spec.image_size, mask_names=structures, shuffle=False)
        feats, masks, known = [], [], []
        for batch in loader:
            images, m, flipped = augment(batch["image"].to(device), batch["masks"].to(device), aug, g, perm)
            k = batch["mask_known"].clone()
            if flipped.any():
                k[flipped] = k[flipped][:, perm]  # a mirrored L3 is the R3 channel: its "annotated" flag too
            feats.append([f.float().cpu() for f in encoder.intermediate(images, spec.layers)])
            masks.append((m > 0.5).to(torch.uint8).cpu())
            known.append(k)
        return [torch.cat(parts) for parts in zip(*feats)], torch.cat(masks), torch.cat(known)
    return features
