"""RSNA Pneumonia Detection Challenge."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..decode import DecodeError, normalize_view, read_dicom_header
from .base import Source, SourceItem, find_files, find_one, read_csv, safe_key


class RsnaSource(Source):
    """rsna: ROOT = the RSNA Pneumonia challenge folder with stage_2_train_labels.csv (patientId, x, y, width,
    height, Target; several rows per image) and stage_2_train_images/{patientId}.dcm next to it (Kaggle's
    download; ROOT may be a level up).

    Labels: Pneumonia = 1 when any row of the image has Target 1; the boxes are kept in extra.boxes as fractions
    of the image width/height [x, y, width, height], so they survive resizing. View from the DICOM header. Split: train/val/test at patient level
    (the challenge's test labels are not public).
    """

    name = "rsna"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.csv = find_one(self.root, ("stage_2_train_labels.csv", "stage_1_train_labels.csv"),
                            "the RSNA train labels CSV", source=self)
        folder = self.csv.name.replace("_labels.csv", "_images")
        self.images = self.csv.parent / folder  # the challenge's layout: images next to the labels CSV
        if not self.images.is_dir():
            hits = find_files(self.root, (folder,), dirs=True)
            if not hits:
                raise FileNotFoundError(f"no {folder}/ next to {self.csv} (where the labels CSV was found) nor under "
                                        f"{self.root}: expected the RSNA DICOMs in {self.images}")
            self.images = hits[0]

    def items(self) -> Iterator[SourceItem]:
        rows: dict[str, list[dict]] = {}
        for r in read_csv(self.csv):
            rows.setdefault(r["patientId"], []).append(r)
        for pid, rs in rows.items():
            target = max(int(float(r["Target"])) for r in rs)
            boxes = [[float(r[k]) for k in ("x", "y", "width", "height")] for r in rs if r["x"]]
            path = self.images / f"{pid}.dcm"
            view = "UNKNOWN"
            if path.is_file():
                try:
                    view = normalize_view(read_dicom_header(path).get("ViewPosition"))
                except DecodeError:
                    pass  # rejected with its reason at load time
            yield SourceItem(key=safe_key(pid), patient=pid, split=None, view=view, path=path,
                             meta={"labels": {"Pneumonia": target}, "boxes": boxes})

    def load(self, item: SourceItem):
        rec = super().load(item)
        h, w = rec.image.shape
        if item.meta.get("boxes"):
            rec.extra["boxes"] = [[round(x / w, 5), round(y / h, 5), round(bw / w, 5), round(bh / h, 5)]
                                  for x, y, bw, bh in item.meta["boxes"]]
        return rec
