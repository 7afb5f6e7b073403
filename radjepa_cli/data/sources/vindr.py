"""VinDr-CXR (VinBigData)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterator

from ..labels import VINDR_6
from .base import Source, SourceItem, find_files, read_csv, safe_key

_CANON = {n.lower(): n for n in VINDR_6} | {"no finding": "No Finding"}
# Spellings that differ between VinDr's own tables: PhysioNet's image_labels_test.csv says "Other disease" where
# image_labels_train.csv says "Other diseases"; train and test shards must carry one key.
_ALIASES = {"other disease": "Other diseases", "other diseases": "Other diseases"}
_META_COLS = {"image_id", "rad_id", "rad_ID", "class_name", "class_id", "x_min", "y_min", "x_max", "y_max"}


def canonical(name: str) -> str:
    """VinDr's 'Pleural thickening' → our 'Pleural Thickening' (the paper's six + No Finding), one name for the
    spellings that differ across VinDr's splits ('Other disease(s)'); others unchanged."""
    key = " ".join(name.split()).lower()
    return _CANON.get(key) or _ALIASES.get(key) or " ".join(name.split())


class VindrCxrSource(Source):
    """vindr-cxr: ROOT = VinDr-CXR with train/ and test/ DICOMs ({image_id}.dicom) and either PhysioNet's
    annotations/image_labels_{train,test}.csv (one row per reader, a 0/1 column per finding) or Kaggle's
    train.csv (image_id, class_name, rad_id, box: one row per finding per reader); ROOT may be a level above.

    Labels: union over readers (positive when any reader marked it) for every finding; the paper's six (Lung
    Opacity, Cardiomegaly, Pleural Thickening, Aortic Enlargement, Pulmonary Fibrosis, Pleural Effusion) use our
    label names. Split: official train → train/val (patient-level = image-level), test → test. View: PA.
    """

    name = "vindr-cxr"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        anchor = find_files(self.root, ("image_labels_train.csv", "image_labels_test.csv", "train.csv"))
        if not anchor:
            raise FileNotFoundError(f"no annotations/image_labels_train.csv or train.csv in {self.root} or up to 4 "
                                    "folders below it: expected VinDr-CXR's label tables")
        # the dataset's own folder: annotations/ and the train/ test/ image folders are relative to it
        self.base = anchor[0].parent.parent if anchor[0].parent.name == "annotations" else anchor[0].parent

    def _tables(self) -> list[tuple[str, Path, str]]:
        found = []
        for split, official in (("train", "trainval"), ("test", "test")):
            for cand in (self.base / "annotations" / f"image_labels_{split}.csv",
                         self.base / f"image_labels_{split}.csv"):
                if cand.is_file():
                    found.append((official, cand, "wide"))
                    break
            else:
                if (self.base / f"{split}.csv").is_file():
                    found.append((official, self.base / f"{split}.csv", "long"))
        for _, csv, _ in found:
            self.note(f"read {csv}")
        if not any(split == "test" for split, _, _ in found):
            self.warn(f"no VinDr-CXR test labels (annotations/image_labels_test.csv) under {self.base}: no official "
                      "test split, so only train/val shards are written")
        return found

    def _image(self, split_dir: str, image_id: str) -> Path:
        for ext in (".dicom", ".dcm", ".png", ".jpg"):
            p = self.base / split_dir / f"{image_id}{ext}"
            if p.is_file():
                return p
        return self.base / split_dir / f"{image_id}.dicom"

    def items(self) -> Iterator[SourceItem]:
        for official, csv, kind in self._tables():
            union: dict[str, dict[str, int]] = defaultdict(dict)
            names: set[str] = set()
            for r in read_csv(csv):
                pos = union[r["image_id"]]
                if kind == "wide":
                    for col, v in r.items():
                        if col not in _META_COLS and v not in ("", None):
                            names.add(canonical(col))
                            pos[canonical(col)] = max(pos.get(canonical(col), 0), int(float(v)))
                else:
                    names.add(canonical(r["class_name"]))
                    pos[canonical(r["class_name"])] = 1
            split_dir = "train" if official == "trainval" else "test"
            for image_id in sorted(union):
                labels = {n: union[image_id].get(n, 0) for n in sorted(names | set(VINDR_6))}
                yield SourceItem(key=safe_key(image_id), patient=image_id, split=official, view="PA",
                                 path=self._image(split_dir, image_id), meta={"labels": labels})
