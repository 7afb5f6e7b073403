"""Any folder of radiographs (DICOM / PNG / JPG), optionally with a CSV of labels and reports."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

from ..decode import DecodeError, normalize_view, read_dicom_header
from ..labels import normalize_value
from .base import Source, SourceItem, read_csv, safe_key

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
# CSV columns with a meaning; every other column is a label (values 1 / 0 / -1 / blank).
RESERVED = ("path", "patient", "study", "view", "split", "findings", "impression")


class FolderSource(Source):
    """folder: ROOT = any tree of .dcm/.dicom/.png/.jpg/.jpeg files (searched recursively), optionally with a CSV
    (--csv FILE, or ROOT/labels.csv) of `path` (relative to ROOT) and optional `patient`, `study`, `view`, `split`,
    `findings`, `impression` columns; every other column is a label (1/0/-1/blank).

    With a CSV only its rows are used. Without one every image is its own patient (DICOM: the header's PatientID,
    hashed by the pipeline). DICOM files get hashed keys because their names are often SOP Instance UIDs.
    """

    name = "folder"

    def __init__(self, root: str | Path, csv: str | Path | None = None):
        self.root = Path(root)
        default_csv = self.root / "labels.csv"
        self.csv = Path(csv) if csv else (default_csv if default_csv.is_file() else None)
        if self.csv is not None and not self.csv.is_file():
            raise FileNotFoundError(f"--csv {self.csv} does not exist")

    def items(self) -> Iterator[SourceItem]:
        rows = {}
        if self.csv is not None:
            for i, row in enumerate(read_csv(self.csv)):
                if not row.get("path"):
                    raise ValueError(f"{self.csv} row {i + 2}: empty or missing 'path' column")
                rows[Path(row["path"]).as_posix()] = (i, row)
        if rows:  # the CSV decides which files belong to the dataset
            paths = [self.root / p for p in rows]
        else:
            paths = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        for path in paths:
            rel = path.relative_to(self.root).as_posix()
            is_dicom = path.suffix.lower() in (".dcm", ".dicom")
            key = ("dcm-" + hashlib.sha256(rel.encode()).hexdigest()[:20]) if is_dicom \
                else safe_key(rel.replace(".", "_"))
            patient, view, meta = key, "UNKNOWN", {}
            if is_dicom and path.is_file():
                try:
                    ds = read_dicom_header(path)
                    patient = str(ds.get("PatientID") or key)
                    view = normalize_view(ds.get("ViewPosition"))
                except DecodeError:
                    pass  # load() will reject it with the reason
            split = None
            if rel in rows:
                lineno, row = rows[rel]
                patient = row.get("patient") or patient
                view = normalize_view(row["view"]) if row.get("view") else view
                split = row.get("split") or None
                if split not in (None, "train", "val", "test"):
                    raise ValueError(f"{self.csv} row {lineno + 2}: split {split!r} is not train|val|test")
                labels = {}
                for col, v in row.items():
                    if col in RESERVED or col is None:
                        continue
                    try:
                        labels[col] = normalize_value(v)
                    except ValueError as e:
                        raise ValueError(f"{self.csv} row {lineno + 2}, column {col!r}: {e}") from None
                meta = {"labels": labels, "findings": row.get("findings", ""),
                        "impression": row.get("impression", ""), "study": row.get("study", "")}
            yield SourceItem(key=key, patient=patient, split=split, view=view, path=path, meta=meta)
