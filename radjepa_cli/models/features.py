"""Frozen-feature extraction with a content-keyed cache.

A frozen encoder gives the same features for the same images every time, so the probe's 5 seeds and the
segmentation heads should not recompute them. An entry is keyed by sha256 of
(encoder fingerprint = weights + preprocessing, the split's shard checksums from manifest.json, split,
the loader transform and what is extracted); any change there is a different key, so stale entries are never
read. Entries are fp16 safetensors (labels and masks travel with them, so a cached probe never decodes a PNG):
  <cache>/<key[:2]>/<key>.safetensors     tensors: pooled [N, D] | tokens [N, T, D] | layer{b} [N, D, h, w],
                                           masks [N, M, S, S] u8
                                           metadata: keys, per-sample labels/dataset/split/patient, spec
Default cache dir: $RADJEPA_CACHE, else ~/.cache/radjepa/features.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import torch

from radjepa_cli.io import atomic_write_bytes

FEATURES_VERSION = 1
META_FIELDS = ("dataset", "view", "patient", "study", "split", "labels")  # what the probe needs; no report text


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """What to extract and how the images are loaded: part of the cache key."""

    image_size: int  # the loader's eval transform: shorter side → S, centre crop S×S (then the encoder's own)
    layers: tuple[int, ...] = ()  # () = pooled embeddings; else these blocks' feature maps
    mask_names: tuple[str, ...] = ()  # segmentation targets stored beside the features
    tokens: bool = False  # the final patch tokens [N, T, D] instead of pooled (the attentive probe's input)

    @property
    def kind(self) -> str:
        return "layers" if self.layers else "tokens" if self.tokens else "pooled"

    def key_fields(self) -> dict:
        # `tokens` joined the spec later: left out while False so earlier cache entries keep their keys
        d = dataclasses.asdict(self)
        if not d["tokens"]:
            del d["tokens"]
        return d


@dataclasses.dataclass
class FeatureSet:
    keys: list[str]
    meta: list[dict]
    tensors: dict[str, torch.Tensor]  # "pooled" | "layer{b}" (fp16), "masks" (uint8), "mask_known" (bool)
    cache_path: Path | None = None
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def pooled(self) -> torch.Tensor:
        return self.tensors["pooled"]

    @property
    def tokens(self) -> torch.Tensor:
        return self.tensors["tokens"]

    def layers(self, layers: Sequence[int]) -> list[torch.Tensor]:
        return [self.tensors[f"layer{b}"] for b in layers]


def default_cache_dir() -> Path:
    return Path(os.environ.get("RADJEPA_CACHE") or Path.home() / ".cache" / "radjepa" / "features")


def shards_fingerprint(shards: str | Path, split: str | None) -> str:
    """Checksums of the split's shards as recorded in manifest.json (else name/size/mtime of the tars)."""
    from radjepa_cli.data.loader import _shard_table
    from radjepa_cli.data.manifest import MANIFEST
    root = Path(shards)
    h = hashlib.sha256()
    manifest = root / MANIFEST if root.is_dir() else None
    if manifest is not None and manifest.is_file():
        m = json.loads(manifest.read_text())
        for s in sorted(m.get("shards", []), key=lambda s: s["name"]):
            if split is None or s["split"] == split:
                h.update(f"{s['name']}|{s.get('sha256')}|{s['samples']}\n".encode())
    else:
        for p, _ in _shard_table(root, split):
            st = p.stat()
            h.update(f"{p.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_key(encoder_fingerprint: str, shards_fp: str, split: str | None, spec: FeatureSpec) -> str:
    blob = json.dumps([FEATURES_VERSION, encoder_fingerprint, shards_fp, split, spec.key_fields()],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _save(path: Path, fs: FeatureSet, spec: FeatureSpec, encoder_name: str) -> None:
    from safetensors.torch import save
    meta = {"keys": json.dumps(fs.keys), "meta": json.dumps(fs.meta), "spec": json.dumps(dataclasses.asdict(spec)),
            "encoder": encoder_name, "version": str(FEATURES_VERSION)}
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in fs.tensors.items()}, metadata=meta))


def _load(path: Path) -> FeatureSet | None:
    from safetensors import safe_open
    try:
        with safe_open(str(path), "pt") as f:
            md = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return FeatureSet(json.loads(md["keys"]), json.loads(md["meta"]), tensors, path, from_cache=True)
    except Exception:  # a truncated / foreign file: recompute (and overwrite it atomically)
        return None


@torch.no_grad()
def compute_features(encoder, shards: str | Path, split: str | None, spec: FeatureSpec, *, batch_size: int = 32,
                     progress: bool = True, images_fn=None) -> FeatureSet:
    """Run the encoder over a split (eval transform). `images_fn(batch) -> images` lets callers augment."""
    from radjepa_cli.data.loader import make_loader
    loader = make_loader(shards, split=split, batch_size=batch_size, image_size=spec.image_size, train=False,
                         mask_names=spec.mask_names or None, shuffle=False)
    keys, meta, chunks = [], [], {}
    total = len(loader.dataset)
    with _progress(progress, f"features {split or 'all'} ({total} images)", total) as advance:
        for batch in loader:
            images = batch["image"] if images_fn is None else images_fn(batch)
            if spec.layers:
                outs = {f"layer{b}": t for b, t in zip(spec.layers, encoder.intermediate(images, spec.layers))}
            elif spec.tokens:
                outs = {"tokens": encoder(images).patch_tokens}
            else:
                outs = {"pooled": encoder(images).pooled}
            for k, v in outs.items():
                chunks.setdefault(k, []).append(v.float().cpu().half())
            if spec.mask_names:
                chunks.setdefault("masks", []).append((batch["masks"] > 0.5).to(torch.uint8))
                chunks.setdefault("mask_known", []).append(batch["mask_known"])
            keys += batch["key"]
            meta += [{k: m.get(k) for k in META_FIELDS} for m in batch["meta"]]
            advance(len(batch["key"]))
    if not keys:
        raise ValueError(f"{shards}: split {split!r} has no samples")
    return FeatureSet(keys, meta, {k: torch.cat(v) for k, v in chunks.items()})


def extract_features(encoder, shards: str | Path, split: str | None, spec: FeatureSpec, *,
                     cache_dir: str | Path | None = None, use_cache: bool = True, batch_size: int = 32,
                     progress: bool = True) -> FeatureSet:
    """Cached `compute_features`: returns the stored entry when (encoder, shards, split, spec) match."""
    if not use_cache:
        return compute_features(encoder, shards, split, spec, batch_size=batch_size, progress=progress)
    key = cache_key(encoder.fingerprint, shards_fingerprint(shards, split), split, spec)
    path = Path(cache_dir or default_cache_dir()) / key[:2] / f"{key}.safetensors"
    if path.is_file():
        fs = _load(path)
        if fs is not None:
            return fs
    fs = compute_features(encoder, shards, split, spec, batch_size=batch_size, progress=progress)
    _save(path, fs, spec, encoder.name)
    fs.cache_path = path
    return fs


class _progress:
    """A rich progress bar when asked (and a no-op otherwise), yielding an `advance(n)` callable."""

    def __init__(self, enabled: bool, label: str, total: int):
        self.enabled, self.label, self.total = enabled, label, total

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
        self.p = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), transient=True)
        self.p.start()
        task = self.p.add_task(self.label, total=self.total)
        return lambda n: self.p.advance(task, n)

    def __exit__(self, *exc):
        if self.enabled:
            self.p.stop()
        return False
