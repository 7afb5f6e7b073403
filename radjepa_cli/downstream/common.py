"""What `probe` and `segment` share before and after training: the run preamble and the saved-model folder.

The preamble validates the common config fields, clears the outputs that mark a finished run (so an old
results.json / model.json never sits beside a new, unfinished run), resolves the device and loads the encoder;
`split_features` reads a split's features through the feature cache as the config asks. After training,
`write_model` writes model.json's frame (task, encoder, input, ..., results) around each task's own record.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import torch

from radjepa_cli.downstream.saved import MODEL_JSON

FINISHED_MARKERS = ("results.json", MODEL_JSON)


class RunConfig(Protocol):
    """The fields ProbeConfig and SegmentConfig share, which the helpers here read. (Each config stays its own
    dataclass: their field order is the order of results.json's "config", so a shared base class would reorder it.)"""
    shards: str
    encoder: str
    out: str
    seeds: int
    epochs: int
    train_split: str
    val_split: str | None
    eval_split: str
    feature_batch_size: int
    cache_dir: str | None
    use_cache: bool
    trust_remote_code: bool
    device: str
    progress: bool


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def start_run(cfg: RunConfig):
    """cfg: a ProbeConfig / SegmentConfig. Returns (out dir, device, frozen encoder)."""
    from radjepa_cli.models.zoo import load_encoder

    if cfg.seeds < 1 or cfg.epochs < 1:
        raise ValueError("seeds and epochs must be >= 1")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in FINISHED_MARKERS:
        (out / name).unlink(missing_ok=True)
    device = resolve_device(cfg.device)
    encoder = load_encoder(cfg.encoder, device=device, trust_remote_code=cfg.trust_remote_code)
    return out, device, encoder


def split_features(cfg: RunConfig, encoder, split: str, spec):
    """One split's features (models.features.extract_features), with the cache, batch size and progress settings
    of cfg."""
    from radjepa_cli.models.features import extract_features
    return extract_features(encoder, cfg.shards, split, spec, cache_dir=cfg.cache_dir, use_cache=cfg.use_cache,
                            batch_size=cfg.feature_batch_size, progress=cfg.progress)


def cosine_lr(step: int, total: int, base: float) -> float:
    """The head's learning rate at `step` of `total`: cosine from `base` to 0 (probe and segment alike)."""
    return base * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def has_split(shards: str, split: str | None) -> bool:
    from radjepa_cli.data.loader import shard_paths
    return bool(split) and bool(shard_paths(shards, split))


DECODE_NOTE = ("radjepa_cli.data.decode.decode_image, as prepare-data: DICOM modality LUT, VOI LUT or window, "
               "MONOCHROME1 inverted (air dark); PNG / JPEG at 8 or 16 bits; colour → luminance")
TRANSFORM_NOTE = ("shorter side resized to shard_size and quantised to `bits` (prepare-data), then the loader's eval "
                  "transform: centre square crop, antialiased bilinear resize to image_size; the encoder's own "
                  "preprocessing (encoder.preprocessing); features rounded to float16 (the feature cache's dtype)")


def input_record(shards: str, split: str, image_size: int) -> dict:
    """How an image becomes what the head saw in training; shard size and bit depth are read from a training
    sample (what prepare-data actually wrote)."""
    import io

    from PIL import Image

    from radjepa_cli.data.loader import shard_paths
    from radjepa_cli.data.shards import iter_tar

    _, files = next(iter_tar(shard_paths(shards, split)[0]))
    with Image.open(io.BytesIO(files["png"])) as img:
        bits, shorter = (16 if img.mode.startswith("I") else 8), min(img.size)
    return {"decode": DECODE_NOTE, "shard_size": shorter, "bits": bits, "image_size": image_size,
            "transform": TRANSFORM_NOTE, "features_dtype": "float16"}


def best_seed(saved: list[dict], higher_is_better: bool = True) -> int:
    """The seed with the best selection score (ties → the lowest seed; seeds without a score come last)."""
    sign = 1 if higher_is_better else -1
    scored = [(sign * e["val_score"], -e["seed"]) for e in saved if e.get("val_score") is not None]
    return -max(scored)[1] if scored else saved[0]["seed"]


def write_model(cfg: RunConfig, out: Path, encoder, task: str, image_size: int, record: dict) -> Path:
    """model.json, last of all (downstream/saved.py): task, encoder reference and input record first, then the
    task's own `record` (head, outputs, thresholds, seeds, trained_on), then the results file it goes with."""
    from radjepa_cli.downstream.saved import write_model_json
    from radjepa_cli.models.zoo import encoder_reference
    return write_model_json(out, {"task": task, "encoder": encoder_reference(encoder, cfg.encoder),
                                  "input": input_record(cfg.shards, cfg.train_split, image_size),
                                  **record, "results": "results.json"})
