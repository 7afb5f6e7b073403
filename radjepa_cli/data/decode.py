"""Decode one radiograph file (DICOM, PNG 8/16-bit, JPEG) to float32 [H, W] in [0, 1], radiographic polarity.

Radiographic polarity = air dark, bone bright (MONOCHROME2 convention). Every failure raises `DecodeError`,
whose message names the file and the problem, so a data-preparation run can list rejected inputs with reasons.
The decompression-bomb limit is checked from the header (PNG/JPEG dimensions, DICOM Rows x Columns) before any
pixel data is decoded.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np

# Projection radiography modalities. Secondary captures (OT/SC) are accepted because scanned or re-exported
# chest films often carry them; cross-sectional and other modalities are rejected with a reason.
RADIOGRAPH_MODALITIES = ("CR", "DX", "DR", "RG", "OT", "SC")
CODEC_HINT = "install a DICOM decoder plugin: pip install 'radjepa[dicom-codecs]' (pylibjpeg, pylibjpeg-openjpeg)"
_VIEW_ALIASES = {
    "PA": "PA", "POSTEROANTERIOR": "PA", "AP": "AP", "ANTEROPOSTERIOR": "AP", "AP SUPINE": "AP_SUPINE",
    "AP_SUPINE": "AP_SUPINE", "LL": "LL", "LATERAL": "LATERAL", "LAT": "LATERAL", "RL": "LATERAL", "L": "LATERAL",
}


class DecodeError(ValueError):
    """An input that cannot become a radiograph. `path` and `reason` are kept for rejection lists."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # picklable across worker processes (default pickling would drop `reason`)
        return (type(self), (self.path, self.reason))


def normalize_view(value: Any) -> str:
    """Map a dataset's view string (ViewPosition, 'Frontal/Lateral', PadChest 'Projection') onto record.VIEWS."""
    if value is None:
        return "UNKNOWN"
    v = str(value).strip().upper().replace("-", " ")
    return _VIEW_ALIASES.get(v, "UNKNOWN")


def decode_image(path: str | Path, *, max_megapixels: float = 200.0) -> np.ndarray:
    """Decode `path` to float32 [H, W] in [0, 1] (air dark). Raises DecodeError naming the file and the problem."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError as e:
        raise DecodeError(path, f"cannot read file ({e.strerror or e})") from None
    if not head:
        raise DecodeError(path, "empty file (0 bytes)")
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff"):
        return _decode_pil(path, max_megapixels)
    if head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom"):
        return _decode_dicom(path, max_megapixels)
    kind = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG, JPEG or DICOM")
    raise DecodeError(path, f"not a {kind} file (starts with {head[:16]!r})")


# ---------------------------------------------------------------------------------------------- PNG / JPEG

@contextlib.contextmanager
def _pil_without_bomb_guard():
    """PIL's own guard uses a fixed global limit; we check our configurable one from the header instead."""
    from PIL import Image
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _check_megapixels(path: Path, width: int, height: int, max_megapixels: float) -> None:
    mp = width * height / 1e6
    if mp > max_megapixels:
        raise DecodeError(path, f"header claims {width}x{height} = {mp:.0f} megapixels, over the "
                                f"--max-megapixels limit of {max_megapixels:g} (decompression bomb guard)")
    if width <= 0 or height <= 0:
        raise DecodeError(path, f"header claims an empty image ({width}x{height})")


