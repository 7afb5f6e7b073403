"""Pretraining acceptance check: effective rank of a run's target features, and a scikit-learn logistic-regression
probe (per label, z-scored pooled features, macro AUPRC over the test split) for the run's frozen target encoder next
to its random-init twin and the raw-pixel baseline.

    python benchmarks/pretrain_probe_sklearn.py SHARDS RUN [--cache-dir DIR] [--out results.json]

Features come from `radjepa_cli.models.features.extract_features` (the same cache as `radjepa probe`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def macro_auprc(x_tr, y_tr, k_tr, x_te, y_te, k_te, C: float = 1.0) -> tuple[float, dict[str, float]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_tr)
    a, b = scaler.transform(x_tr), scaler.transform(x_te)
    per = {}
    for j in range(y_tr.shape[1]):
        tr, te = k_tr[:, j], k_te[:, j]
        if len(np.unique(y_tr[tr, j])) < 2 or len(np.unique(y_te[te, j])) < 2:
            continue
        clf = LogisticRegression(C=C, max_iter=3000).fit(a[tr], y_tr[tr, j])
        per[j] = float(average_precision_score(y_te[te, j], clf.predict_proba(b[te])[:, 1]))
    return float(np.mean(list(per.values()))), per


@torch.no_grad()
def token_ranks(encoder, x: torch.Tensor) -> dict[str, float]:
    from radjepa_cli.pretrain.monitors import effective_rank
    out = encoder(x)
    t = out.patch_tokens.reshape(-1, out.patch_tokens.shape[-1]).float()
    return {"rankme_tokens": effective_rank(t), "erank_tokens_centered": effective_rank(t - t.mean(0)),
            "width": t.shape[-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shards")
    p.add_argument("run")
    p.add_argument("--labels", default="phantom")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--rank-images", type=int, default=256, help="val images for the effective rank")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    from radjepa_cli.data.labels import resolve_label_set
    from radjepa_cli.data.loader import make_loader
    from radjepa_cli.downstream.probe import label_matrix
    from radjepa_cli.models.features import FeatureSpec, extract_features
    from radjepa_cli.models.zoo import load_encoder

    names = resolve_label_set(args.labels)
    results = {}
    for spec_name in (args.run, f"random:{args.run}@0", "pixels:32"):
        enc = load_encoder(spec_name)
        spec = FeatureSpec(image_size=load_encoder(args.run).image_size)
        feats = {s: extract_features(enc, args.shards, s, spec, cache_dir=args.cache_dir, progress=False)
                 for s in ("train", "test")}
        y_tr, k_tr = label_matrix(feats["train"].meta, names, "mask")
        y_te, k_te = label_matrix(feats["test"].meta, names, "mask")
        auprc, per = macro_auprc(feats["train"].pooled.float().numpy(), y_tr.numpy(), k_tr.numpy().astype(bool),
                                 feats["test"].pooled.float().numpy(), y_te.numpy(), k_te.numpy().astype(bool))
        results[spec_name] = {"macro_auprc": auprc, "per_label": {names[j]: v for j, v in per.items()}}
        if not spec_name.startswith("pixels"):
            batch = next(iter(make_loader(args.shards, split="val", batch_size=args.rank_images,
                                          image_size=spec.image_size)))
            results[spec_name].update(token_ranks(enc, batch["image"]))
        print(spec_name, {k: v for k, v in results[spec_name].items() if k != "per_label"}, flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
