"""What `radjepa predict` reads: shard folders / tars, or image files and folders, turned into model inputs the way
the saved head saw its training images (model.json's `input`).

An image file goes through prepare-data's decode (data/decode.py: DICOM polarity and bit depth, PNG/JPEG 8/16-bit),
its shorter side is resized to the training shards' size and quantised to their bit depth (data/shards.py, as
prepare-data wrote them), then the loader's eval transform (centre square, resize to image_size). Whatever cannot be
read is skipped and listed with the reason the decoder gave.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
PREVIEW_SIDE = 512  # overlays are drawn on the decoded image with its shorter side at most this


@dataclasses.dataclass
class Inputs:
    shards: list[Path]
    images: list[Path]
    skipped: list[dict]  # {path, reason}


def _is_shards(p: Path) -> bool:
    from radjepa_cli.data.manifest import MANIFEST
    from radjepa_cli.data.shards import SHARD_RE
    if p.is_file():
        return p.suffix == ".tar"
    return (p / MANIFEST).is_file() or any(SHARD_RE.match(t.name) for t in p.glob("*.tar"))


def classify_inputs(paths) -> Inputs:
    """Shard folders / .tar files; image files (any file: the decoder decides); folders searched recursively for
    .png/.jpg/.jpeg/.dcm/.dicom and extension-less files (DICOM often has none)."""
    found = Inputs([], [], [])
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            found.skipped.append({"path": str(raw), "reason": "no such file or directory"})
        elif _is_shards(p):
            found.shards.append(p)
        elif p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                           and (f.suffix.lower() in IMAGE_SUFFIXES or f.suffix == ""))
            if not files:
                found.skipped.append({"path": str(p), "reason": "folder holds no PNG, JPEG or DICOM files"})
            found.images += files
        else:
            found.images.append(p)
    return found


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip(".") or "image"


def unique_ids(paths: list[Path]) -> list[str]:
    """File stems made safe for file names, numbered where two inputs share one."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        base = safe_name(p.stem)
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return out


@dataclasses.dataclass
class PreparedImage:
    id: str
    path: Path
    tensor: torch.Tensor  # [1, S, S] in [0, 1]: what the encoder gets
    shape: tuple[int, int]  # the decoded image's (H, W)
    preview: np.ndarray | None  # the decoded image, shorter side <= PREVIEW_SIDE (for overlays)


def prepare_image(path: Path, image_id: str, inp: dict, *, keep_preview: bool = False,
                  max_megapixels: float = 200.0) -> PreparedImage:
    """Decode as prepare-data does, stage like a training shard, apply the eval transform. Raises DecodeError."""
    from radjepa_cli.data.decode import decode_image
    from radjepa_cli.data.shards import decode_png, encode_png, resize_shorter
    from radjepa_cli.data.transforms import apply_transform

    image = decode_image(path, max_megapixels=max_megapixels)
    staged = decode_png(encode_png(resize_shorter(image, int(inp["shard_size"])), int(inp["bits"])))
    x, _ = apply_transform(staged, None, int(inp["image_size"]), train=False, hflip=False, rng=None)
    preview = None
    if keep_preview:
        preview = image if min(image.shape) <= PREVIEW_SIDE else resize_shorter(image, PREVIEW_SIDE)
    return PreparedImage(image_id, path, x, tuple(image.shape), preview)


def image_batches(paths: list[Path], inp: dict, batch_size: int, skipped: list[dict], *,
                  keep_preview: bool = False, max_megapixels: float = 200.0) -> Iterator[list[PreparedImage]]:
    """Batches of prepared images; unreadable files are appended to `skipped` with the decoder's reason."""
    from radjepa_cli.data.decode import DecodeError

    batch: list[PreparedImage] = []
    for path, image_id in zip(paths, unique_ids(paths)):
        try:
            batch.append(prepare_image(path, image_id, inp, keep_preview=keep_preview,
                                       max_megapixels=max_megapixels))
        except DecodeError as e:
            skipped.append({"path": e.path, "reason": e.reason})
            continue
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def mask_to_image_geometry(logits: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """[M, S, S] logits of the centre square the model saw → bool [M, H, W] on the decoded image's pixel grid
    (bilinear on logits, then > 0; outside the centre square nothing was predicted: False)."""
    import torch.nn.functional as F

    from radjepa_cli.data.transforms import center_square_params

    h, w = shape
    top, left, side, _ = center_square_params(h, w)
    up = F.interpolate(logits[None].float(), size=(side, side), mode="bilinear", align_corners=False)[0] > 0
    out = np.zeros((logits.shape[0], h, w), bool)
    out[:, top:top + side, left:left + side] = up.numpy()
    return out
