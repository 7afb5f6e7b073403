"""WebDataset shard files: encode a Record into a sample, write tars atomically, read them back.

A sample is `{key}.png` (grayscale, 8- or 16-bit), `{key}.json` (Record.meta()) and optionally `{key}.masks.npz`
(named bool masks, same size as the image). Tars are written with fixed member metadata (mtime 0, no owner), so the
same inputs give byte-identical shards and the same sha256 — that is what lets a rerun trust finished shards.
webdataset's TarWriter stamps the current time into every member, hence our own small writer.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import warnings
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from .record import Record

SHARD_RE = re.compile(r"^(train|val|test)-(\d{6})\.tar$")
# zlib levels: measured on 256 px phantoms, PNG level 2 is ~2x faster than 6 for ~15% more bytes; masks
# (29 bool planes) level 3 is ~2x faster than savez_compressed's 6. Encoding is a third of the phantom pipeline.
# Reading: PNG decode is ~¾ of the training loader's CPU. Level 0 (stored, still a standard PNG) decodes ~3x
# faster than level 2 for ~1.5x the bytes on phantoms (benchmarks/loader.py, "png0*"): the choice for shards that
# must feed many GPUs from few cores (`prepare-data --png-level 0`).
PNG_LEVEL, NPZ_LEVEL = 2, 3


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


# ----------------------------------------------------------------------------------------------- resizing

def resize_shorter(image: np.ndarray, size: int) -> np.ndarray:
    """Resize float32 [H, W] so the shorter side is `size` (antialiased bilinear: PIL filters scale their support)."""
    from PIL import Image
    h, w = image.shape
    if min(h, w) == size:
        return image.astype(np.float32, copy=False)
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    out = Image.fromarray(image.astype(np.float32, copy=False), mode="F").resize((nw, nh), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a binary mask to (H, W) — labels must stay binary."""
    from PIL import Image
    if mask.shape == tuple(shape):
        return mask.astype(bool, copy=False)
    m = Image.fromarray(mask.astype(np.uint8) * 255, mode="L").resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    return np.asarray(m) > 127


# ------------------------------------------------------------------------------------------- sample codec

def encode_png(image: np.ndarray, bits: int = 8, level: int = PNG_LEVEL) -> bytes:
    from PIL import Image
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, not {bits}")
    x = np.clip(image, 0.0, 1.0)
    if bits == 8:
        img = Image.fromarray((x * 255.0 + 0.5).astype(np.uint8), mode="L")
    else:
        img = Image.fromarray((x * 65535.0 + 0.5).astype(np.uint16))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def _decode_png_torchvision(data: bytes):
    """libpng through torchvision.io (no PIL image object, no numpy copy); None when unavailable or not 1-channel."""
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_png as tv_decode_png
    except ImportError:
        return None
    try:
        # torchvision 0.29 deprecates its codecs for TorchCodec (a warning per call); when they go, PIL takes over
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            t = tv_decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED)
    except RuntimeError:   # e.g. a PNG flavour this libpng build refuses: PIL decides
        return None
    return t[0] if t.shape[0] == 1 else None   # palette/RGB: PIL's "L" conversion defines the grey levels


def decode_png_raw(data: bytes):
    """Shard PNG bytes → the stored grey levels as a torch tensor [H, W], uint8 (8-bit) or uint16 (16-bit)."""
    import torch
    t = _decode_png_torchvision(data)
    if t is not None:
        return t
    from PIL import Image
    with Image.open(io.BytesIO(data)) as img:
        if img.mode.startswith("I"):
            return torch.from_numpy(np.asarray(img, dtype=np.int32)).to(torch.uint16)
        return torch.from_numpy(np.array(img.convert("L") if img.mode != "L" else img, dtype=np.uint8))


def raw_to_float(raw) -> np.ndarray:
    """decode_png_raw's tensor → float32 [H, W] in [0, 1] (numpy divides in float32: same as the PIL path)."""
    import torch
    if raw.dtype == torch.uint8:
        return raw.numpy().astype(np.float32) / 255.0
    return raw.to(torch.int32).numpy().astype(np.float32) / 65535.0


