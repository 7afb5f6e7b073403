"""RadGraph entity/relation F1 (RG_E, RG_ER = the paper's "RGER", RG_ER-bar) over annotation dicts, and the
optional RadGraph model (the `radgraph` package, DyGIE++ on BERT) from a local directory only.

Annotation dict (the radgraph package's per-report output): {"text": str, "entities": {id: {"tokens": str,
"label": "ANAT-DP" | "OBS-DP" | ..., "relations": [[relation_type, target_id], ...]}}}.
Per report (the radgraph package's rewards, partial = "RG_ER"):
  RG_E      set of (tokens, label) for every entity
  RG_ER     (tokens, label) for entities without relations, (tokens, label, True) for entities with relations
  RG_ER-bar (tokens, label) without relations; (tokens lowercased, label, relation type, target tokens) per relation
F1 of the hypothesis set against the reference set; 0 when either report has no entities; mean over reports.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

LEVELS = ("rg_e", "rg_er", "rg_er_bar")


class ScorerUnavailable(RuntimeError):
    """An optional model-based scorer cannot run here; str(e) says why (shown as "n/a (...)")."""


def _items(ann: Mapping, level: str) -> set:
    entities = ann.get("entities", {})
    out = set()
    for ent in entities.values():
        tokens, label, rels = ent["tokens"], ent["label"], ent.get("relations") or []
        if level == "rg_e" or not rels:
            out.add((tokens, label))
        elif level == "rg_er":
            out.add((tokens, label, True))
        else:
            for rel_type, target in rels:
                out.add((tokens.lower(), label, rel_type, entities[str(target)]["tokens"].lower()))
    return out


def entity_f1(hypothesis: Mapping, reference: Mapping, level: str = "rg_er") -> tuple[float, float, float]:
    """(f1, precision, recall) of one report pair at `level`."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    if not hypothesis.get("entities") or not reference.get("entities"):
        return 0.0, 0.0, 0.0
    h, r = _items(hypothesis, level), _items(reference, level)
    p = len(h & r) / len(h) if h else 0.0
    rec = len(r & h) / len(r) if r else 0.0
    f = 2 * p * rec / (p + rec) if p + rec else 0.0
    return f, p, rec


def radgraph_scores(hypotheses: Sequence[Mapping], references: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """Per-report F1 (0–1) at every level: {level: float64 [N]}."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypothesis annotations but {len(references)} reference annotations")
    return {lv: np.array([entity_f1(h, r, lv)[0] for h, r in zip(hypotheses, references)]) for lv in LEVELS}


class RadGraphModel:
    """The RadGraph model (`radgraph` package, model_type pinned to "radgraph": radgraph-xl gives other numbers)
    loaded from `model_dir` with the hub offline. Raises ScorerUnavailable with the reason when it cannot."""

    MODEL_TYPE = "radgraph"

    def __init__(self, model_dir: str | Path | None):
        if not model_dir:
            raise ScorerUnavailable("no local weights: pass --radgraph-dir DIR (radgraph package model cache)")
        model_dir = Path(model_dir)
        if not model_dir.is_dir() or not any(model_dir.rglob("*")):
            raise ScorerUnavailable(f"no local weights: {model_dir} is missing or empty")
        try:
            import radgraph  # noqa: F401
        except ImportError:
            raise ScorerUnavailable("no local weights: the `radgraph` package is not installed "
                                    "(pip install 'radjepa[scorers]')") from None
        os.environ["HF_HUB_OFFLINE"] = "1"  # never fetch: a missing file must fail, not download
        try:
            from radgraph import RadGraph
            self._model = RadGraph(model_type=self.MODEL_TYPE, model_cache_dir=str(model_dir))
        except Exception as e:  # the package raises many types for a missing/incomplete cache
            raise ScorerUnavailable(f"no local weights: radgraph could not load from {model_dir} ({e})") from None

    def annotate(self, texts: Sequence[str]) -> list[dict]:
        out = self._model(list(texts))
        return [out[str(i)] for i in range(len(texts))]

    def score(self, hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
        # Empty reports have no entities: F1 0 without running the model on them (as the package does).
        keep = [i for i, (h, r) in enumerate(zip(hypotheses, references)) if h.strip() and r.strip()]
        anns = self.annotate([hypotheses[i] for i in keep] + [references[i] for i in keep])
        scores = {lv: np.zeros(len(hypotheses)) for lv in LEVELS}
        part = radgraph_scores(anns[:len(keep)], anns[len(keep):])
        for lv in LEVELS:
            scores[lv][keep] = part[lv]
        return scores
