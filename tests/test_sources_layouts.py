"""Readers on the layouts of the official downloads (issue 17, items 8-10): VinDr-CXR's per-split label names,
Chest ImaGenome's gold-standard list and resized MIMIC copies, IU-Xray's MeSH, views and Kaggle / R2Gen copies."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fixtures.cxr_files import make_dicom, save_png
from radjepa_cli.data.loader import iter_records
from radjepa_cli.data.phantom import PhantomConfig, generate
from radjepa_cli.data.prepare import PrepareConfig, prepare_data
from radjepa_cli.data.sources import get_source

_PHANTOM = PhantomConfig(size=40, seed=0)
# PhysioNet VinDr-CXR 1.0.0 annotations/image_labels_{train,test}.csv: one row per reader, 0/1 per finding.
VINDR_FINDINGS = ["Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
                  "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
                  "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion",
                  "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD",
                  "Lung tumor", "Pneumonia", "Tuberculosis"]


def image(i):
    return generate(i, _PHANTOM).image


def test_vindr_label_names_agree_across_splits_with_root_one_level_up(tmp_path):
    """Item 8: train says 'Other diseases', test 'Other disease': one key in every shard."""
    base = tmp_path / "physionet.org/files/vindr-cxr/1.0.0"
    (base / "annotations").mkdir(parents=True)
    for split, other, image_id, rad in (("train", "Other diseases", "a1", "R8"), ("test", "Other disease", "b1", "R1")):
        header = ["image_id", "rad_id" if split == "train" else "rad_ID", *VINDR_FINDINGS, other, "No finding"]
        row = [image_id, rad] + ["0"] * len(VINDR_FINDINGS) + ["1", "0"]
        (base / f"annotations/image_labels_{split}.csv").write_text(",".join(header) + "\n" + ",".join(row) + "\n")
        (base / split).mkdir()
        make_dicom(base / split / f"{image_id}.dicom", (image(0) * 4095).astype(np.int64))
    m = prepare_data(PrepareConfig(dataset="vindr-cxr", root=str(tmp_path / "physionet.org"), out=str(tmp_path / "o"),
                                   size=32, salt="s", contact_sheet=0))
    assert m["counts"]["total"] == 2 and m["missing"] is None
    recs = {r.split: r for r in iter_records(tmp_path / "o")}
    assert set(recs["test"].labels) == set(recs[next(s for s in recs if s != "test")].labels)
    assert recs["test"].labels["Other diseases"] == 1 and "Other disease" not in recs["test"].labels
    assert recs["test"].labels["Pleural Thickening"] == 0  # the paper's names for its six findings