def _decode_pil(path: Path, max_megapixels: float) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    with _pil_without_bomb_guard(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            img = Image.open(path)  # lazy: reads the header only
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DecodeError(path, f"unreadable image header ({e})") from None
        with img:
            _check_megapixels(path, img.width, img.height, max_megapixels)
            try:
                img.load()
            except (OSError, SyntaxError, ValueError) as e:
                raise DecodeError(path, f"corrupt or truncated {img.format} data ({e})") from None
            return _pil_to_float(path, img)


def _pil_to_float(path: Path, img) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return (np.asarray(img, dtype=np.uint16).astype(np.float32) / 65535.0)
    if mode == "I":  # 16-bit PNGs may open as 32-bit signed integers
        arr = np.asarray(img, dtype=np.int64)
        return (np.clip(arr, 0, 65535).astype(np.float32) / 65535.0)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if mode not in ("L", "1"):
        img = img.convert("L")  # RGB/palette/LA exports of grayscale films: luminance
    return np.asarray(img, dtype=np.uint8).astype(np.float32) / 255.0 if img.mode == "L" \
        else np.asarray(img, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------- DICOM

def _decode_dicom(path: Path, max_megapixels: float) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    try:  # defer_size: pixel bytes stay on disk until the header checks below have passed
        ds = pydicom.dcmread(path, force=path.suffix.lower() in (".dcm", ".dicom"), defer_size="2 MB")
    except InvalidDicomError as e:
        raise DecodeError(path, f"not a DICOM file ({e})") from None
    except Exception as e:  # noqa: BLE001 - any parser failure means a bad input, reported with its cause
        raise DecodeError(path, f"not a readable DICOM file ({type(e).__name__}: {e})") from None
    modality = str(ds.get("Modality", "") or "").upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        raise DecodeError(path, f"DICOM Modality {modality} is not a projection radiograph "
                                f"(accepted: {', '.join(RADIOGRAPH_MODALITIES)})")
    if "PixelData" not in ds:
        if not getattr(ds, "preamble", None) and "Modality" not in ds and "Rows" not in ds:
            raise DecodeError(path, "not a DICOM file (no DICM marker, no image attributes)")
        raise DecodeError(path, "DICOM file has no pixel data (truncated, or not an image)")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _check_megapixels(path, cols, rows, max_megapixels)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise DecodeError(path, f"multi-frame DICOM ({ds.NumberOfFrames} frames) is not a single radiograph")
    arr = _dicom_pixels(path, ds)
    if arr.ndim == 3:  # colour secondary capture of a film: luminance
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return _dicom_to_unit(path, ds, arr)


def _dicom_pixels(path: Path, ds) -> np.ndarray:
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        return ds.pixel_array  # honours BitsStored, PixelRepresentation (sign extension), planar configuration
    except (NotImplementedError, RuntimeError) as e:
        if tsyntax is not None and tsyntax.is_compressed:
            raise DecodeError(path, f"no decoder for compressed transfer syntax {tsyntax.name} ({tsyntax}); "
                                    f"{CODEC_HINT}") from None
        raise DecodeError(path, f"cannot decode pixel data ({e})") from None
    except Exception as e:  # noqa: BLE001 - short reads surface as ValueError/EOFError/OSError/struct.error
        raise DecodeError(path, f"corrupt or truncated DICOM pixel data ({type(e).__name__}: {e})") from None


def _dicom_to_unit(path: Path, ds, arr: np.ndarray) -> np.ndarray:
    """Modality LUT/rescale → VOI LUT or window → [0, 1] → MONOCHROME1 inverted. float32 throughout (exact for
    stored values < 2**24): a 2000x2000 radiograph costs a few passes of memory bandwidth, not float64 maths."""
    from pydicom.pixels import apply_modality_lut, apply_voi
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    mono = photometric in ("MONOCHROME1", "MONOCHROME2")
    try:
        x = apply_modality_lut(arr, ds) if mono else arr
        if mono and ds.get("VOILUTSequence"):  # LUTs index integer values
            out = apply_voi(np.round(x).astype(np.int64) if x.dtype.kind == "f" else x, ds).astype(np.float32)
            scale, offset = 1.0 / float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1), 0.0
        else:
            out = x.astype(np.float32)
            if mono and "WindowCenter" in ds and "WindowWidth" in ds:
                func = str(ds.get("VOILUTFunction", "LINEAR")).upper()
                if func == "SIGMOID":  # PS3.3 C.11.2.1.3.1
                    width = max(_first(ds.WindowWidth), 1e-6)
                    return _polarity(ds, photometric, 1.0 / (1.0 + np.exp(-4.0 * (out - _first(ds.WindowCenter))
                                                                           / width)))
                scale, offset = _window_affine(_first(ds.WindowCenter), _first(ds.WindowWidth), func)
            else:  # no VOI: the image's own range
                lo, hi = float(out.min()), float(out.max())
                scale = 1.0 / (hi - lo) if hi > lo else 0.0
                offset = -lo * scale
    except (ValueError, TypeError, IndexError, AttributeError) as e:
        raise DecodeError(path, f"invalid DICOM LUT/window attributes ({e})") from None
    out *= np.float32(scale)
    out += np.float32(offset)
    return _polarity(ds, photometric, out)


def _polarity(ds, photometric: str, out: np.ndarray) -> np.ndarray:
    """Clip to [0, 1]; MONOCHROME1 (low values bright) is inverted to radiographic polarity, and an INVERSE
    presentation LUT flips once more."""
    out = np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)
    if (photometric == "MONOCHROME1") != (str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"):
        np.subtract(np.float32(1.0), out, out=out)
    return out


def _first(v) -> float:
    return float(v[0]) if isinstance(v, (list, tuple)) or getattr(v, "VM", 1) > 1 else float(v)


def _window_affine(center: float, width: float, func: str) -> tuple[float, float]:
    """(scale, offset) with output = x * scale + offset, before clipping: DICOM PS3.3 C.11.2.1.2 mapped to [0, 1]."""
    if func == "LINEAR_EXACT":
        width = max(width, 1e-6)
        return 1.0 / width, 0.5 - center / width
    width = max(width - 1.0, 1e-6)  # LINEAR
    return 1.0 / width, 0.5 - (center - 0.5) / width


def dicom_meta(ds) -> dict[str, str]:
    """The few header fields safe to store: view and modality. Never names, ids, dates, accession, institution."""
    view = normalize_view(ds.get("ViewPosition"))
    out = {"view": view, "modality": str(ds.get("Modality", "") or "")}
    body = ds.get("BodyPartExamined")
    if body:
        out["body_part"] = str(body)
    return out


def read_dicom_header(path: str | Path):
    """Header only (no pixel data), for cheap enumeration; raises DecodeError."""
    import pydicom
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as e:  # noqa: BLE001 - any parser failure is a bad input
        raise DecodeError(path, f"not a readable DICOM header ({type(e).__name__}: {e})") from None
