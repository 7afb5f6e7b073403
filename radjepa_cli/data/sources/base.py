"""The contract every dataset source implements: cheap enumeration (`items`) + per-item loading (`load`).

A source maps one dataset's own files onto `SourceItem`s; the prepare-data pipeline assigns splits, hashes patient
ids with a salt, filters, resizes and writes shards. Sources run inside worker processes, so they must be picklable:
keep only paths and small tables as attributes, never open file handles.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..decode import DecodeError, decode_image
from ..record import Record

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class SourceItem:
    key: str                  # unique within the dataset, filesystem/tar-safe
    patient: str              # RAW patient id: the pipeline salts+hashes it; never written raw
    split: str | None         # official split ("train"/"val"/"test") or None -> deterministic patient-level split
    #                           ("trainval": an official train set that the pipeline splits into train/val)
    view: str = "UNKNOWN"     # PA | AP | LATERAL | LL | AP_SUPINE | UNKNOWN
    path: Path | None = None  # image file to decode (None when the source renders pixels itself)
    meta: dict = field(default_factory=dict)  # labels, findings, impression, study, extra, mask specs ...


class Source:
    """Base class. Subclasses set `name` and implement `items()`; most keep the default `load()`.

    `load` turns an item into a Record with the decoded image and `item.meta` (labels, findings, impression, study,
    extra, masks). Masks can be given in meta as arrays ('masks') or, cheaper to enumerate, as callables of the
    decoded image shape via `mask_fn(item, shape) -> {name: bool array}` overridden by a subclass.
    """

    name: str = "source"
    max_megapixels: float = 200.0

    def note(self, text: str) -> None:
        """What the source read or decided (printed by prepare-data and kept in the manifest)."""
        self.__dict__.setdefault("notes", []).append(text)

    def warn(self, text: str) -> None:
        """Something the user must know, e.g. an official split list is absent and a hashed split is used."""
        self.__dict__.setdefault("warnings", []).append(text)

    def items(self) -> Iterator[SourceItem]:
        raise NotImplementedError

    def load(self, item: SourceItem) -> Record:
        if item.path is None:
            raise DecodeError(item.key, f"source {self.name} gave no image path for this item")
        image = decode_image(item.path, max_megapixels=self.max_megapixels)
        m = item.meta
        masks = dict(m.get("masks") or {})
        masks.update(self.masks_for(item, image.shape))
        return Record(
            key=item.key, image=image, dataset=self.name, view=item.view, study=str(m.get("study", "")),
            split=item.split or "train", labels=dict(m.get("labels") or {}), findings=m.get("findings", "") or "",
            impression=m.get("impression", "") or "", masks=masks, extra=dict(m.get("extra") or {}),
        )

    def masks_for(self, item: SourceItem, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """Masks rendered at the decoded image's size (polygon/box sources override this)."""
        return {}


# ------------------------------------------------------------------------------------------- shared helpers

def safe_key(*parts: Any) -> str:
    """A tar/filesystem-safe key: WebDataset splits on the first '.', so only [A-Za-z0-9_-] survive."""
    key = "_".join(_UNSAFE.sub("-", str(p)).strip("-") for p in parts if str(p) != "")
    if not key:
        raise ValueError(f"empty key from {parts!r}")
    return key


def require(path: Path, what: str) -> Path:
    """Fail early, naming the file the dataset layout needs."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: expected {what}")
    return path


def find_files(root: Path, patterns: tuple[str, ...], depth: int = 4, dirs: bool = False) -> list[Path]:
    """Files (or, with dirs=True, folders) matching the globs in `patterns`, searched breadth-first at most `depth`
    folders below root: the shallowest level with a match wins, and there the earliest pattern (callers list an
    official file's newest version first). Folders of more than BIG_FOLDER entries (image trees) are not entered,
    so looking for a CSV next to 377K images costs a few listings, not a walk."""
    import fnmatch
    level = [root]
    for _ in range(depth + 1):
        entries = []  # (path, is_dir)
        for folder in level:
            try:
                with os.scandir(folder) as it:
                    entries.extend((Path(e.path), e.is_dir()) for e in it)
            except OSError:
                continue
        for pat in patterns:
            hits = sorted(p for p, is_dir in entries if is_dir == dirs and fnmatch.fnmatch(p.name, pat))
            if hits:
                return hits
        level = [p for p, is_dir in entries if is_dir and not p.name.startswith(".") and _small(p)]
        if not level:
            break
    return []


BIG_FOLDER = 5000


def _small(folder: Path) -> bool:
    try:
        with os.scandir(folder) as it:
            return sum(1 for _ in zip(range(BIG_FOLDER + 1), it)) <= BIG_FOLDER
    except OSError:
        return False


def find_one(root: Path, patterns: tuple[str, ...], what: str, source: "Source | None" = None) -> Path:
    """The file a dataset is anchored on (see find_files), noted on `source` as read; FileNotFoundError naming
    the patterns and ROOT when absent."""
    hits = find_files(root, patterns)
    if not hits:
        raise FileNotFoundError(f"no {' or '.join(patterns)} in {root} or up to 4 folders below it: expected {what}")
    if source is not None:
        others = sorted({h.name for pat in patterns for h in find_files(hits[0].parent, (pat,), depth=0)}
                        - {hits[0].name})
        source.note(f"read {hits[0]}" + (f" (newest official version; also present: {', '.join(others)})"
                                          if others else ""))
    return hits[0]


def row_labels(row: dict[str, str], names, where: str = "") -> dict[str, int | None]:
    """Label columns of a CSV row onto the 1/0/-1/None contract (CheXpert-style 1.0 / 0.0 / -1.0 / blank)."""
    from ..labels import normalize_value
    out = {}
    for name in names:
        if name in row:
            try:
                out[name] = normalize_value(row[name])
            except ValueError as e:
                raise ValueError(f"{where}column {name!r}: {e}") from None
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    """CSV rows as dicts (plain or .gz)."""
    import gzip
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def shallow_glob(root: Path, pattern: str, depth: int = 4) -> list[Path]:
    """Matches of `pattern` at most `depth` folders below root (no walk through a 377K-image tree)."""
    hits: list[Path] = []
    for d in range(depth + 1):
        hits.extend(sorted(root.glob("/".join(["*"] * d + [pattern]))))
    return hits


def image_index(root: Path, exts: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm")) -> dict[str, Path]:
    """Map file stem → path for every image under root (datasets that name files by id but nest them in folders).
    One os.walk (directory entries carry their type: no stat per file)."""
    out: dict[str, Path] = {}
    for folder, subdirs, files in os.walk(root):
        subdirs.sort()
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext.lower() in exts and stem not in out:
                out[stem] = Path(folder, f)
    return out


def polygon_mask(points, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise one polygon [(x, y), ...] in pixel coordinates to a bool mask of `shape`."""
    from PIL import Image, ImageDraw
    h, w = shape
    img = Image.new("L", (w, h), 0)
    pts = [(float(x), float(y)) for x, y in points]
    if len(pts) >= 3:
        ImageDraw.Draw(img).polygon(pts, fill=1, outline=1)
    return np.asarray(img, dtype=bool)


def box_mask(x0: float, y0: float, x1: float, y1: float, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    m = np.zeros(shape, bool)
    r0, r1 = max(0, int(round(y0))), min(h, int(round(y1)))
    c0, c1 = max(0, int(round(x0))), min(w, int(round(x1)))
    m[r0:r1, c0:c1] = True
    return m
