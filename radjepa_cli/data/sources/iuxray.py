"""IU-Xray (Open-i, Indiana University): NLMCXR XML reports + PNG images."""
from __future__ import annotations

import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

from .base import Source, SourceItem, image_index, safe_key
from .reports import clean

# MeSH major headings → our label names (first word of a heading such as "Cardiomegaly/mild").
MESH = {
    "normal": "No Finding", "cardiomegaly": "Cardiomegaly", "pleural effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax", "pulmonary atelectasis": "Atelectasis", "atelectasis": "Atelectasis",
    "consolidation": "Consolidation", "pneumonia": "Pneumonia", "pulmonary edema": "Edema", "edema": "Edema",
    "nodule": "Lung Lesion", "mass": "Lung Lesion", "opacity": "Lung Opacity",
    "airspace disease": "Lung Opacity", "infiltrate": "Lung Opacity", "fractures, bone": "Fracture",
    "pleural thickening": "Pleural Thickening", "pulmonary fibrosis": "Pulmonary Fibrosis",
    "medical device": "Support Devices", "implanted medical device": "Support Devices",
    "catheters, indwelling": "Support Devices", "tube, inserted": "Support Devices",
}
MESH_LABELS = sorted({v for v in MESH.values() if v})


def parse_report(xml: bytes | str) -> dict:
    """One NLMCXR XML report → {id, findings, impression, indication, comparison, mesh_major, mesh_automatic,
    images}. Section texts are whitespace-normalised; Open-i's 'XXXX' de-identification marks are kept."""
    root = ET.fromstring(xml)
    sections = {(a.get("Label") or "").upper(): clean(a.text or "") for a in root.iter("AbstractText")}
    uid = root.find("uId")
    return {
        "id": uid.get("id") if uid is not None else "",
        "findings": sections.get("FINDINGS", ""), "impression": sections.get("IMPRESSION", ""),
        "indication": sections.get("INDICATION", ""), "comparison": sections.get("COMPARISON", ""),
        "mesh_major": [m.text.strip() for m in root.iter("major") if m.text],
        "mesh_automatic": [m.text.strip() for m in root.iter("automatic") if m.text],
        "images": [p.get("id") for p in root.iter("parentImage") if p.get("id")],
    }


def iter_reports(path: str | Path) -> Iterator[dict]:
    """Reports from NLMCXR_reports.tgz or from a folder of its XML files, in file-name order."""
    path = Path(path)
    if path.is_dir():
        for p in sorted(path.rglob("*.xml")):
            yield parse_report(p.read_bytes())
        return
    with tarfile.open(path, "r:*") as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")), key=lambda m: m.name)
        for m in members:
            yield parse_report(tar.extractfile(m).read())


def mesh_labels(major: list[str]) -> dict[str, int]:
    """MeSH major headings → labels: 1 for a mapped heading, 0 for the other mapped labels (MeSH lists findings);
    no labels at all for reports marked 'No Indexing'."""
    if not major or any(h.lower() == "no indexing" for h in major):
        return {}
    labels = {name: 0 for name in MESH_LABELS}
    for heading in major:
        for term in (heading.lower(), heading.split("/")[0].strip().lower()):
            if MESH.get(term):
                labels[MESH[term]] = 1
    if any(v for k, v in labels.items() if k != "No Finding"):
        labels["No Finding"] = 0
    return labels


class IuXraySource(Source):
    """iu-xray: ROOT = a folder with NLMCXR_reports.tgz (or its extracted ecgen-radiology/*.xml) and the PNGs
    (NLMCXR_png/CXR1_1_IM-0001-3001.png …, found anywhere under ROOT by image id).

    One sample per image of a report: findings/impression from the XML, labels from the MeSH major headings,
    MeSH terms in extra. Patient = report (Open-i has no patient ids). No official split; no view in the XML.
    """

    name = "iu-xray"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        tgz = sorted(self.root.rglob("NLMCXR_reports.tgz"))
        xml_dir = sorted(p.parent for p in self.root.rglob("*.xml"))[:1]
        if tgz:
            self.reports = tgz[0]
        elif xml_dir:
            self.reports = xml_dir[0]
        else:
            raise FileNotFoundError(f"no NLMCXR_reports.tgz or report XML files under {self.root}")

    def items(self) -> Iterator[SourceItem]:
        images = image_index(self.root, (".png", ".jpg"))
        for rep in iter_reports(self.reports):
            for image_id in rep["images"]:
                yield SourceItem(
                    key=safe_key(image_id), patient=rep["id"], split=None,
                    path=images.get(image_id, self.root / "NLMCXR_png" / f"{image_id}.png"),
                    meta={"study": rep["id"], "findings": rep["findings"], "impression": rep["impression"],
                          "labels": mesh_labels(rep["mesh_major"]),
                          "extra": {"mesh": rep["mesh_major"], "indication": rep["indication"]}})
