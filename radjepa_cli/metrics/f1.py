"""Label F1 between generated and reference reports (CheXpert-14 "Macro-F1-14", and the 5 competition labels).

Both sides are labelled by the same labeller (the CheXbert convention: the reference labels come from the reference
text). Uncertain (-1) is mapped by an explicit, recorded choice: 'positive' (vilmedic / RadEval) or 'negative'
(LLaVA-Rad headline). Blank (None) and 0 are negative. A label with no positives on either side has F1 = 0
(sklearn's zero_division=0), as in the CheXbert evaluation scripts.
Counts are kept per report ([N, L, 3] = tp, fp, fn) so a bootstrap can re-sum them per resample.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

UNCERTAIN_CHOICES = ("positive", "negative")


def positive_matrix(labels: Sequence[Mapping[str, int | None]], names: Sequence[str], uncertain_as: str) -> np.ndarray:
    """bool [N, L]: 1 → True, -1 → (uncertain_as == 'positive'), 0 / None / missing → False."""
    if uncertain_as not in UNCERTAIN_CHOICES:
        raise ValueError(f"uncertain_as must be one of {UNCERTAIN_CHOICES}, not {uncertain_as!r}")
    unc = uncertain_as == "positive"
    out = np.zeros((len(labels), len(names)), bool)
    for i, lab in enumerate(labels):
        for j, name in enumerate(names):
            v = lab.get(name)
            out[i, j] = v == 1 or (unc and v == -1)
    return out


def f1_counts(generated: Sequence[Mapping], reference: Sequence[Mapping], names: Sequence[str],
              uncertain_as: str = "positive") -> np.ndarray:
    """int64 [N, L, 3]: per-report true positives, false positives, false negatives."""
    if len(generated) != len(reference):
        raise ValueError(f"{len(generated)} generated label sets but {len(reference)} reference label sets")
    g = positive_matrix(generated, names, uncertain_as)
    r = positive_matrix(reference, names, uncertain_as)
    return np.stack([g & r, g & ~r, ~g & r], axis=-1).astype(np.int64)


def f1_from_counts(counts: np.ndarray) -> dict[str, np.ndarray | float]:
    """F1 from summed counts. `counts`: [..., L, 3] (summed already) → per-label F1 [..., L], macro and micro F1
    [...] in [0, 1]. Works on a batch of resamples at once ([B, L, 3])."""
    c = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
    denom = 2 * tp + fp + fn
    per_label = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    tps, fps, fns = tp.sum(-1), fp.sum(-1), fn.sum(-1)
    micro_den = 2 * tps + fps + fns
    micro = np.divide(2 * tps, micro_den, out=np.zeros_like(tps), where=micro_den > 0)
    return {"per_label": per_label, "macro": per_label.mean(-1), "micro": micro}
