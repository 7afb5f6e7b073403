"""The shard loader every stage uses: manifest → shard order → this consumer's samples → decode → transform → batch.

Splitting: the epoch's sample sequence is the shards (shuffled by (seed, epoch) when shuffling) concatenated. Each
rank takes an equal contiguous slice of it (world_size > 1 drops the < world_size leftover samples, so every rank
runs the same number of steps and DDP never waits on a rank that ran out), and each DataLoader worker a contiguous
slice of its rank's. This works at sample level, so it is exact even with fewer shards than ranks × workers, and no
sample is seen twice in an epoch. Within a consumer a seeded shuffle buffer mixes samples across shards.

Throughput (benchmarks/loader.py, per CPU core at 224 px from 256 px shards): PNG decode is ~¾ of the CPU per
image, so it goes through libpng (torchvision.io) straight to a uint8 tensor; the crop is resized in uint8 and
batches stay uint8 (¼ of the bytes through worker IPC, pinning and the host→device copy), normalised on the device.
The remaining lever is the shards: level-0 PNGs decode ~3× faster, bare pixels ~50×.
"""
from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..io import read_json
from .labels import labels_to_arrays
from .manifest import MANIFEST
from .record import Record
from .shards import SHARD_RE, decode_masks, decode_png_raw, decode_sample, iter_tar, raw_to_float
from .transforms import IJEPA_SCALE, apply_transform


def read_manifest(shards: str | Path, *, allow_incomplete: bool = False) -> dict:
    """The folder's manifest.json; refuses an incomplete one (a run that did not finish) unless allowed."""
    path = Path(shards)
    path = path / MANIFEST if path.is_dir() else path
    m = read_json(path)
    if not m.get("complete") and not allow_incomplete:
        raise ValueError(f"{path} is not complete (prepare-data did not finish, or --part manifests are not merged "
                         f"yet: run `radjepa merge-manifests {path.parent}`)")
    return m


def _shard_table(shards: str | Path, split: str | None) -> list[tuple[Path, int | None]]:
    root = Path(shards)
    if root.is_file() and root.suffix == ".tar":
        return [(root, None)]
    if not root.is_dir():
        raise FileNotFoundError(f"shard folder {root} does not exist")
    if (root / MANIFEST).exists():
        entries = [(root / s["name"], s["samples"]) for s in read_manifest(root)["shards"]
                   if split is None or s["split"] == split]
    elif list(root.glob("manifest.part-*-of-*.json")):
        raise ValueError(f"{root} holds --part manifests but no manifest.json: finish every part, or run "
                         f"`radjepa merge-manifests {root}`")
    else:  # a bare folder of tars (e.g. copied without its manifest): counts come from the tars themselves
        entries = [(p, None) for p in sorted(root.glob("*.tar"))
                   if SHARD_RE.match(p.name) and (split is None or p.name.startswith(f"{split}-"))]
    missing = [str(p) for p, _ in entries if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"shard(s) listed in {root / MANIFEST} are missing: {missing[:5]}")
    return sorted(entries)


def shard_paths(shards: str | Path, split: str | None = None) -> list[Path]:
    """Shard files of `split` (None = all), in name order."""
    return [p for p, _ in _shard_table(shards, split)]


def iter_records(shards: str | Path, split: str | None = None, with_masks: bool = True) -> Iterator[Record]:
    """Every sample as a Record (image float32 [H, W] in [0, 1]), in deterministic shard/tar order."""
    for path in shard_paths(shards, split):
        for key, files in iter_tar(path):
            yield decode_sample(key, files, with_masks=with_masks)


def _count(path: Path) -> int:
    return sum(1 for _ in iter_tar(path))


def consumer_range(total: int, rank: int, world_size: int, worker: int, num_workers: int) -> tuple[int, int]:
    """[start, stop) of the epoch's sample sequence for one (rank, worker)."""
    per_rank = total // world_size if world_size > 1 else total
    r0 = rank * per_rank
    w0 = r0 + worker * per_rank // num_workers
    w1 = r0 + (worker + 1) * per_rank // num_workers
    return w0, w1


