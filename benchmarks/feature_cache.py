"""A 5-seed linear probe with the feature cache vs recomputing the frozen features for every seed.

    python benchmarks/feature_cache.py --shards SHARDS [--encoder random:vit_tiny@0:128/16] [--seeds 5]
                                       [--epochs 100] [--out benchmarks/results/feature_cache.json]

Three timings of the same protocol (train + test features, then `seeds` linear heads, paper defaults):
  recompute   every seed extracts its own features (what a probe without a cache does)
  cold cache  features extracted once, written to the cache, reused by every seed
  warm cache  a second run: features read from the cache (what every later probe/seed sweep costs)
The speed-up reported is recompute / warm cache (and recompute / cold). Also checks that the heads fitted on
cached (fp16) features score the same as on freshly computed (fp32) ones.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch


def _fit_and_score(cfg, names, tr, te, seed):
    from radjepa_cli.downstream.probe import class_metrics, label_matrix, train_head
    y_tr, k_tr = label_matrix(tr.meta, names, cfg.uncertain)
    y_te, k_te = label_matrix(te.meta, names, cfg.uncertain)
    head = train_head(tr.pooled.float(), y_tr, k_tr, cfg, seed, torch.device("cpu"))
    with torch.no_grad():
        s = torch.sigmoid(head(te.pooled.float())).numpy()
    m = class_metrics(s, y_te.numpy(), k_te.numpy().astype(bool), names)
    return float(np.mean([v["auprc"] for v in m.values() if v["auprc"] is not None]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--encoder", default="random:vit_tiny@0:128/16")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from radjepa_cli.data.labels import PHANTOM
    from radjepa_cli.downstream.probe import ProbeConfig
    from radjepa_cli.models.features import FeatureSpec, extract_features
    from radjepa_cli.models.zoo import load_encoder

    enc = load_encoder(args.encoder)
    spec = FeatureSpec(image_size=enc.image_size)
    cfg = ProbeConfig(shards=args.shards, encoder=args.encoder, out="", epochs=args.epochs, progress=False)
    names = PHANTOM

    def features(use_cache, cache_dir):
        return [extract_features(enc, args.shards, split, spec, cache_dir=cache_dir, use_cache=use_cache,
                                 progress=False) for split in ("train", "test")]

    def protocol(use_cache, cache_dir, per_seed_features):
        t = time.perf_counter()
        scores = []
        feats = None
        for seed in range(args.seeds):
            if feats is None or per_seed_features:
                feats = features(use_cache, cache_dir)
            scores.append(_fit_and_score(cfg, names, *feats, seed))
        return time.perf_counter() - t, scores, feats

    with tempfile.TemporaryDirectory() as cache:
        t_re, s_re, fresh = protocol(False, None, per_seed_features=True)
        t_cold, s_cold, _ = protocol(True, cache, per_seed_features=False)
        t_warm, s_warm, cached = protocol(True, cache, per_seed_features=False)
        assert cached[0].from_cache and cached[1].from_cache
    max_feature_err = float((cached[0].pooled.float() - fresh[0].pooled.float()).abs().max())
    res = {
        "benchmark": "feature_cache", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores visible, "
                  f"{args.threads} threads, shared machine",
        "encoder": args.encoder, "shards": args.shards, "n_train": len(fresh[0]), "n_test": len(fresh[1]),
        "seeds": args.seeds, "epochs": args.epochs,
        "seconds": {"recompute_per_seed": round(t_re, 2), "cold_cache": round(t_cold, 2),
                    "warm_cache": round(t_warm, 2)},
        "speedup_vs_warm_cache": round(t_re / t_warm, 1), "speedup_vs_cold_cache": round(t_re / t_cold, 1),
        "aggregate_auprc": {"recompute": s_re, "cached": s_warm},
        "max_abs_feature_error_fp16": max_feature_err,
    }
    print(json.dumps(res, indent=2))
    if args.out:
        from radjepa_cli.io import write_json
        write_json(args.out, res)


if __name__ == "__main__":
    main()
