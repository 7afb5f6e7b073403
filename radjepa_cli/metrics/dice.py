"""Dice for segmentation: the one implementation `segment`, `predict` and any other scorer use.

The empty-mask rule (one rule everywhere): a structure's Dice is the mean, over the images whose ground truth
CONTAINS that structure (annotated and non-empty), of 2|P∩G| / (|P| + |G|). Images where the structure is absent
or not annotated are left out of its mean, so an empty ground truth never scores a free 1 (nothing to find, nothing
found) and a false positive there is not counted either. A structure absent from every image has no Dice (None).
This is the convention of the segmentation results we report (paper Table 7's Dice over annotated structures);
false positives on images without the structure would need a separate detection metric.
"""
from __future__ import annotations

import numpy as np
import torch


def dice_per_structure(pred: torch.Tensor, truth: torch.Tensor, known: torch.Tensor | None = None,
                       ) -> list[float | None]:
    """pred / truth [N, M, H, W] binary, known [N, M] bool (None = all annotated) → per structure, the mean Dice
    over the images whose ground truth has it (None where no image has it)."""
    pred, truth = torch.as_tensor(pred).bool(), torch.as_tensor(truth).bool()
    if pred.shape != truth.shape or pred.ndim != 4:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(truth.shape)} must be the same "
                         "[N, M, H, W] shape")
    known = torch.ones(truth.shape[:2], dtype=torch.bool) if known is None else torch.as_tensor(known).bool()
    inter = (pred & truth).sum(dim=(2, 3)).double()
    denom = (pred.sum(dim=(2, 3)) + truth.sum(dim=(2, 3))).double()
    valid = known & (truth.sum(dim=(2, 3)) > 0)
    out = []
    for m in range(truth.shape[1]):
        v = valid[:, m]
        out.append(float((2 * inter[v, m] / denom[v, m]).mean()) if v.any() else None)
    return out


def dice(pred: np.ndarray, target: np.ndarray) -> float | None:
    """Dice of one binary mask pair; None when the target is empty (the rule above: not scored)."""
    pred, target = np.asarray(pred).astype(bool), np.asarray(target).astype(bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    d = dice_per_structure(torch.from_numpy(pred)[None, None], torch.from_numpy(target)[None, None])[0]
    return d
