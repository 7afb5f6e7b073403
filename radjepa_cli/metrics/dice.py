"""Dice for segmentation: per image, per structure; both-empty counts as 1 (nothing to find, nothing found)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    pred, target = np.asarray(pred).astype(bool), np.asarray(target).astype(bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    denom = pred.sum() + target.sum()
    return 1.0 if denom == 0 else float(2.0 * (pred & target).sum() / denom)


def dice_per_structure(preds: Sequence[Mapping[str, np.ndarray]], targets: Sequence[Mapping[str, np.ndarray]],
                       structures: Sequence[str]) -> dict[str, dict[str, float]]:
    """{structure: {mean, std, n}} over images (std over images, ddof=0); images lacking a target are skipped."""
    out = {}
    for s in structures:
        vals = [dice(p[s], t[s]) for p, t in zip(preds, targets) if s in t and s in p]
        out[s] = {"mean": float(np.mean(vals)) if vals else float("nan"),
                  "std": float(np.std(vals)) if vals else float("nan"), "n": len(vals)}
    return out