class ShardDataset(torch.utils.data.IterableDataset):
    """Samples of the given shards as dicts (see `make_loader`), split across ranks and workers."""

    def __init__(self, table: list[tuple[Path, int | None]], *, image_size: int, train: bool,
                 label_names: Sequence[str] | None, uncertain: str, mask_names: Sequence[str] | None, hflip: bool,
                 shuffle: bool, seed: int, epoch: int, rank: int, world_size: int, shuffle_buffer: int = 512,
                 crop_scale: tuple[float, float] = IJEPA_SCALE, uint8: bool = False):
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {tuple(crop_scale)}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.table = [(p, n if n is not None else _count(p)) for p, n in table]
        self.image_size, self.train, self.hflip, self.shuffle = image_size, train, hflip, shuffle
        self.label_names = tuple(label_names) if label_names else None
        self.mask_names = tuple(mask_names) if mask_names else None
        self.uncertain, self.seed, self.epoch = uncertain, seed, epoch
        self.rank, self.world_size, self.shuffle_buffer = rank, world_size, shuffle_buffer
        self.crop_scale = tuple(crop_scale)
        self.uint8 = uint8

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:  # samples this rank sees per epoch
        total = sum(n for _, n in self.table)
        return total // self.world_size if self.world_size > 1 else total

    def _consumer(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        return (info.id, info.num_workers) if info is not None else (0, 1)

    def _ordered_samples(self, start: int, stop: int) -> Iterator[tuple[str, dict[str, bytes]]]:
        order = list(range(len(self.table)))
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch, 0]).shuffle(order)
        pos = 0
        for i in order:
            path, n = self.table[i]
            if pos + n <= start or pos >= stop:
                pos += n
                continue
            for j, sample in enumerate(iter_tar(path)):
                if start <= pos + j < stop:
                    yield sample
                elif pos + j >= stop:
                    break
            pos += n

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, nworkers = self._consumer()
        start, stop = consumer_range(sum(n for _, n in self.table), self.rank, self.world_size, worker, nworkers)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, 1])
        samples = self._ordered_samples(start, stop)
        if self.shuffle:
            samples = _shuffle_buffer(samples, self.shuffle_buffer, rng)
        for key, files in samples:
            yield self._to_sample(key, files, rng)

    def _to_sample(self, key: str, files: dict[str, bytes], rng: np.random.Generator) -> dict[str, Any]:
        meta = json.loads(files["json"])
        raw = decode_png_raw(files["png"])
        masks = mask_known = None
        if self.mask_names:
            have = decode_masks(files["masks.npz"], self.mask_names) if "masks.npz" in files else {}
            stack = np.zeros((len(self.mask_names), *raw.shape), np.float32)
            mask_known = torch.zeros(len(self.mask_names), dtype=torch.bool)
            for i, name in enumerate(self.mask_names):
                if name in have:
                    stack[i], mask_known[i] = have[name], True
            masks = stack
        # uint8 output from an 8-bit PNG: crop/resize in uint8 (the fast path); otherwise in float32 as always,
        # and a 16-bit image wanted as uint8 is rounded to 8 bits after its float resize.
        image = raw if self.uint8 and raw.dtype == torch.uint8 else raw_to_float(raw)
        img, masks_t = apply_transform(image, masks, self.image_size, train=self.train, hflip=self.hflip,
                                       rng=rng, crop_scale=self.crop_scale)
        if self.uint8 and img.dtype != torch.uint8:
            img = img.mul(255).round_().to(torch.uint8)
        out: dict[str, Any] = {"image": img, "key": key, "meta": meta}
        if self.label_names:
            values, known = labels_to_arrays([meta.get("labels") or {}], self.label_names, self.uncertain)
            out["labels"], out["label_known"] = torch.from_numpy(values[0]), torch.from_numpy(known[0])
        if self.mask_names:
            out["masks"], out["mask_known"] = masks_t, mask_known
        return out


