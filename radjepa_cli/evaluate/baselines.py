"""Baseline rows for the report tables (issue 15): what a metric gives a model that never looks at the image.

  random other report   each reference is paired with another report of the same set (a seeded derangement: no
                        report is paired with itself), so the score is what "any fluent radiology report" earns.
  most frequent report  every image gets the set's most frequent reference text (ties: the first one in file order).

Both are computed on exactly the references of the row they sit under, with the same scorer and the same bootstrap
(resamples, seed) as that row, and they are labelled as baselines wherever they appear. Both use the test references
themselves (the most frequent one is chosen on the test set), so they are an optimistic floor, not a fair model.

`iu_xray_rows` turns the real IU-Xray findings shipped with torchxrayvision into rows, so the same baselines can be
computed on real text (`radjepa evaluate table 3 --iu-xray`).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

BASELINES = {
    "random-other": "random other report (baseline)",
    "most-frequent": "most frequent report (baseline)",
}


def derangement(n: int, seed: int) -> np.ndarray:
    """A permutation p of range(n) with p[i] != i for every i (n >= 2): a seeded shuffle, then each fixed point
    swapped with its successor (which cannot create a new one)."""
    if n < 2:
        raise ValueError(f"a random other report needs at least 2 references, got {n}")
    p = np.random.default_rng(seed).permutation(n)
    for i in range(n):
        if p[i] == i:
            j = (i + 1) % n
            p[i], p[j] = p[j], p[i]
    return p


def most_frequent(references: Sequence[str]) -> str:
    counts = Counter(references)
    top = max(counts.values())
    return next(r for r in references if counts[r] == top)


def baseline_generated(kind: str, references: Sequence[str], seed: int) -> list[str]:
    if kind == "random-other":
        return [references[j] for j in derangement(len(references), seed)]
    if kind == "most-frequent":
        return [most_frequent(references)] * len(references)
    raise ValueError(f"unknown baseline {kind!r}; choose one of {sorted(BASELINES)}")


def baseline_groups(rows: Sequence[dict], group: dict, idx: Sequence[int], cfg) -> list[dict[str, Any]]:
    """The baseline rows for one scored group (rows[idx]): the same references, the group's dataset/encoder/llm,
    scored by evaluate.reports.score_rows with cfg's bootstrap and seed."""
    from .reports import score_rows

    refs = [rows[i]["reference"] for i in idx]
    out = []
    for kind, label in BASELINES.items():
        fake = [{"id": rows[i]["id"], "reference": r, "generated": g}
                for i, r, g in zip(idx, refs, baseline_generated(kind, refs, cfg.seed))]
        scored = score_rows(fake, cfg)
        scored.pop("unavailable", None)     # a baseline needs no model-based scorer's excuse
        out.append({"dataset": group["dataset"], "encoder": label, "llm": group.get("llm", ""), "baseline": kind,
                    "baseline_of": group["encoder"], **scored})
    return out


def iu_xray_rows(path: str | None = None) -> list[dict]:
    """Every IU-Xray report with a non-empty FINDINGS section as a predictions row (reference = findings;
    generated left empty: only the baselines are scored on these)."""
    from ..metrics.iu_xray_mesh import load_reports

    return [{"id": r.uid, "reference": r.findings, "generated": "", "dataset": "IU-Xray (real findings)",
             "encoder": "none"} for r in load_reports(path) if r.findings.strip()]
