"""CheXpert (Stanford)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..labels import CHEXPERT_14
from .base import Source, SourceItem, read_csv, require, row_labels, safe_key

_FILES = (("train.csv", "train"), ("valid.csv", "val"), ("test.csv", "test"))


class ChexpertSource(Source):
    """chexpert: ROOT = the CheXpert folder (CheXpert-v1.0 or -small) with train.csv, valid.csv (optional test.csv)
    and the train/ valid/ image trees; the CSV's Path column (CheXpert-v1.0-small/train/patient00001/study1/
    view1_frontal.jpg) is resolved against ROOT or its parent.

    Labels: the 14 CheXpert columns (1, 0, -1 uncertain, blank). Split: train.csv → train, valid.csv → val.
    View: Frontal/Lateral and AP/PA columns.
    """

    name = "chexpert"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        require(self.root / "train.csv", "CheXpert's train.csv in ROOT")

    def _resolve(self, rel: str) -> Path:
        p = Path(rel)
        for cand in (self.root / p, self.root.parent / p, self.root / Path(*p.parts[1:])):
            if cand.exists():
                return cand
        return self.root / Path(*p.parts[1:])  # missing file: load() rejects it with its path

    def items(self) -> Iterator[SourceItem]:
        for fname, split in _FILES:
            csv = self.root / fname
            if not csv.is_file():
                continue
            for i, r in enumerate(read_csv(csv)):
                parts = Path(r["Path"]).parts  # .../train/patient00001/study1/view1_frontal.jpg
                patient, study = parts[-3], parts[-2]
                lateral = r.get("Frontal/Lateral", "").strip().lower() == "lateral"
                view = "LATERAL" if lateral else {"AP": "AP", "PA": "PA", "LL": "LL"}.get(r.get("AP/PA", ""), "UNKNOWN")
                yield SourceItem(
                    key=safe_key(split, patient, study, Path(parts[-1]).stem), patient=patient, split=split, view=view,
                    path=self._resolve(r["Path"]),
                    meta={"study": f"{patient}_{study}", "labels": row_labels(r, CHEXPERT_14, f"{csv} row {i + 2}: ")})