def decode_png(data: bytes) -> np.ndarray:
    """Shard PNG bytes → float32 [H, W] in [0, 1] (8- or 16-bit)."""
    return raw_to_float(decode_png_raw(data))


def encode_masks(masks: dict[str, np.ndarray]) -> bytes:
    """A standard .npz of bool arrays (np.load reads it), deflated at a faster level than np.savez_compressed."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=NPZ_LEVEL) as z:
        for name, m in masks.items():
            with z.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(m, dtype=bool), allow_pickle=False)
    return buf.getvalue()


def decode_masks(data: bytes, names=None) -> dict[str, np.ndarray]:
    """{name: bool [H, W]}; with `names`, only those present are decompressed (npz members load lazily)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        wanted = z.files if names is None else [n for n in names if n in z.files]
        return {name: z[name].astype(bool) for name in wanted}


def encode_record(rec: Record, size: int, bits: int = 8, png_level: int = PNG_LEVEL) -> dict[str, bytes]:
    """Record → {extension: bytes} with the image resized (shorter side = size) and masks resized alike."""
    image = resize_shorter(rec.image, size)
    sample = {"png": encode_png(image, bits, png_level),
              "json": json.dumps(rec.meta(), sort_keys=True, ensure_ascii=False).encode()}
    if rec.masks:
        sample["masks.npz"] = encode_masks({k: resize_mask(np.asarray(m), image.shape) for k, m in rec.masks.items()})
    return sample


def decode_sample(key: str, files: dict[str, bytes], with_masks: bool = True) -> Record:
    meta = json.loads(files["json"])
    masks = decode_masks(files["masks.npz"]) if with_masks and "masks.npz" in files else {}
    return Record(key=key, image=decode_png(files["png"]), dataset=meta.get("dataset", ""),
                  view=meta.get("view", "UNKNOWN"), patient=meta.get("patient", ""), study=meta.get("study", ""),
                  split=meta.get("split", "train"), labels=meta.get("labels", {}), findings=meta.get("findings", ""),
                  impression=meta.get("impression", ""), masks=masks, extra=meta.get("extra", {}))


# --------------------------------------------------------------------------------------------- tar files

class _HashingFile(io.RawIOBase):
    def __init__(self, f):
        self.f, self.sha, self.n = f, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, b):
        self.sha.update(b)
        self.n += len(b)
        return self.f.write(b)


class ShardWriter:
    """Write one tar to a hidden temp file in the same folder; `close()` fsyncs and renames it into place.

    A crash leaves only `.{name}.*.tmp`, never a file that looks finished. Use as a context manager; on an
    exception the temp file is removed.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._f = self.tmp.open("wb")
        try:
            self._h = _HashingFile(self._f)
            self._tar = tarfile.open(fileobj=self._h, mode="w|", format=tarfile.USTAR_FORMAT)
        except BaseException:
            self._f.close()
            self.tmp.unlink(missing_ok=True)
            raise
        self.count = 0
        self.sha256: str | None = None
        self.nbytes = 0

    def write(self, key: str, files: dict[str, bytes]) -> None:
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/' (WebDataset splits on them)")
        for ext, data in files.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def close(self) -> Path:
        self._tar.close()
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self.sha256, self.nbytes = self._h.sha.hexdigest(), self._h.n
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._tar.close()
            self._f.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def iter_tar(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream (key, {ext: bytes}) from a WebDataset tar; members of one sample are consecutive."""
    key, files = None, {}
    with tarfile.open(path, mode="r|") as tar:
        for m in tar:
            if not m.isfile():
                continue
            base = m.name.rsplit("/", 1)[-1]
            k, _, ext = base.partition(".")
            if k != key and key is not None:
                yield key, files
                files = {}
            key = k
            files[ext] = tar.extractfile(m).read()
    if key is not None:
        yield key, files


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()

