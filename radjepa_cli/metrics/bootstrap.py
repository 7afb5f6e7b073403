"""Bootstrap confidence intervals for report metrics (LLaVA-Rad / RAD-DINO / RadJEPA protocol).

Per-report statistics are computed once (BLEU n-gram counts, ROUGE-L F, label tp/fp/fn, per-report model scores);
each of the seeded resamples draws N reports with replacement and recomputes every corpus metric from the
re-weighted sums (BLEU from summed counts, F1 from summed tp/fp/fn, means for per-report scores). We report the
point estimate on the full set, the median and the 2.5 / 97.5 percentiles over resamples.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from ..data.labels import CHEXPERT_5, CHEXPERT_14
from . import f1 as f1m
from . import lexical

# name → (display label, what it is). Every value is on the paper's 0–100 scale except where noted.
METRICS: dict[str, tuple[str, str]] = {
    "rougeL": ("ROUGE-L", "rouge-score rougeL F1 (beta=1, no stemmer), mean over reports, x100"),
    "bleu4": ("BLEU-4", "sacrebleu corpus BLEU-4 (13a, cased, exp smoothing), 0-100"),
    "bleu4_coco": ("BLEU-4 (coco)", "pycocoevalcap/R2Gen corpus BLEU-4 (lowercase, no punctuation, closest ref), x100"),
    "f1_14_macro": ("Macro-F1-14", "chexpert-rules labels, macro F1 over CheXpert-14, x100"),
    "f1_14_micro": ("Micro-F1-14", "chexpert-rules labels, micro F1 over CheXpert-14, x100"),
    "f1_5_macro": ("Macro-F1-5", "chexpert-rules labels, macro F1 over the 5 competition labels, x100"),
    "f1_5_micro": ("Micro-F1-5", "chexpert-rules labels, micro F1 over the 5 competition labels, x100"),
}


@dataclasses.dataclass
class ReportStats:
    """Everything a resample needs, per report."""

    bleu: np.ndarray         # int64 [N, 10]  sacrebleu variant
    bleu_coco: np.ndarray    # int64 [N, 10]
    rouge_l: np.ndarray      # float64 [N]
    label_counts: dict[str, np.ndarray]  # prefix → int64 [N, L, 3] tp/fp/fn ('f1_14', 'f1_5', ...)
    means: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # per-report scores, final scale
    uncertain_as: str = "positive"

    @property
    def n(self) -> int:
        return len(self.rouge_l)


def compute_report_stats(generated: Sequence[str], references: Sequence[str], uncertain_as: str = "positive",
                         gen_labels: Sequence[Mapping] | None = None, ref_labels: Sequence[Mapping] | None = None,
                         means: Mapping[str, np.ndarray] | None = None) -> ReportStats:
    """Per-report statistics. Labels default to chexpert-rules on each text; `means` adds per-report scores
    (e.g. RadGraph RG_ER, GREEN) whose corpus value is their mean."""
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated reports but {len(references)} references")
    if not generated:
        raise ValueError("no reports to score")
    if gen_labels is None or ref_labels is None:
        from .chexpert_rules import label_reports
        gen_labels = label_reports(generated) if gen_labels is None else gen_labels
        ref_labels = label_reports(references) if ref_labels is None else ref_labels
    extra = {k: np.asarray(v, np.float64) for k, v in (means or {}).items()}
    for k, v in extra.items():
        if v.shape != (len(generated),):
            raise ValueError(f"per-report score {k!r} has shape {v.shape}, expected ({len(generated)},)")
    return ReportStats(
        bleu=lexical.bleu_stats(generated, references, "sacrebleu"),
        bleu_coco=lexical.bleu_stats(generated, references, "coco"),
        rouge_l=lexical.rouge_l(generated, references),
        label_counts={"f1_14": f1m.f1_counts(gen_labels, ref_labels, CHEXPERT_14, uncertain_as),
                      "f1_5": f1m.f1_counts(gen_labels, ref_labels, CHEXPERT_5, uncertain_as)},
        means=extra, uncertain_as=uncertain_as)


def _metrics_from_sums(bleu, bleu_coco, rouge_sum, counts, mean_sums, n) -> dict[str, np.ndarray]:
    """Corpus metrics for a batch of resamples from their weighted sums ([B, ...] arrays)."""
    out = {
        "rougeL": 100.0 * rouge_sum / n,
        "bleu4": np.array([lexical.bleu_from_stats(s, "sacrebleu") for s in bleu]),
        "bleu4_coco": np.array([lexical.bleu_from_stats(s, "coco") for s in bleu_coco]),
    }
    for prefix, c in counts.items():
        f = f1m.f1_from_counts(c)
        out[f"{prefix}_macro"] = 100.0 * f["macro"]
        out[f"{prefix}_micro"] = 100.0 * f["micro"]
    for k, s in mean_sums.items():
        out[k] = s / n
    return out


def point_estimates(stats: ReportStats) -> dict[str, float]:
    one = np.ones((1, stats.n))
    return {k: float(v[0]) for k, v in _weighted(stats, one).items()}


def _weighted(stats: ReportStats, w: np.ndarray) -> dict[str, np.ndarray]:
    """w: [B, N] resample counts (how often each report was drawn)."""
    n = stats.n
    counts = {k: (w @ c.reshape(n, -1)).reshape(len(w), *c.shape[1:]) for k, c in stats.label_counts.items()}
    return _metrics_from_sums(w @ stats.bleu, w @ stats.bleu_coco, w @ stats.rouge_l, counts,
                              {k: w @ v for k, v in stats.means.items()}, n)


def resample_counts(n: int, n_resamples: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """float64 [B, N]: how many times each report is drawn in each resample (N draws with replacement)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    w = np.zeros((n_resamples, n))
    np.add.at(w, (np.repeat(np.arange(n_resamples), n), idx.ravel()), 1.0)
    return w


def bootstrap(stats: ReportStats, n_resamples: int = 500, seed: int = 0, chunk: int = 100) -> dict[str, dict]:
    """{metric: {value, median, ci_low, ci_high}}; with n_resamples=0 only point values (CI fields None).
    Resamples are drawn in chunks of `chunk` (memory ~ chunk x N), seeded: same seed → same intervals."""
    point = point_estimates(stats)
    if n_resamples <= 0:
        return {k: {"value": v, "median": None, "ci_low": None, "ci_high": None} for k, v in point.items()}
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, n_resamples, chunk):
        w = resample_counts(stats.n, min(chunk, n_resamples - i), rng)
        for k, v in _weighted(stats, w).items():
            parts.setdefault(k, []).append(v)
    out = {}
    for k, v in parts.items():
        arr = np.concatenate(v)
        lo, med, hi = np.percentile(arr, [2.5, 50, 97.5])
        out[k] = {"value": point[k], "median": float(med), "ci_low": float(lo), "ci_high": float(hi)}
    return out
