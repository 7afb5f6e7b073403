"""BRAX (Brazilian labelled chest X-ray dataset)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

from ..decode import normalize_view
from ..labels import CHEXPERT_14
from .base import Source, SourceItem, find_one, read_csv, row_labels


class BraxSource(Source):
    """brax: ROOT = BRAX with master_spreadsheet_update.csv (or any *.csv with PngPath/DicomPath columns), the
    images under ROOT as the CSV's paths say.

    Labels: the CheXpert-style columns (1, 0, -1, blank). Reads PngPath when present, else DicomPath. Patient:
    PatientID and AccessionNumber (study), both salted and hashed by the pipeline;
    keys are hashes of the image paths, which embed those ids. No official split.
    """

    name = "brax"

    def __init__(self, root: str | Path, prefer: str = "png"):
        self.root = Path(root)
        self.csv = find_one(self.root, ("master_spreadsheet*.csv", "*.csv"), "BRAX's master spreadsheet CSV",
                            source=self)
        self.prefer = prefer

    def items(self) -> Iterator[SourceItem]:
        for i, r in enumerate(read_csv(self.csv)):
            cols = ("PngPath", "DicomPath") if self.prefer == "png" else ("DicomPath", "PngPath")
            rel = next((r[c] for c in cols if r.get(c)), None)
            if rel is None:
                raise ValueError(f"{self.csv} row {i + 2}: no PngPath/DicomPath")
            acc = r.get("AccessionNumber", "")  # raw here; prepare-data stores only a salted hash
            yield SourceItem(
                key="brax-" + hashlib.sha256(rel.encode()).hexdigest()[:20], patient=r.get("PatientID") or rel, split=None,
                view=normalize_view(r.get("ViewPosition")), path=self.csv.parent / rel,  # paths relative to the CSV
                meta={"labels": row_labels(r, CHEXPERT_14, f"{self.csv} row {i + 2}: "),
                      "study": acc, "hash_study": True})
