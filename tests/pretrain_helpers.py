"""Tiny shard folders for the pretraining tests: structured images (bright discs on a gradient) so a JEPA can learn."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from radjepa_cli.data.record import Record
from radjepa_cli.data.shards import ShardWriter, encode_record, shard_name


def make_tiny_shards(out: Path, n: int = 48, size: int = 32, per_shard: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    recs = []
    for i in range(n):
        img = 0.2 + 0.3 * yy * rng.random()
        for _ in range(int(rng.integers(1, 4))):
            cy, cx, r = rng.random(2).tolist() + [0.08 + 0.15 * rng.random()]
            img = img + 0.5 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
        recs.append(Record(key=f"s{i:05d}", image=np.clip(img, 0, 1).astype(np.float32), dataset="tiny",
                           labels={"disc": int(img.max() > 0.8)}))
    for s in range(0, n, per_shard):
        with ShardWriter(Path(out) / shard_name("train", s // per_shard)) as w:
            for r in recs[s:s + per_shard]:
                w.write(r.key, encode_record(r, size))
    return Path(out)
