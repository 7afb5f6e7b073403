"""The paper's bias analyses (Section 6): label co-occurrence in a dataset (Table 5, e.g. P(effusion | pneumothorax))
and joint-absence errors (the generated report denies both findings while the reference has one of them).

Label values follow the data contract (1 / 0 / -1 / None). Table 5's conditional probabilities divide by every
sample with the given label in that state, so samples whose finding is unknown stay in the denominator (the
paper's four cells do not add up to 1 for the same reason); uncertain is excluded unless mapped by the caller.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..data.labels import CHEXPERT_14

UNCERTAIN_MODES = ("exclude", "positive", "negative")


def _state(v: int | None, uncertain: str) -> str | None:
    if v == -1:
        v = None if uncertain == "exclude" else (1 if uncertain == "positive" else 0)
    return "+" if v == 1 else "-" if v == 0 else None


def cooccurrence(labels: Iterable[Mapping[str, int | None]], given: str, finding: str,
                 uncertain: str = "exclude") -> dict[str, Any]:
    """Counts and P(finding state | given state) — the layout of the paper's Table 5."""
    if uncertain not in UNCERTAIN_MODES:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_MODES}, not {uncertain!r}")
    n_given = {"+": 0, "-": 0}
    cells = {f"B{b}|N{n}": 0 for b in "+-" for n in "+-"}
    total = 0
    for lab in labels:
        total += 1
        n = _state(lab.get(given), uncertain)
        if n is None:
            continue
        n_given[n] += 1
        b = _state(lab.get(finding), uncertain)
        if b is not None:
            cells[f"B{b}|N{n}"] += 1
    out = {"given": given, "finding": finding, "uncertain": uncertain, "samples": total,
           "n_given_pos": n_given["+"], "n_given_neg": n_given["-"], "cells": {}}
    for key, count in cells.items():
        denom = n_given[key[-1]]
        out["cells"][key] = {"count": count, "p": count / denom if denom else None}
    return out


def conditional_matrix(labels: Sequence[Mapping[str, int | None]], names: Sequence[str] = CHEXPERT_14,
                       uncertain: str = "exclude") -> dict[str, Any]:
    """P(column positive | row positive) over every label pair (NaN where the row label never is positive)."""
    pos = np.array([[_state(lab.get(n), uncertain) == "+" for n in names] for lab in labels], bool).reshape(-1, len(names))
    counts = pos.T.astype(np.int64) @ pos.astype(np.int64)
    n_row = np.diag(counts).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / n_row[:, None]
    return {"labels": list(names), "n_positive": n_row.astype(int).tolist(),
            "p_col_given_row": [[None if np.isnan(x) else float(x) for x in row] for row in p]}


@dataclasses.dataclass
class JointAbsence:
    cases: int        # references positive for at least one of the two findings
    errors: int       # ... whose generated report is negative for both
    examples: list[str]

    @property
    def rate(self) -> float | None:
        return self.errors / self.cases if self.cases else None


def joint_absence_errors(generated: Sequence[Mapping[str, int | None]], reference: Sequence[Mapping[str, int | None]],
                         ids: Sequence[str], pair: tuple[str, str] = ("Pleural Effusion", "Pneumothorax"),
                         reference_uncertain_positive: bool = False) -> JointAbsence:
    """Section 6: the generation explicitly denies both findings (0 and 0) while the reference has one (1)."""
    ok = (1, -1) if reference_uncertain_positive else (1,)
    cases = errors = 0
    examples = []
    for g, r, i in zip(generated, reference, ids):
        if not any(r.get(f) in ok for f in pair):
            continue
        cases += 1
        if all(g.get(f) == 0 for f in pair):
            errors += 1
            examples.append(str(i))
    return JointAbsence(cases, errors, examples[:20])


def bias_report(shards: str | None, predictions: str | None, given: str = "Pneumothorax",
                finding: str = "Pleural Effusion", uncertain: str = "exclude", split: str | None = None,
                labels_from: str = "auto") -> dict[str, Any]:
    """Table 5 on a dataset's shards and/or joint-absence errors on a predictions file."""
    from ..metrics.chexpert_rules import label_reports

    out: dict[str, Any] = {"kind": "bias", "shards": shards, "predictions": predictions,
                           "labels_from": labels_from, "labeller": "chexpert-rules"}
    if shards:
        from ..data.loader import iter_records  # lazy: the data stage is only needed here

        labels = [dict(r.labels) for r in iter_records(shards, split=split, with_masks=False)]
        texts = None
        if labels_from == "text" or (labels_from == "auto" and not any(
                lab.get(given) is not None or lab.get(finding) is not None for lab in labels)):
            texts = [f"{r.findings} {r.impression}".strip()
                     for r in iter_records(shards, split=split, with_masks=False)]
            labels = label_reports(texts)
        if not labels:
            raise ValueError(f"{shards}: no samples{f' in split {split!r}' if split else ''}")
        out["labels_source"] = "report text (chexpert-rules)" if texts is not None else "dataset labels"
        out["table5"] = cooccurrence(labels, given, finding, uncertain)
        out["matrix"] = conditional_matrix(labels, uncertain=uncertain)
    if predictions:
        from .inputs import load_predictions

        rows = [r for r in load_predictions(predictions) if isinstance(r.get("reference"), str)]
        if not rows:
            raise ValueError(f"{predictions}: no predictions with a reference text")
        gen = label_reports([r["generated"] for r in rows])
        # Reference findings: the dataset's own labels (generate-report's `reference_labels`) when present,
        # else chexpert-rules on the reference text; generated reports are always labelled by chexpert-rules.
        ref = [r["reference_labels"] if isinstance(r.get("reference_labels"), dict) and labels_from != "text"
               else lab for r, lab in zip(rows, label_reports([r["reference"] for r in rows]))]
        by_encoder: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            by_encoder.setdefault(str(r.get("encoder") or "unknown"), []).append(i)
        out["joint_absence"] = {}
        for enc, idx in by_encoder.items():
            ja = joint_absence_errors([gen[i] for i in idx], [ref[i] for i in idx], [rows[i]["id"] for i in idx],
                                      (finding, given))
            out["joint_absence"][enc] = {**dataclasses.asdict(ja), "rate": ja.rate, "pair": [finding, given]}
    if not shards and not predictions:
        raise ValueError("give SHARDS and/or a PREDICTIONS file")
    return out
