"""CheXpert (Stanford)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

from ..labels import CHEXPERT_14
from .base import Source, SourceItem, find_files, read_csv, row_labels, safe_key

# (split, label CSVs in order of preference): the original labeller's train.csv first; the AIMI download also
# carries CheXbert / VisualCheXbert relabellings of the training set, used only when train.csv is absent.
_CSVS = (("train", ("train.csv", "train_cheXbert.csv", "train_visualCheXbert.csv")), ("val", ("valid.csv",)),
         ("test", ("test.csv",)))
_PATIENT = re.compile(r"patient\d+$")


def patient_folders(tops: list[Path], depth: int = 4) -> dict[str, Path]:
    """{patientNNNNN: the folder holding it} for every patient folder at most `depth` levels below `tops`: the
    images of one CheXpert download may be split over several trees (train/, valid/, the AIMI 'batch N' folders)."""
    found: dict[str, Path] = {}
    level = list(dict.fromkeys(tops))
    for _ in range(depth + 1):
        nxt = []
        for folder in level:
            try:
                with os.scandir(folder) as it:
                    for e in it:
                        if not e.is_dir():
                            continue
                        if _PATIENT.match(e.name):
                            found.setdefault(e.name, folder)
                        elif not e.name.startswith("."):
                            nxt.append(Path(e.path))
            except OSError:
                continue
        level = nxt
    return found


class ChexpertSource(Source):
    """chexpert: ROOT = a CheXpert download: CheXpert-v1.0-small (train.csv, valid.csv, train/ valid/), the
    original CheXpert-v1.0, or Stanford AIMI's current one (chexpertchestxrays-u20210408/ with
    'CheXpert-v1.0 batch 1 (validate & csv)/' holding train.csv, valid.csv and valid/, and 'batch 2 (train 1)' …
    'batch 4 (train 3)' holding the patient folders). ROOT may be any folder above the CSVs; the CSV's Path column
    (CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg) is resolved by patient folder, wherever it is.

    Labels: the 14 CheXpert columns (1, 0, -1 uncertain, blank). Split: train.csv → train, valid.csv → val
    (train_cheXbert.csv when train.csv is absent). View: Frontal/Lateral and AP/PA columns.
    """

    name = "chexpert"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.csvs = []
        for split, names in _CSVS:
            hits = next((h for h in (find_files(self.root, (n,)) for n in names) if h), [])
            if hits:
                self.csvs.append((split, hits[0]))
                self.note(f"read {hits[0]}")
        if not any(split == "val" for split, _ in self.csvs):
            self.warn(f"no valid.csv under {self.root}: CheXpert's official validation set is absent")
        if not any(split == "train" for split, _ in self.csvs):
            raise FileNotFoundError(f"no train.csv in {self.root} or up to 4 folders below it: expected CheXpert's "
                                    "label CSVs (CheXpert-v1.0-small/train.csv, or the AIMI download's "
                                    "'CheXpert-v1.0 batch 1 (validate & csv)/train.csv')")

    def _image_trees(self) -> list[Path]:
        """ROOT, plus the folder holding the AIMI batches when ROOT is one of them (train images are siblings)."""
        tops = [self.root]
        for _, csv in self.csvs:
            above = csv.parent.parent
            if "batch" in csv.parent.name.lower() and not above.resolve().is_relative_to(self.root.resolve()):
                tops.append(above)
        return tops

    def _resolve(self, rel: str, patients: dict[str, Path]) -> Path:
        p = Path(rel)
        home = patients.get(p.parts[-3]) if len(p.parts) >= 3 else None
        if home is not None:
            return home.joinpath(*p.parts[-3:])
        for cand in (self.root / p, self.root.parent / p, self.root / Path(*p.parts[1:])):
            if cand.exists():
                return cand
        return self.root / Path(*p.parts[1:])  # absent: reported in prepare-data's missing summary

    def items(self) -> Iterator[SourceItem]:
        patients = patient_folders(self._image_trees())
        for split, csv in self.csvs:
            for i, r in enumerate(read_csv(csv)):
                parts = Path(r["Path"]).parts  # .../train/patient00001/study1/view1_frontal.jpg
                patient, study = parts[-3], parts[-2]
                lateral = r.get("Frontal/Lateral", "").strip().lower() == "lateral"
                view = "LATERAL" if lateral else {"AP": "AP", "PA": "PA", "LL": "LL"}.get(r.get("AP/PA", ""), "UNKNOWN")
                yield SourceItem(
                    key=safe_key(split, patient, study, Path(parts[-1]).stem), patient=patient, split=split, view=view,
                    path=self._resolve(r["Path"], patients),
                    meta={"study": f"{patient}_{study}", "labels": row_labels(r, CHEXPERT_14, f"{csv} row {i + 2}: ")})
