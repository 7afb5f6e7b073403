"""Inter-rater agreement for grading studies (the paper's Appendix 14, Tables 10–11).

Cohen's κ (unweighted / linear / quadratic-weighted = QWK), Fleiss' κ, Krippendorff's α (nominal / ordinal /
interval, missing values allowed), ICC(2,1) (Shrout & Fleiss: two-way random, absolute agreement, single rater),
within-±k agreement and the majority vote that makes the paper's "LLM Master vote".
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def cohen_kappa(a: Sequence, b: Sequence, weights: str | None = None, labels: Sequence | None = None) -> float:
    """Cohen's κ between two raters; weights None | 'linear' | 'quadratic' (categories ordered by `labels`)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"two equally long, non-empty rating vectors needed, got {a.shape} and {b.shape}")
    cats = np.asarray(sorted(set(a.tolist()) | set(b.tolist())) if labels is None else list(labels))
    index = {c: i for i, c in enumerate(cats.tolist())}
    k = len(cats)
    obs = np.zeros((k, k))
    for x, y in zip(a.tolist(), b.tolist()):
        obs[index[x], index[y]] += 1
    exp = np.outer(obs.sum(1), obs.sum(0)) / obs.sum()
    i, j = np.indices((k, k))
    if weights is None:
        w = (i != j).astype(float)
    elif weights == "linear":
        w = np.abs(i - j).astype(float)
    elif weights == "quadratic":
        w = ((i - j) ** 2).astype(float)
    else:
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', not {weights!r}")
    denom = (w * exp).sum()
    return 1.0 if denom == 0 else float(1.0 - (w * obs).sum() / denom)


def fleiss_kappa_from_counts(counts: np.ndarray) -> float:
    """Fleiss' κ from an [items, categories] table of how many raters chose each category (same count per item)."""
    counts = np.asarray(counts, float)
    n_raters = counts.sum(1)
    if not np.allclose(n_raters, n_raters[0]) or n_raters[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings for every item")
    r = n_raters[0]
    p_item = ((counts ** 2).sum(1) - r) / (r * (r - 1))
    p_cat = counts.sum(0) / counts.sum()
    p_bar, p_e = p_item.mean(), (p_cat ** 2).sum()
    return 1.0 if p_e == 1 else float((p_bar - p_e) / (1 - p_e))


def fleiss_kappa(ratings: np.ndarray) -> float:
    """Fleiss' κ from [items, raters] categorical ratings."""
    ratings = np.asarray(ratings)
    cats = sorted(set(ratings.ravel().tolist()))
    counts = np.stack([(ratings == c).sum(1) for c in cats], axis=1)
    return fleiss_kappa_from_counts(counts)


def krippendorff_alpha(ratings: np.ndarray, level: str = "ordinal") -> float:
    """Krippendorff's α from [raters, items] ratings with NaN for missing; level nominal | ordinal | interval."""
    data = np.asarray(ratings, float)
    values = np.unique(data[~np.isnan(data)])
    index = {v: i for i, v in enumerate(values.tolist())}
    k = len(values)
    coincidence = np.zeros((k, k))
    for unit in data.T:
        vals = unit[~np.isnan(unit)]
        m = len(vals)
        if m < 2:
            continue  # unpairable
        idx = [index[v] for v in vals.tolist()]
        for p in range(m):
            for q in range(m):
                if p != q:
                    coincidence[idx[p], idx[q]] += 1.0 / (m - 1)
    n_c = coincidence.sum(1)
    n = n_c.sum()
    i, j = np.indices((k, k))
    if level == "nominal":
        delta = (i != j).astype(float)
    elif level == "interval":
        delta = (values[i] - values[j]) ** 2
    elif level == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(n_c)])
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        delta = (cum[hi + 1] - cum[lo] - (n_c[i] + n_c[j]) / 2.0) ** 2
    else:
        raise ValueError(f"level must be nominal, ordinal or interval, not {level!r}")
    d_o = (coincidence * delta).sum()
    d_e = (np.outer(n_c, n_c) * delta).sum() / (n - 1)
    return 1.0 if d_e == 0 else float(1.0 - d_o / d_e)


def icc_2_1(ratings: np.ndarray) -> float:
    """ICC(2,1) of an [items, raters] matrix (complete rows only)."""
    x = np.asarray(ratings, float)
    if x.ndim != 2 or np.isnan(x).any():
        raise ValueError("ICC(2,1) needs a complete [items, raters] matrix (drop rows with missing ratings)")
    n, k = x.shape
    grand = x.mean()
    ms_rows = k * ((x.mean(1) - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((x.mean(0) - grand) ** 2).sum() / (k - 1)
    resid = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + grand
    ms_err = (resid ** 2).sum() / ((n - 1) * (k - 1))
    return float((ms_rows - ms_err) / (ms_rows + (k - 1) * ms_err + k * (ms_cols - ms_err) / n))


def within(a: Sequence, b: Sequence, tolerance: float = 1) -> float:
    """Fraction of items where two raters differ by at most `tolerance` points."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float((np.abs(a - b) <= tolerance).mean())


def majority_vote(ratings: np.ndarray) -> np.ndarray:
    """Per-item most frequent rating of [items, raters]; a tie goes to the tied value nearest the item's median
    (the lower one if equally near), so three raters who all disagree yield their median."""
    out = []
    for row in np.asarray(ratings, float):
        row = row[~np.isnan(row)]
        vals, counts = np.unique(row, return_counts=True)
        tied = vals[counts == counts.max()]
        med = np.median(row)
        out.append(tied[np.argmin(np.abs(tied - med) + 1e-9 * (tied > med))])
    return np.asarray(out)