def _shuffle_buffer(it: Iterable, size: int, rng: np.random.Generator) -> Iterator:
    buf = list(itertools.islice(it, size))
    for x in it:
        i = int(rng.integers(len(buf)))
        yield buf[i]
        buf[i] = x
    rng.shuffle(buf)
    yield from buf


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Default collate: stack tensors, keep `key` and `meta` as lists. Wrap it to add e.g. JEPA block masks."""
    out: dict[str, Any] = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding workers: one thread each, the main process keeps the cores it was given


def _usable_workers(num_workers: int, samples: int, batch_size: int, drop_last: bool) -> int:
    """Each worker batches its own slice, so with drop_last a worker holding < batch_size samples yields nothing:
    16 workers on 500 samples at batch 64 would make an empty epoch. Use at most one worker per full batch."""
    if num_workers > 1 and drop_last and samples // batch_size < num_workers:
        usable = max(1, samples // batch_size)
        warnings.warn(f"{samples} samples make {samples // batch_size} batches of {batch_size}: {usable} loader "
                      f"worker(s), not {num_workers}")
        return usable
    if num_workers > 0 and samples < num_workers:
        warnings.warn(f"{samples} samples for {num_workers} workers: some workers will be idle")
    return num_workers


def make_loader(shards, *, split: str | None, batch_size: int, image_size: int = 224, train: bool = False,
                label_names: Sequence[str] | None = None, uncertain: str = "mask",
                mask_names: Sequence[str] | None = None, hflip: bool = False, shuffle: bool | None = None,
                num_workers: int = 0, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1,
                drop_last: bool = False, collate_fn: Callable | None = None,
                crop_scale: tuple[float, float] = IJEPA_SCALE, uint8: bool = False, pin_memory: bool = False,
                prefetch_factor: int = 4) -> Iterable[dict]:
    """A torch DataLoader over shards. Batches: `image` float32 [B, 1, S, S] in [0, 1]; with label_names `labels`
    float32 [B, L] and `label_known` bool [B, L]; with mask_names `masks` float32 [B, M, S, S] (same crop/flip as
    the image) and `mask_known` bool [B, M]; `key` list[str]; `meta` list[dict].

    uint8=True: `image` is uint8 [B, 1, S, S] (grey levels 0–255), a quarter of the bytes to move to the GPU;
    the consumer divides by 255 on the device. From 8-bit PNGs the crop is resized in uint8 (within one grey level
    of the float path, tested); 16-bit PNGs are resized in float and rounded to 8 bits. pin_memory=True pins batches
    (only when CUDA is available) so a `non_blocking` copy overlaps the step; each worker keeps `prefetch_factor`
    batches ready.

    train=True: RandomResizedCrop (area `crop_scale`, I-JEPA's 0.3–1 by default) and, only if hflip, random
    horizontal flips; shuffle defaults to train. Shuffling and crops are fixed by (seed, epoch): build a loader per
    epoch or call `loader.dataset.set_epoch(e)`. `collate_fn(list_of_sample_dicts)` replaces `collate_samples`.
    """
    if split is not None and split not in ("train", "val", "test"):
        raise ValueError(f"split must be train|val|test|None, not {split!r}")
    if label_names:
        labels_to_arrays([], label_names, uncertain)  # fail now on a bad `uncertain`, not inside a worker
    table = _shard_table(shards, split)
    if not table:
        raise ValueError(f"no {split or ''} shards in {shards}")
    ds = ShardDataset(table, image_size=image_size, train=train, label_names=label_names, uncertain=uncertain,
                      mask_names=mask_names, hflip=hflip, shuffle=train if shuffle is None else shuffle, seed=seed,
                      epoch=epoch, rank=rank, world_size=world_size, crop_scale=crop_scale, uint8=uint8)
    num_workers = _usable_workers(num_workers, len(ds), batch_size, drop_last)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn or collate_samples,
        drop_last=drop_last, worker_init_fn=_worker_init if num_workers else None,
        prefetch_factor=prefetch_factor if num_workers else None, persistent_workers=False,
        pin_memory=pin_memory and torch.cuda.is_available())
