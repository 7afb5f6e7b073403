"""IU-Xray (Open-i, Indiana University): NLMCXR XML reports + PNG images."""
from __future__ import annotations

import tarfile
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import json

from .base import Source, SourceItem, find_files, image_index, read_csv, safe_key
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
    "thickening/pleura": "Pleural Thickening",  # MeSH files pleural thickening under Thickening/pleura/…
}
MESH_LABELS = sorted({v for v in MESH.values() if v})


def parse_report(xml: bytes | str) -> dict:
    """One NLMCXR XML report → {id, findings, impression, indication, comparison, mesh_major, mesh_automatic,
    images, caption}. Section texts are whitespace-normalised; Open-i's 'XXXX' de-identification marks are kept."""
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
        "caption": next((clean(c.text or "") for c in root.iter("caption") if c.text), ""),
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
    no labels at all for reports marked 'No Indexing'. A heading matches on itself, its first term
    ('Cardiomegaly/mild' → cardiomegaly) or its first two ('Thickening/pleura/apex' → thickening/pleura)."""
    if not major or any(h.lower() == "no indexing" for h in major):
        return {}
    labels = {name: 0 for name in MESH_LABELS}
    for heading in major:
        terms = [t.strip().lower() for t in heading.split("/")]
        for term in (heading.strip().lower(), terms[0], "/".join(terms[:2])):
            if MESH.get(term):
                labels[MESH[term]] = 1
    if any(v for k, v in labels.items() if k != "No Finding"):
        labels["No Finding"] = 0
    return labels


def view_of(projection: str, caption: str) -> str:
    """Kaggle's per-image 'Frontal'/'Lateral' → a view; a frontal is PA or AP when the study's caption names
    exactly one of them ('Xray Chest PA and Lateral'), else UNKNOWN."""
    projection = (projection or "").strip().lower()
    if projection == "lateral":
        return "LATERAL"
    if projection != "frontal":
        return "UNKNOWN"
    words = set(re.findall(r"[A-Za-z]+", caption.upper()))
    return "PA" if "PA" in words and "AP" not in words else "AP" if "AP" in words and "PA" not in words else "UNKNOWN"


def kaggle_image_id(filename: str) -> str:
    """Kaggle's '1_IM-0001-4001.dcm.png' → Open-i's image id 'CXR1_1_IM-0001-4001' (one key in every layout)."""
    return "CXR" + filename.split(".")[0]


class IuXraySource(Source):
    """iu-xray: ROOT = one of the IU-Xray (Open-i, Indiana University) downloads (ROOT may be a level above):
    Open-i's NLMCXR_reports.tgz (or its ecgen-radiology/*.xml) with the NLMCXR_png PNGs (found by image id);
    Kaggle's "Chest X-rays (Indiana University)" (indiana_reports.csv, indiana_projections.csv,
    images/images_normalized/*.png); or R2Gen's iu_xray/ (annotation.json, images/CXR…/0.png).

    One sample per image: findings/impression (R2Gen: its report text as findings), labels from the MeSH major
    headings (R2Gen: when the Open-i XML is also under ROOT), MeSH terms in extra. Views from
    indiana_projections.csv when present (Open-i's XML has none per image). Patient = report (Open-i has no
    patient ids). Split: R2Gen's train/val/test; otherwise none (patient-level hash).
    """

    name = "iu-xray"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        hits = find_files(self.root, ("NLMCXR_reports.tgz",)) or find_files(self.root, ("ecgen-radiology",), dirs=True)
        self.reports = hits[0] if hits else None
        self.kaggle = (find_files(self.root, ("indiana_reports.csv",)) or [None])[0]
        self.projections = (find_files(self.root, ("indiana_projections.csv",)) or [None])[0]
        self.r2gen = next((p for p in find_files(self.root, ("annotation.json",)) if _is_r2gen(p)), None)
        if self.reports is None and self.kaggle is None and self.r2gen is None:
            raise FileNotFoundError(f"no NLMCXR_reports.tgz (Open-i), indiana_reports.csv (Kaggle) or "
                                    f"annotation.json (R2Gen) in {self.root} or up to 4 folders below it")
        if self.reports is None and self.r2gen is None and self.projections is None:
            raise FileNotFoundError(f"{self.kaggle} found but no indiana_projections.csv (Kaggle's list of images)")
        for p in (self.r2gen, self.reports if self.r2gen is None else None, self.kaggle, self.projections):
            if p is not None:
                self.note(f"read {p}")

    def _projections(self) -> dict[str, str]:
        if self.projections is None:
            self.warn("no indiana_projections.csv: IU-Xray image views are UNKNOWN (Open-i's XML names none)")
            return {}
        return {kaggle_image_id(r["filename"]): r["projection"] for r in read_csv(self.projections)}

    def items(self) -> Iterator[SourceItem]:
        views = self._projections()
        if self.r2gen is not None:
            yield from self._r2gen_items(views)
        elif self.reports is not None:
            images = image_index(self.root, (".png", ".jpg"))
            for rep in iter_reports(self.reports):
                for image_id in rep["images"]:
                    yield self._item(rep, image_id, images.get(image_id, self.root / "NLMCXR_png" / f"{image_id}.png"),
                                     view_of(views.get(image_id, ""), rep["caption"]))
        else:
            yield from self._kaggle_items(views)

    def _item(self, rep: dict, image_id: str, path: Path, view: str, split: str | None = None) -> SourceItem:
        return SourceItem(
            key=safe_key(image_id), patient=rep["id"], split=split, view=view, path=path,
            meta={"study": rep["id"], "findings": rep["findings"], "impression": rep["impression"],
                  "labels": mesh_labels(rep["mesh_major"]),
                  "extra": {"mesh": rep["mesh_major"], "indication": rep["indication"]}})

    def _kaggle_items(self, views: dict[str, str]) -> Iterator[SourceItem]:
        folder = self.kaggle.parent / "images" / "images_normalized"
        reports = {r["uid"]: r for r in read_csv(self.kaggle)}
        for r in read_csv(self.projections) if self.projections is not None else []:
            rep = reports.get(r["uid"])
            if rep is None:
                continue
            mesh = [h.strip() for h in (rep.get("MeSH") or "").split(";") if h.strip()]
            report = {"id": f"CXR{r['uid']}", "findings": rep.get("findings", ""),
                      "impression": rep.get("impression", ""),
                      "indication": rep.get("indication", ""), "mesh_major": mesh}
            yield self._item(report, kaggle_image_id(r["filename"]), folder / r["filename"],
                             view_of(r["projection"], rep.get("image", "")))

    def _r2gen_items(self, views: dict[str, str]) -> Iterator[SourceItem]:
        """R2Gen's studies; with the Open-i XML under ROOT too, the i-th image is the report's i-th image id (for
        views) and the XML gives labels and impressions."""
        xml = {rep["id"]: rep for rep in iter_reports(self.reports)} if self.reports is not None else {}
        data = json.loads(self.r2gen.read_text())
        folder = self.r2gen.parent / "images"
        for split_name, split in (("train", "train"), ("val", "val"), ("test", "test")):
            for study in data.get(split_name, []):
                rid = study["id"].split("_")[0]
                rep = xml.get(rid) or {"id": rid, "findings": clean(study.get("report", "")), "impression": "",
                                       "indication": "", "mesh_major": [], "images": [], "caption": ""}
                for i, rel in enumerate(study["image_path"]):
                    image_id = rep["images"][i] if i < len(rep["images"]) else f"{study['id']}-{i}"
                    yield self._item(rep, image_id, folder / rel, view_of(views.get(image_id, ""), rep["caption"]),
                                     split)


def _is_r2gen(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("train"), list) and \
        all("image_path" in s for s in data["train"][:3])
