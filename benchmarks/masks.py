"""Throughput of the multi-block mask collator (masks per second = images per second it can serve).

    python benchmarks/masks.py [--batch 128] [--grid 16] [--iters 200] [--json OUT.json]

Measures mask sampling alone and the full collate (default_collate of [1, 224, 224] images + masks), for the
faithful I-JEPA settings, the quirk fixes and the variable-length mode. One loader worker runs one collator,
so compare the figure with the training step's images/s per worker.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from radjepa_cli.io import write_json
from radjepa_cli.pretrain.masks import MaskConfig, MultiBlockMaskCollator

MODES = {
    "faithful": MaskConfig(),
    "fixed": MaskConfig(independent_scale_aspect=True, reach_last_row_col=True),
    "variable_length": MaskConfig(independent_scale_aspect=True, reach_last_row_col=True, variable_length=True),
}


def _rate(fn, iters: int, batch: int) -> float:
    fn(0)  # warm-up
    t0 = time.perf_counter()
    for i in range(1, iters + 1):
        fn(i)
    return batch * iters / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--grid", type=int, default=16)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a loader worker's budget

    samples = [{"image": torch.rand(1, args.image_size, args.image_size), "key": f"s{i}"} for i in range(args.batch)]
    rows = []
    for name, cfg in MODES.items():
        col = MultiBlockMaskCollator(cfg, grid=(args.grid, args.grid))
        masks_only = _rate(lambda i: col.sample_masks(args.batch, i), args.iters, args.batch)
        full = _rate(lambda i: col(samples), max(args.iters // 4, 1), args.batch)
        enc, pred = col.sample_masks(args.batch, 0)
        rows.append({"mode": name, "masks_per_s": round(masks_only), "collate_images_per_s": round(full),
                     "k_ctx": enc.shape[-1], "k_pred": pred.shape[-1]})

    print(f"batch {args.batch}, grid {args.grid}x{args.grid}, 1 thread, {platform.processor() or platform.machine()}")
    print(f"{'mode':<16}{'masks/s':>12}{'collate img/s':>16}{'K_ctx':>8}{'K_pred':>8}")
    for r in rows:
        print(f"{r['mode']:<16}{r['masks_per_s']:>12,}{r['collate_images_per_s']:>16,}{r['k_ctx']:>8}{r['k_pred']:>8}")
    result = {"benchmark": "masks", "batch": args.batch, "grid": args.grid, "device": "cpu", "results": rows}
    if args.json:
        write_json(args.json, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
