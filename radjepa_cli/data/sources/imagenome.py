"""Chest ImaGenome: scene-graph bounding boxes on MIMIC-CXR-JPG images → six lung-zone masks."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from ..decode import DecodeError, normalize_view
from .base import Source, SourceItem, box_mask, find_files, read_csv, safe_key, shallow_glob

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
    silver_dataset/splits/{train,valid,test,images_to_avoid}.csv) and the MIMIC-CXR-JPG images
    (files/p10/p10000032/s50414267/{dicom_id}.jpg, anywhere under ROOT) with mimic-cxr-2.0.0-metadata.csv[.gz].

    Masks: the six lung zones (right/left upper, middle, lower → data.labels.LUNG_ZONES) from the scene graph's
    original-resolution bounding boxes, scaled to the image when it is a resized copy (metadata Rows/Columns =
    the original size; a copy with another aspect ratio, or boxes outside the image without the metadata, is
    refused). The gold-standard images (images_to_avoid.csv) are left out. Split: ImaGenome's official splits when
    present, else patient-level.
    """

    name = "imagenome"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        folders = find_files(self.root, ("scene_graph",), dirs=True)  # not a walk through the MIMIC images
        self.graphs = sorted(folders[0].glob("*_SceneGraph.json")) if folders else []
        self.graphs = self.graphs or sorted(self.root.rglob("*_SceneGraph.json"))
        if not self.graphs:
            raise FileNotFoundError(f"no *_SceneGraph.json under {self.root}: expected Chest ImaGenome scene graphs")

    def _splits(self) -> tuple[dict[str, str], set[str]]:
        out, avoid = {}, set()
        for csv in shallow_glob(self.root, "splits/*.csv"):
            split = _SPLITS.get(csv.stem.lower())
            if split or csv.stem.lower() == "images_to_avoid":
                self.note(f"read {csv}")
                for r in read_csv(csv):
                    if r.get("dicom_id"):
                        out[r["dicom_id"]] = split
                        if not split:
                            avoid.add(r["dicom_id"])
        if not out:
            self.warn(f"no silver_dataset/splits/{{train,valid,test}}.csv under {self.root}: ImaGenome's official "
                      "split is unknown, so a hashed patient-level split is used")
        if not avoid:
            self.warn(f"no splits/images_to_avoid.csv under {self.root}: ImaGenome's gold-standard images cannot be "
                      "kept out of the training split")
        return {k: v for k, v in out.items() if v}, avoid

    def _files_dirs(self) -> list[Path]:
        return [d for d in shallow_glob(self.root, "files") if d.is_dir()]

    def _original_sizes(self, dicoms: set[str]) -> dict[str, tuple[int, int]]:
        """{dicom_id: (Rows, Columns)} of the original DICOMs, which the scene graphs' coordinates refer to."""
        hits = find_files(self.root, ("mimic-cxr-2.0.0-metadata.csv*",))
        if not hits:
            self.warn(f"no mimic-cxr-2.0.0-metadata.csv under {self.root}: image sizes cannot be checked against "
                      "the scene graphs' original coordinates; a resized copy is refused only where a box falls "
                      "outside the image")
            return {}
        self.note(f"read {hits[0]}")
        return {r["dicom_id"]: (int(float(r["Rows"])), int(float(r["Columns"])))
                for r in read_csv(hits[0]) if r["dicom_id"] in dicoms and r.get("Rows") and r.get("Columns")}

    def items(self) -> Iterator[SourceItem]:
        (splits, avoid), files = self._splits(), self._files_dirs()
        graphs = [(g, json.loads(g.read_text())) for g in self.graphs]
        ids = {sg.get("image_id") or g.name.replace("_SceneGraph.json", "") for g, sg in graphs}
        sizes = self._original_sizes(ids)
        skipped = 0
        for g, sg in graphs:
            dicom = sg.get("image_id") or g.name.replace("_SceneGraph.json", "")
            if dicom in avoid:
                skipped += 1
                continue
            sid, study = str(sg.get("patient_id", "")), str(sg.get("study_id", ""))
            rel = Path(f"p{sid[:2]}", f"p{sid}", f"s{study}", f"{dicom}.jpg")
            path = next((d / rel for d in files if (d / rel).is_file()), (files[0] if files else self.root) / rel)
            yield SourceItem(key=safe_key(dicom), patient=sid or dicom, split=splits.get(dicom),
                             view=normalize_view(sg.get("viewpoint")), path=path,
                             meta={"study": study, "boxes": zone_boxes(sg), "original_size": sizes.get(dicom)})
        if skipped:
            self.note(f"left out {skipped} gold-standard image(s) listed in images_to_avoid.csv")

    def masks_for(self, item: SourceItem, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        boxes = scaled_boxes(item.meta["boxes"], shape, item.meta.get("original_size"), item.path)
        return {zone: box_mask(*box, shape) for zone, box in boxes.items()}


def scaled_boxes(boxes: dict[str, list[float]], shape: tuple[int, int], original: tuple[int, int] | None,
                 path) -> dict[str, list[float]]:
    """Original-resolution boxes → this image's pixels. `original` = the DICOM's (Rows, Columns); a copy resized
    with another aspect ratio, or (without `original`) boxes reaching outside the image, raise DecodeError."""
    h, w = shape
    if original is None:
        far = max([max(b[2] / w, b[3] / h) for b in boxes.values()], default=0)
        if far > 1.02:
            raise DecodeError(path, f"image is {w}x{h} but its lung-zone boxes reach {far:.1f}x beyond it: a resized "
                                    "MIMIC-CXR-JPG copy? put mimic-cxr-2.0.0-metadata.csv under ROOT so the boxes "
                                    "can be scaled")
        return boxes
    rows, cols = original
    sx, sy = w / cols, h / rows
    if abs(sx / sy - 1) > 0.02:
        raise DecodeError(path, f"image is {w}x{h} but the original is {cols}x{rows} (another aspect ratio: cropped?);"
                                " the lung-zone boxes cannot be placed")
    return {z: [x0 * sx, y0 * sy, x1 * sx, y1 * sy] for z, (x0, y0, x1, y1) in boxes.items()}
