"""VinDr-RibCXR: 20 rib polygons per frontal radiograph."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..labels import RIBS
from .base import Source, SourceItem, image_index, polygon_mask, safe_key

_SPLITS = {"train": "trainval", "val": "test", "test": "test"}


def _points(poly: Any) -> list[tuple[float, float]]:
    """[{'x': .., 'y': ..}, ...] or [[x, y], ...] → [(x, y), ...]."""
    if not poly:
        return []
    return [(float(p["x"]), float(p["y"])) if isinstance(p, dict) else (float(p[0]), float(p[1])) for p in poly]


def read_rib_json(path: Path) -> list[dict]:
    """The official mask JSON ({'img': {row: path}, 'R1': {row: polygon}, …}, a pandas column dict) or a list of
    {'img': path, 'R1': polygon, …} records → [{'img': str, 'ribs': {name: [(x, y), …]}}]."""
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        rows = sorted(data["img"], key=lambda k: int(k) if str(k).isdigit() else str(k))
        data = [{col: data[col].get(r) for col in data if isinstance(data[col], dict)} for r in rows]
    out = []
    for rec in data:
        ribs = {name: _points(rec.get(name)) for name in RIBS}
        out.append({"img": rec["img"], "ribs": {k: v for k, v in ribs.items() if len(v) >= 3}})
    return out


class VindrRibCxrSource(Source):
    """vindr-ribcxr: ROOT = VinDr-RibCXR with {train,val}/img/*.png and {train,val}/Vindr_RibCXR_{train,val}_mask.json
    (the official JSON: image path and one polygon per rib R1–R10, L1–L10, in pixel coordinates).

    Masks: 20 rib masks named R1..R10, L1..L10 (data.labels.RIBS), rasterised at the image's own size and resized
    with the image. Split: the official 196 train → train/val, the official 49 val → test (the paper's test set).
    """

    name = "vindr-ribcxr"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.jsons = sorted(self.root.rglob("*RibCXR*mask*.json")) or sorted(self.root.rglob("*mask*.json"))
        if not self.jsons:
            raise FileNotFoundError(f"no Vindr_RibCXR_*_mask.json under {self.root}")

    def items(self) -> Iterator[SourceItem]:
        images = image_index(self.root, (".png", ".jpg"))
        for js in self.jsons:
            split = next((v for k, v in _SPLITS.items() if k in js.stem.lower().split("_")), None)
            for rec in read_rib_json(js):
                stem = Path(rec["img"]).stem
                path = images.get(stem, js.parent / rec["img"])
                yield SourceItem(key=safe_key(stem), patient=stem, split=split, view="PA", path=path,
                                 meta={"polygons": rec["ribs"]})

    def masks_for(self, item: SourceItem, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        return {name: polygon_mask(pts, shape) for name, pts in item.meta["polygons"].items()}
