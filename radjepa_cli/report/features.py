"""Frozen-encoder patch tokens for report generation: image preprocessing and the on-disk token cache.

The encoder is frozen (paper Section 4), so training encodes every image once and reads the cache for
every epoch and both stages. Training and generation share `images_to_batch`, so a PNG given to
`generate-report` is prepared exactly like a training image.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from radjepa_cli.data.transforms import apply_transform
from radjepa_cli.io import write_json

CACHE_VERSION = 1


def image_to_square(image: np.ndarray, size: int) -> torch.Tensor:
    """[H, W] float in [0, 1] → [1, size, size]: the loader's evaluation transform (centre square, resize)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    return apply_transform(image, None, size, train=False, hflip=False, rng=None)[0]


def images_to_batch(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    return torch.stack([image_to_square(im, size) for im in images])


@torch.no_grad()
def encode(encoder, images: torch.Tensor, feature_layer: int | None = None) -> torch.Tensor:
    """Patch tokens [B, N, D] of a FrozenEncoder: its output tokens, or block `feature_layer`'s
    (e.g. -2, LLaVA's penultimate layer) flattened from the [B, D, h, w] map `intermediate` returns."""
    if feature_layer is None:
        return encoder(images).patch_tokens
    (fmap,) = encoder.intermediate(images, [feature_layer])
    return fmap.flatten(2).transpose(1, 2)


@dataclasses.dataclass
class CachedSplit:
    """Tokens [n, N, D] (float16 memmap) with the per-sample metadata used for training."""
    tokens: np.ndarray
    keys: list[str]
    findings: list[str]
    labels: list[dict]
    datasets: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    def batch(self, idx: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.tokens[np.asarray(idx)])).float()


class ShuffledImages:
    """A split whose texts and labels stay in place while each sample gets another sample's image tokens (a
    derangement of the first `n`, seeded). Validation loss on it vs the real pairing measures how much the LM
    uses the image: equal losses mean the image is ignored."""

    def __init__(self, split: CachedSplit, n: int | None = None, seed: int = 0):
        n = len(split) if n is None else min(n, len(split))
        p = np.random.default_rng(seed).permutation(n)
        self.perm = np.arange(len(split))
        self.perm[p] = np.roll(p, -1)  # each sample takes its successor's image in a random cycle: no fixed point
        self.split, self.findings, self.labels = split, split.findings, split.labels

    def __len__(self) -> int:
        return len(self.split)

    def batch(self, idx: Sequence[int]) -> torch.Tensor:
        return self.split.batch(self.perm[np.asarray(idx)])


def _index_matches(index: dict, expected: dict) -> bool:
    return all(index.get(k) == v for k, v in expected.items())


def load_cached_split(folder: Path) -> CachedSplit:
    index = json.loads((folder / "index.json").read_text())
    shape = (index["n"], index["tokens_per_image"], index["dim"])
    tokens = np.memmap(folder / "tokens.f16", dtype=np.float16, mode="r", shape=shape) if index["n"] else \
        np.zeros(shape, np.float16)
    return CachedSplit(tokens, index["keys"], index["findings"], index["labels"], index["datasets"])


def cache_split(encoder, records: Iterable, folder: Path, *, identity: dict, image_size: int,
                feature_layer: int | None, batch_size: int = 32, device: str | torch.device = "cpu",
                progress=None, description: str = "encoding") -> CachedSplit:
    """Encode every record that has Findings text into `folder` (reused when `identity` matches).

    index.json is written last, atomically: a cache interrupted half-way is never taken for a complete one."""
    folder.mkdir(parents=True, exist_ok=True)
    index_path = folder / "index.json"
    expected = {"version": CACHE_VERSION, **identity, "image_size": image_size, "feature_layer": feature_layer}
    if index_path.is_file() and _index_matches(json.loads(index_path.read_text()), expected):
        return load_cached_split(folder)
    index_path.unlink(missing_ok=True)
    meta: dict[str, list] = {"keys": [], "findings": [], "labels": [], "datasets": []}
    shape: tuple[int, int] | None = None
    task = progress.add_task(description, total=None) if progress is not None else None
    with open(folder / "tokens.f16", "wb") as f:
        for recs in batched((r for r in records if (r.findings or "").strip()), batch_size):
            x = images_to_batch([r.image for r in recs], image_size).to(device)
            tok = encode(encoder, x, feature_layer).float().cpu()
            if shape is None:
                shape = tuple(tok.shape[1:])
            f.write(tok.to(torch.float16).numpy().tobytes())
            for r in recs:
                meta["keys"].append(r.key)
                meta["findings"].append(r.findings)
                meta["labels"].append(dict(r.labels))
                meta["datasets"].append(r.dataset)
            if task is not None:
                progress.advance(task, len(recs))
    if shape is None:
        shape = (0, 0)
    write_json(index_path, {**expected, "n": len(meta["keys"]), "tokens_per_image": shape[0], "dim": shape[1], **meta})
    return load_cached_split(folder)


def batched(it: Iterable, n: int) -> Iterator[list]:
    buf: list = []
    for x in it:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf
