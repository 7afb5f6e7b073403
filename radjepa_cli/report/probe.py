"""A closed-form linear probe and label F1 on one footing, to ask "is the finding still in these tokens?".

Issue 14 compares the label F1 of generated reports with what a linear read-out of the same features reaches.
Both numbers must share the label set, the ground truth, the masking of unknown labels and the F1 definition,
so both are computed here:
- `ridge_probe`: ridge regression (one output per label, ±1 targets) on standardised features, solved once by SVD
  so every ridge strength on the grid is cheap; the strength and the per-label thresholds are chosen on val
  (max F1), never on the split the F1 is reported on.
- `masked_f1`: per-label F1 of boolean predictions against 0/1 truth, unknown (null) truth dropped per label,
  F1 = 0 where a label has no positive on either side (the CheXbert scripts' zero_division=0).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from radjepa_cli.metrics.ridge import RidgeSVD

# Ridge strengths relative to the mean squared singular value of the training features (scale-free grid).
RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def label_matrix(labels: Sequence[Mapping[str, int | None]], names: Sequence[str],
                 uncertain_as: str = "positive") -> tuple[np.ndarray, np.ndarray]:
    """(y [n, L] 0/1 float, known [n, L] bool) under the NaN-aware contract: 1 / 0, -1 by `uncertain_as`,
    None or missing → unknown."""
    y = np.zeros((len(labels), len(names)))
    known = np.zeros((len(labels), len(names)), bool)
    for i, lab in enumerate(labels):
        for j, n in enumerate(names):
            v = lab.get(n)
            if v is None:
                continue
            known[i, j] = True
            y[i, j] = 1.0 if v == 1 or (v == -1 and uncertain_as == "positive") else 0.0
    return y, known


def probe_label_names(train_labels: Sequence[Mapping], vocabulary: Sequence[str]) -> list[str]:
    """Labels of `vocabulary` (what the report labeller can name) with both outcomes among the training labels:
    a label without positives (or negatives) can be neither probed nor meaningfully scored."""
    y, known = label_matrix(train_labels, vocabulary)
    pos = (y * known).sum(0)
    return [n for j, n in enumerate(vocabulary) if 0 < pos[j] < known[:, j].sum()]


def masked_f1(pred: np.ndarray, y: np.ndarray, known: np.ndarray) -> tuple[float, np.ndarray]:
    """(macro F1, per-label F1 [L]) of bool predictions [n, L] vs 0/1 truth, unknown truth left out."""
    pred, pos, known = np.asarray(pred, bool), np.asarray(y) > 0.5, np.asarray(known, bool)
    tp = (pred & pos & known).sum(0)
    fp = (pred & ~pos & known).sum(0)
    fn = (~pred & pos & known).sum(0)
    denom = 2 * tp + fp + fn
    per = np.divide(2 * tp, denom, out=np.zeros(len(tp), float), where=denom > 0)
    return float(per.mean()) if len(per) else float("nan"), per


def _best_thresholds(scores: np.ndarray, y: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-label max-F1 thresholds on this split and the macro F1 they give here (a label with one outcome on
    the split keeps threshold +inf: it predicts nothing, the cautious choice)."""
    from radjepa_cli.metrics.classification import max_f1_threshold

    thr = np.full(scores.shape[1], np.inf)
    for j in range(scores.shape[1]):
        k = known[:, j]
        best = max_f1_threshold(y[k, j], scores[k, j])
        if best is not None:
            thr[j] = best[0]
    return thr, masked_f1(scores >= thr, y, known)[0]


@dataclasses.dataclass
class ProbeResult:
    names: list[str]
    ridge: float  # the chosen strength, relative to the mean squared singular value
    thresholds: np.ndarray  # [L], chosen on val
    val_macro_f1: float
    scores: np.ndarray  # [n_eval, L] on the evaluation split

    def f1(self, y: np.ndarray, known: np.ndarray) -> tuple[float, np.ndarray]:
        return masked_f1(self.scores >= self.thresholds, y, known)


def ridge_probe(x_train: np.ndarray, y_train: np.ndarray, known_train: np.ndarray, x_val: np.ndarray,
                y_val: np.ndarray, known_val: np.ndarray, x_eval: np.ndarray, names: Sequence[str],
                grid: Sequence[float] = RIDGE_GRID) -> ProbeResult:
    """Fit on train, choose the ridge strength and thresholds on val (max macro F1), score x_eval."""
    if len(x_train) < 2 or len(x_val) == 0:
        raise ValueError(f"a linear probe needs >= 2 training and >= 1 validation samples, got {len(x_train)} "
                         f"and {len(x_val)} (prepare shards with train and val splits)")
    # constant features (image borders) stay 0; "constant" relative to the largest sd, features of any scale
    r = RidgeSVD(np.asarray(x_train, np.float64), relative=True)
    t = np.where(known_train, 2.0 * y_train - 1.0, 0.0)  # ±1 targets
    t_mean = np.array([t[known_train[:, j], j].mean() if known_train[:, j].any() else 0.0
                       for j in range(t.shape[1])])
    # Unknown labels get the label's mean target: after centring they add nothing to that label's fit.
    t = np.where(known_train, t, t_mean) - t_mean
    uty = r.project(t)
    scale = float(r.mean_s2) if len(r.s) else 1.0
    xv, xe = r.transform(x_val), r.transform(x_eval)
    best = None
    for g in grid:
        w = r.weights(uty, g * scale)
        thr, f1 = _best_thresholds(xv @ w + t_mean, y_val, known_val)
        if best is None or f1 > best[0] + 1e-12:
            best = (f1, g, w, thr)
    f1, g, w, thr = best
    return ProbeResult(list(names), float(g), thr, float(f1), xe @ w + t_mean)
