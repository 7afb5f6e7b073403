"""PadChest (BIMCV)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

from .base import Source, SourceItem, find_one, image_index, read_csv, safe_key

# PadChest's terms → our label names (several terms may map to one label). Only positives are in the term
# lists, so a mapped label is 0 when none of its terms is present in a labelled row.
TERMS = {
    "normal": "No Finding", "cardiomegaly": "Cardiomegaly", "pleural effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax", "atelectasis": "Atelectasis", "consolidation": "Consolidation",
    "pneumonia": "Pneumonia", "nodule": "Lung Lesion", "mass": "Lung Lesion", "pulmonary mass": "Lung Lesion",
    "pulmonary edema": "Edema", "alveolar pattern": "Lung Opacity", "infiltrates": "Lung Opacity",
    "interstitial pattern": "Lung Opacity", "ground glass pattern": "Lung Opacity", "pleural thickening":
    "Pleural Thickening", "apical pleural thickening": "Pleural Thickening", "aortic button enlargement":
    "Aortic Enlargement", "aortic elongation": "Aortic Enlargement", "pulmonary fibrosis": "Pulmonary Fibrosis",
    "fracture": "Fracture", "rib fracture": "Fracture", "clavicle fracture": "Fracture",
    "vertebral fracture": "Fracture", "humeral fracture": "Fracture",
}
_VIEWS = {"PA": "PA", "AP": "AP", "AP_horizontal": "AP_SUPINE", "L": "LATERAL"}


def parse_terms(value: str) -> list[str] | None:
    """"['normal']" → ['normal']; blank/NaN → None (unlabelled row)."""
    value = (value or "").strip()
    if not value or value.lower() == "nan":
        return None
    return [t.strip().lower() for t in ast.literal_eval(value) if isinstance(t, str) and t.strip()]


class PadChestSource(Source):
    """padchest: ROOT = PadChest with PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz] and the 16-bit
    PNGs in the numbered folders ({ImageDir}/{ImageID}, or anywhere under ROOT by file name).

    Labels: PadChest terms mapped onto CheXpert/VinDr names (raw terms kept in extra.padchest_terms). View from
    Projection (PA, AP, AP_horizontal → AP_SUPINE, L → LATERAL). PNGs are scaled by the DICOM's BitsStored, so 12-bit
    data in a 16-bit file is not left dark. No official split. A few PadChest files are corrupt: they are rejected.
    """

    name = "padchest"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.csv = find_one(self.root, ("PADCHEST_chest_x_ray_images_labels_*.csv*",), "PadChest's labels CSV",
                            source=self)

    def items(self) -> Iterator[SourceItem]:
        index = None
        for i, r in enumerate(read_csv(self.csv)):
            name = r["ImageID"]
            path = self.csv.parent / r.get("ImageDir", "") / name  # the numbered folders sit beside the CSV
            if not path.is_file():
                index = index if index is not None else image_index(self.root, (".png",))
                path = index.get(Path(name).stem, path)
            try:
                terms = parse_terms(r.get("Labels", ""))
            except (ValueError, SyntaxError):
                raise ValueError(f"{self.csv} row {i + 2}: unreadable Labels {r.get('Labels')!r}") from None
            labels = {}
            if terms is not None:
                labels = {lab: 0 for lab in TERMS.values()}
                for t in terms:
                    if t in TERMS:
                        labels[TERMS[t]] = 1
            bits = r.get("BitsStored_DICOM", "")
            yield SourceItem(
                key=safe_key(Path(name).stem), patient=r["PatientID"], split=None,
                view=_VIEWS.get(r.get("Projection", ""), "UNKNOWN"), path=path,
                meta={"study": r.get("StudyID", ""), "labels": labels,
                      "extra": {"padchest_terms": terms or []},
                      "bits_stored": int(float(bits)) if bits.replace(".", "").isdigit() else None})

    def load(self, item: SourceItem):
        rec = super().load(item)
        bits = item.meta.get("bits_stored")
        if bits and 8 < bits < 16:  # 16-bit container holding BitsStored-bit values: stretch to [0, 1]
            full = (2 ** bits - 1) / 65535.0
            if rec.image.max() <= full + 1e-6:
                rec.image = (rec.image / full).clip(0, 1)
        return rec
