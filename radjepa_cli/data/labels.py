"""One label contract for every dataset (torchxrayvision-style, NaN-aware).

A sample's labels are a dict {name: 1 | 0 | -1 | None}: 1 positive, 0 negative, -1 uncertain, None unknown.
Losses and metrics mask unknown entries; how uncertain (-1) is treated is a caller's explicit choice.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

# CheXpert-14, in the CheXpert CSV's column order.
CHEXPERT_14 = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
# The five CheXpert competition labels (used for "F1-5" report metrics).
CHEXPERT_5 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
# The paper's six VinDr-CXR findings (Table 6), with its abbreviations.
VINDR_6 = ("Lung Opacity", "Cardiomegaly", "Pleural Thickening", "Aortic Enlargement", "Pulmonary Fibrosis",
           "Pleural Effusion")
VINDR_6_ABBREV = {"Lung Opacity": "LO", "Cardiomegaly": "CM", "Pleural Thickening": "PL-T",
                  "Aortic Enlargement": "AE", "Pulmonary Fibrosis": "PF", "Pleural Effusion": "PE"}
RSNA = ("Pneumonia",)
NIH_14 = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
# Findings the phantom generator renders with ground truth (the probe's "phantom" label set).
PHANTOM = (
    "Cardiomegaly", "Enlarged Cardiomediastinum", "Pleural Effusion", "Pneumothorax", "Consolidation",
    "Lung Opacity", "Atelectasis", "Edema", "Lung Lesion", "Pleural Thickening", "Support Devices", "Fracture",
    "Aortic Enlargement", "No Finding",
)

LABEL_SETS: dict[str, tuple[str, ...]] = {
    "chexpert14": CHEXPERT_14, "chexpert5": CHEXPERT_5, "vindr6": VINDR_6, "rsna": RSNA, "nih14": NIH_14,
    "phantom": PHANTOM,
}

# Segmentation structures (mask names inside `masks.npz`).
LUNGS = ("lung_right", "lung_left")  # patient's right lung is on the image's left in a PA view
LUNG_ZONES = ("right_upper", "right_middle", "right_lower", "left_upper", "left_middle", "left_lower")
RIBS = tuple(f"R{i}" for i in range(1, 11)) + tuple(f"L{i}" for i in range(1, 11))
SEG_TASKS: dict[str, tuple[str, ...]] = {"lungs": LUNGS, "lung-zones": LUNG_ZONES, "ribs": RIBS}


def resolve_label_set(name_or_names: str | Sequence[str]) -> tuple[str, ...]:
    """A label-set name ('vindr6', 'chexpert14', …) or a comma-separated / explicit list of label names."""
    if isinstance(name_or_names, str):
        if name_or_names in LABEL_SETS:
            return LABEL_SETS[name_or_names]
        names = tuple(n.strip() for n in name_or_names.split(",") if n.strip())
    else:
        names = tuple(name_or_names)
    if not names:
        raise ValueError(f"empty label set {name_or_names!r}; known sets: {', '.join(LABEL_SETS)}")
    return names


def normalize_value(v) -> int | None:
    """Map a raw label value (1/0/-1/blank/NaN/'1.0'/bool) onto the contract."""
    if v is None:
        return None
    if isinstance(v, str):
        v = v.strip()
        if v == "" or v.lower() in {"nan", "none", "null"}:
            return None
        v = float(v)
    if isinstance(v, float) and np.isnan(v):
        return None
    iv = int(v)
    if iv not in (1, 0, -1):
        raise ValueError(f"label value {v!r} is not one of 1, 0, -1 or blank")
    return iv


def labels_to_arrays(labels: Iterable[Mapping[str, int | None]], names: Sequence[str],
                     uncertain: str = "mask") -> tuple[np.ndarray, np.ndarray]:
    """Stack label dicts into (values float32 [N, L], known bool [N, L]).

    uncertain: 'mask' (treat -1 as unknown), 'positive' (-1 → 1) or 'negative' (-1 → 0).
    Unknown entries get value 0 and known=False; callers must mask them.
    """
    if uncertain not in {"mask", "positive", "negative"}:
        raise ValueError(f"uncertain must be mask|positive|negative, not {uncertain!r}")
    rows = list(labels)
    values = np.zeros((len(rows), len(names)), np.float32)
    known = np.zeros((len(rows), len(names)), bool)
    for i, lab in enumerate(rows):
        for j, name in enumerate(names):
            v = lab.get(name)
            if v is None:
                continue
            if v == -1:
                if uncertain == "mask":
                    continue
                v = 1 if uncertain == "positive" else 0
            values[i, j] = float(v)
            known[i, j] = True
    return values, known
