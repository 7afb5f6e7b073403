"""MIMIC-CXR-JPG (+ MIMIC-CXR reports)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..decode import normalize_view
from ..labels import CHEXPERT_14
from .base import Source, SourceItem, find_files, find_one, read_csv, row_labels, safe_key
from .reports import report_sections

_SPLITS = {"train": "train", "validate": "val", "val": "val", "test": "test"}


class MimicCxrSource(Source):
    """mimic-cxr: ROOT = MIMIC-CXR-JPG: mimic-cxr-2.0.0-{metadata,chexpert,split}.csv[.gz] and
    files/p10/p10000032/s50414267/{dicom_id}.jpg; reports (optional) as files/p10/p10000032/s50414267.txt, either in
    the same files/ tree or in ROOT/mimic-cxr-reports/files/.

    Rows are joined on (subject_id, study_id, dicom_id); CheXpert labels per study; official split
    (train/validate/test → train/val/test); FINDINGS/IMPRESSION parsed from the report.
    """

    name = "mimic-cxr"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.metadata = find_one(self.root, ("mimic-cxr-2.0.0-metadata.csv*",), "the MIMIC-CXR-JPG metadata CSV",
                                 source=self)
        base = self.metadata.parent  # the other parts are looked for next to it first (ROOT may be a level up)
        self.chexpert = find_one(base if find_files(base, ("mimic-cxr-2.0.0-chexpert.csv*",), 0) else self.root,
                                 ("mimic-cxr-2.0.0-chexpert.csv*",), "the MIMIC-CXR-JPG chexpert CSV", source=self)
        self.split = find_one(base if find_files(base, ("mimic-cxr-2.0.0-split.csv*",), 0) else self.root,
                              ("mimic-cxr-2.0.0-split.csv*",), "the MIMIC-CXR-JPG split CSV", source=self)
        self.files = base / "files"
        reports = [base / "mimic-cxr-reports" / "files", self.root / "mimic-cxr-reports" / "files",
                   self.root / "files", self.files]
        self.reports = [r for r in reports if r.is_dir()]

    def items(self) -> Iterator[SourceItem]:
        labels, seen = {}, {}  # 227K studies share a few thousand label rows: parse each distinct row once
        for r in read_csv(self.chexpert):
            values = tuple(r.get(n) for n in CHEXPERT_14)
            if values not in seen:
                seen[values] = row_labels(r, CHEXPERT_14, f"{self.chexpert}: ")
            labels[(r["subject_id"], r["study_id"])] = seen[values]
        splits = {r["dicom_id"]: _SPLITS[r["split"]] for r in read_csv(self.split)}
        files = str(self.files)
        for r in read_csv(self.metadata):
            sid, study, dicom = r["subject_id"], r["study_id"], r["dicom_id"]
            rel = f"p{sid[:2]}/p{sid}/s{study}"  # one Path per row, not four joins: 377K rows
            yield SourceItem(
                key=safe_key(dicom), patient=sid, split=splits.get(dicom), view=normalize_view(r.get("ViewPosition")),
                path=Path(f"{files}/{rel}/{dicom}.jpg"),
                meta={"study": study, "labels": labels.get((sid, study), {}), "report": rel + ".txt"})

    def load(self, item: SourceItem):
        rec = super().load(item)
        for base in self.reports:  # reports are read here, not in items(): 227K small files
            txt = base / item.meta["report"]
            if txt.is_file():
                sections = report_sections(txt.read_text(errors="replace"))
                rec.findings, rec.impression = sections["findings"], sections["impression"]
                break
        return rec
