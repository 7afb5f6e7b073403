"""Chest ImaGenome: scene-graph bounding boxes on MIMIC-CXR-JPG images → six lung-zone masks."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from ..decode import normalize_view
from .base import Source, SourceItem, box_mask, read_csv, safe_key, shallow_glob

ZONES = {  # ImaGenome bbox_name → data.labels.LUNG_ZONES
    "right upper lung zone": "right_upper", "right mid lung zone": "right_middle",
    "right lower lung zone": "right_lower", "left upper lung zone": "left_upper",
    "left mid lung zone": "left_middle", "left lower lung zone": "left_lower",
}
_SPLITS = {"train": "train", "valid": "val", "val": "val", "test": "test"}


def zone_boxes(scene_graph: dict) -> dict[str, list[float]]:
    """{zone: [x1, y1, x2, y2]} in original-image pixels from a scene graph's objects."""
    out = {}
    for obj in scene_graph.get("objects", []):
        zone = ZONES.get(str(obj.get("bbox_name", "")).lower())
        if zone and all(k in obj for k in ("original_x1", "original_y1", "original_x2", "original_y2")):
            out[zone] = [float(obj[k]) for k in ("original_x1", "original_y1", "original_x2", "original_y2")]
    return out


class ImagenomeSource(Source):
    """imagenome: ROOT = a folder holding Chest ImaGenome (silver_dataset/scene_graph/{dicom_id}_SceneGraph.json,
    optional silver_dataset/splits/{train,valid,test}.csv) and the MIMIC-CXR-JPG images
    (files/p10/p10000032/s50414267/{dicom_id}.jpg, anywhere under ROOT).

    Masks: the six lung zones (right/left upper, middle, lower → data.labels.LUNG_ZONES) from the scene graph's
    original-resolution bounding boxes. Split: ImaGenome's official splits when present, else patient-level.
    """

    name = "imagenome"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.graphs = sorted(self.root.rglob("*_SceneGraph.json"))
        if not self.graphs:
            raise FileNotFoundError(f"no *_SceneGraph.json under {self.root}: expected Chest ImaGenome scene graphs")

    def _splits(self) -> dict[str, str]:
        out = {}
        for csv in shallow_glob(self.root, "splits/*.csv"):
            split = _SPLITS.get(csv.stem.lower())
            if split:
                for r in read_csv(csv):
                    if r.get("dicom_id"):
                        out[r["dicom_id"]] = split
        return out

    def _files_dirs(self) -> list[Path]:
        return [d for d in shallow_glob(self.root, "files") if d.is_dir()]

    def items(self) -> Iterator[SourceItem]:
        splits, files = self._splits(), self._files_dirs()
        for g in self.graphs:
            sg = json.loads(g.read_text())
            dicom = sg.get("image_id") or g.name.replace("_SceneGraph.json", "")
            sid, study = str(sg.get("patient_id", "")), str(sg.get("study_id", ""))
            rel = Path(f"p{sid[:2]}", f"p{sid}", f"s{study}", f"{dicom}.jpg")
            path = next((d / rel for d in files if (d / rel).is_file()), (files[0] if files else self.root) / rel)
            yield SourceItem(key=safe_key(dicom), patient=sid or dicom, split=splits.get(dicom),
                             view=normalize_view(sg.get("viewpoint")),
                             path=path, meta={"study": study, "boxes": zone_boxes(sg)})

    def masks_for(self, item: SourceItem, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        return {zone: box_mask(*box, shape) for zone, box in item.meta["boxes"].items()}
