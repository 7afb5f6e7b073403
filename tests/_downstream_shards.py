"""Tiny phantom shard folders for the downstream tests (train/val/test split by patient, masks included)."""
from __future__ import annotations

import json
from pathlib import Path

from radjepa_cli.data.phantom import PhantomConfig, generate
from radjepa_cli.data.shards import ShardWriter, encode_record

SPLIT_OF = ("train", "train", "test", "train", "val", "train", "test", "train")


def write_phantom_shards(out: Path, n: int = 24, size: int = 64, seed: int = 0) -> Path:
    cfg = PhantomConfig(size=size, seed=seed)
    by_split: dict[str, list] = {"train": [], "val": [], "test": []}
    for i in range(n):
        rec = generate(i, cfg)
        rec.split = SPLIT_OF[i % len(SPLIT_OF)]
        by_split[rec.split].append(rec)
    entries = []
    for split, recs in by_split.items():
        name = f"{split}-000000.tar"
        with ShardWriter(out / name) as w:
            for rec in recs:
                w.write(rec.key.replace(".", "_").replace("/", "_"), encode_record(rec, size))
        entries.append({"name": name, "split": split, "samples": len(recs), "sha256": w.sha256})
    (out / "manifest.json").write_text(json.dumps({"complete": True, "shards": entries}))
    return out
