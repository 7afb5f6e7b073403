"""Supervised reference for the pretraining acceptance check: the SAME encoder architecture as a pretrain run, trained
WITH the labels (average pool → linear head, masked BCE) for the same wall-clock budget, then read out exactly like
`pretrain_probe_sklearn.py` (z-scored average-pooled features, per-label logistic regression, macro AUPRC on test).

If a supervised model of this size cannot beat the raw-pixel baseline in the budget, a self-supervised one cannot be
expected to either; the number says how much of the pixel gap is the architecture/budget and how much the objective.

    python benchmarks/supervised_ceiling.py SHARDS RUN --seconds 600 --lr 1e-4 [--threads 2] [--out result.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pretrain_probe_sklearn import macro_auprc


@torch.no_grad()
def pooled_features(encoder, shards: str, split: str, names, limit: int | None):
    """(features, labels, known) of a split through the project's own feature path (OursEncoder + compute_features,
    eval transform, mean-pooled tokens) — the same read-out `pretrain_probe_sklearn.py` gives a pretrained run."""
    from radjepa_cli.downstream.probe import label_matrix
    from radjepa_cli.models.features import FeatureSpec, compute_features
    from radjepa_cli.models.zoo import OursEncoder
    frozen = OursEncoder("supervised", encoder.eval())
    fs = compute_features(frozen, shards, split, FeatureSpec(image_size=frozen.image_size), progress=False)
    y, known = label_matrix(fs.meta[:limit], names, "mask")
    return fs.pooled.float()[:limit].numpy(), y.numpy(), known.numpy().astype(bool)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shards")
    p.add_argument("run", help="pretrain run dir whose config.json gives the architecture")
    p.add_argument("--seconds", type=float, default=600.0, help="training wall-clock budget")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-train-probe", type=int, default=None, help="train images for the read-out (default all)")
    p.add_argument("--labels", default="phantom")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    from radjepa_cli.data.labels import resolve_label_set
    from radjepa_cli.data.loader import make_loader
    from radjepa_cli.io import read_json
    from radjepa_cli.models.vit import DEFAULT_MEAN, DEFAULT_STD, build_encoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = read_json(Path(args.run) / "config.json")
    arch = {k: cfg[k] for k in ("depth", "embed_dim", "num_heads") if cfg.get(k) is not None}
    enc = build_encoder(cfg["model"], img_size=cfg["image_size"], patch_size=cfg["patch_size"], in_chans=1, **arch)
    names = resolve_label_set(args.labels)
    head = torch.nn.Linear(enc.embed_dim, len(names))
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=args.lr, weight_decay=0.05)
    t0, epoch, seen, loss = time.time(), 0, 0, torch.tensor(float("nan"))
    while time.time() - t0 < args.seconds:
        enc.train()
        for b in make_loader(args.shards, split="train", batch_size=args.batch_size, image_size=cfg["image_size"],
                             train=True, label_names=names, epoch=epoch, num_workers=1, drop_last=True):
            logits = head(enc.forward_features((b["image"] - DEFAULT_MEAN) / DEFAULT_STD).mean(1))
            known = b["label_known"].float()
            loss = (F.binary_cross_entropy_with_logits(logits, b["labels"], reduction="none") * known).sum() \
                / known.sum().clamp(min=1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(b["image"])
            if time.time() - t0 >= args.seconds:
                break
        epoch += 1
        print(f"epoch {epoch}: loss {loss.item():.4f}, {seen} images, {time.time() - t0:.0f} s", flush=True)
    train_s = time.time() - t0
    tr = pooled_features(enc, args.shards, "train", names, args.n_train_probe)
    te = pooled_features(enc, args.shards, "test", names, None)
    auprc, per = macro_auprc(*tr, *te)
    result = {"macro_auprc": auprc, "per_label": {names[j]: v for j, v in per.items()}, "train_seconds": train_s,
              "images_seen": seen, "epochs": epoch, "lr": args.lr, "threads": args.threads,
              "architecture": {"model": cfg["model"], "image_size": cfg["image_size"],
                               "patch_size": cfg["patch_size"], **arch}}
    print(json.dumps({k: v for k, v in result.items() if k != "per_label"}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
