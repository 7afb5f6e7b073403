"""Classification metrics for linear probes: AUPRC (the paper's headline, robust to imbalance) and AUROC.

NaN-aware: unknown labels (known=False) are dropped per class; a class whose known labels are all one value has
no defined AUPRC/AUROC and returns NaN (never a fake 0.5).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _valid(y_true: np.ndarray, known: np.ndarray | None, j: int):
    mask = np.ones(len(y_true), bool) if known is None else known[:, j].astype(bool)
    y = y_true[mask, j]
    return mask, y


def per_class(y_true: np.ndarray, scores: np.ndarray, known: np.ndarray | None = None,
              names: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """{name: {auprc, auroc, n_pos, n}} for [N, L] labels (0/1) and scores."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y_true, scores = np.asarray(y_true, float), np.asarray(scores, float)
    if y_true.shape != scores.shape or y_true.ndim != 2:
        raise ValueError(f"labels {y_true.shape} and scores {scores.shape} must be the same [N, L] shape")
    names = list(names) if names is not None else [str(j) for j in range(y_true.shape[1])]
    out = {}
    for j, name in enumerate(names):
        mask, y = _valid(y_true, known, j)
        s = scores[mask, j]
        defined = len(y) > 0 and 0 < y.sum() < len(y)
        out[name] = {
            "auprc": float(average_precision_score(y, s)) if defined else float("nan"),
            "auroc": float(roc_auc_score(y, s)) if defined else float("nan"),
            "n_pos": int(y.sum()), "n": int(len(y)),
        }
    return out


def aggregate(per: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean over classes with a defined value (the paper's "Agg.")."""
    out = {}
    for key in ("auprc", "auroc"):
        vals = [v[key] for v in per.values() if not np.isnan(v[key])]
        out[key] = float(np.mean(vals)) if vals else float("nan")
    return out


def max_f1_threshold(y: np.ndarray, s: np.ndarray) -> tuple[float, float] | None:
    """(threshold, F1) maximising F1 of `score >= threshold` over the observed scores; None when y has a single
    outcome (no threshold is informative). Ties go to the lowest threshold (the one with the higher recall)."""
    from sklearn.metrics import precision_recall_curve

    y, s = np.asarray(y, float), np.asarray(s, float)
    if len(y) == 0 or not 0 < y.sum() < len(y):
        return None
    p, r, t = precision_recall_curve(y, s)
    p, r = p[:-1], r[:-1]  # the last point (recall 0) has no threshold
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    i = int(np.argmax(f1))
    return float(t[i]), float(f1[i])


def decision_thresholds(values: np.ndarray, scores: np.ndarray, known: np.ndarray, names: Sequence[str],
                        split: str, default: float = 0.5) -> dict[str, dict]:
    """{name: {threshold, rule, f1}}: max-F1 on `split` per label, `default` where the split has one outcome."""
    out = {}
    for j, name in enumerate(names):
        k = np.asarray(known[:, j], bool)
        best = max_f1_threshold(values[k, j], scores[k, j])
        out[name] = ({"threshold": best[0], "rule": f"max F1 on {split}", "f1": best[1]} if best else
                     {"threshold": default, "rule": f"default {default} ({split} has one outcome only)", "f1": None})
    return out
