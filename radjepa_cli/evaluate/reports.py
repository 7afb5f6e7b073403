"""`radjepa evaluate reports`: score a predictions.jsonl with bootstrap CIs, per (dataset, encoder, llm) group.

Lexical metrics and chexpert-rules F1 always run. RadGraph (RG_E / RG_ER "RGER" / RG_ER-bar), CheXbert F1 and GREEN
run when their annotations / judge responses are in the file or their local weights are given; otherwise the
metric is reported as "n/a (no local weights: …)" and never replaced by another number.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..metrics import bootstrap as bs
from ..metrics.radgraph import ScorerUnavailable

EXTRA_METRICS = {
    "rg_e": ("RG_E", "RadGraph entity F1 (model_type=radgraph), mean over reports, x100"),
    "rger": ("RGER", "RadGraph RG_ER partial-reward F1 (entities + has-relation), mean over reports, x100"),
    "rg_er_bar": ("RG_ER-bar", "RadGraph complete-reward F1 (entities + relations), mean over reports, x100"),
    "chexbert_f1_14_macro": ("Macro-F1-14 (CheXbert)", "CheXbert labels, macro F1 over CheXpert-14, x100"),
    "chexbert_f1_14_micro": ("Micro-F1-14 (CheXbert)", "CheXbert labels, micro F1 over CheXpert-14, x100"),
    "green": ("GREEN", "GREEN judge: matched / (matched + significant errors), mean over reports, 0-1"),
}


@dataclasses.dataclass
class ReportEvalConfig:
    predictions: str
    bootstrap: int = 500
    seed: int = 0
    uncertain_as: str = "positive"
    radgraph_dir: str | None = None
    chexbert_dir: str | None = None
    green_dir: str | None = None
    default_encoder: str | None = None  # for rows without an `encoder` field (else: the file's folder name)
    default_dataset: str | None = None


def group_key(row: dict) -> tuple[str, str, str]:
    return (str(row.get("dataset") or "unknown"), str(row.get("encoder") or "unknown"), str(row.get("llm") or ""))


def _radgraph(rows, gens, refs, cfg, unavailable) -> dict[str, np.ndarray]:
    from ..metrics.radgraph import RadGraphModel, radgraph_scores

    if all(isinstance(r.get("radgraph"), dict) for r in rows):
        s = radgraph_scores([r["radgraph"]["generated"] for r in rows], [r["radgraph"]["reference"] for r in rows])
    else:
        try:
            s = RadGraphModel(cfg.radgraph_dir).score(gens, refs)
        except ScorerUnavailable as e:
            for k in ("rg_e", "rger", "rg_er_bar"):
                unavailable[k] = f"n/a ({e})"
            return {}
    return {"rg_e": 100 * s["rg_e"], "rger": 100 * s["rg_er"], "rg_er_bar": 100 * s["rg_er_bar"]}


def _green(rows, gens, refs, cfg, unavailable, notes) -> dict[str, np.ndarray]:
    from ..metrics.green import GreenJudge, parse_response

    if all(isinstance(r.get("green_response"), str) for r in rows):
        scores = [parse_response(r["green_response"]).score for r in rows]
    else:
        try:
            scores = GreenJudge(cfg.green_dir).score(refs, gens)
        except ScorerUnavailable as e:
            unavailable["green"] = f"n/a ({e})"
            return {}
    bad = sum(s is None for s in scores)
    if bad:  # GREEN's own default (return_0_if_no_green_score): an unparseable judgement scores 0
        notes.append(f"GREEN: {bad} judge responses could not be parsed and score 0")
    return {"green": np.array([0.0 if s is None else s for s in scores])}


@dataclasses.dataclass
class ModelScores:
    """Per-row outputs of the optional model-based scorers, computed once per file (a 7B judge is expensive)."""

    means: dict[str, np.ndarray]
    chexbert: tuple[list[dict], list[dict]] | None
    unavailable: dict[str, str]
    notes: list[str]


def _require_references(rows: Sequence[dict], where: str) -> None:
    missing = [r["id"] for r in rows if not isinstance(r.get("reference"), str)]
    if missing:
        raise ValueError(f"{where}: {len(missing)} predictions have no 'reference' text "
                         f"(first: {missing[0]!r}); scoring needs one per report")


def model_scores(rows: Sequence[dict], cfg: ReportEvalConfig) -> ModelScores:
    gens, refs = [r["generated"] for r in rows], [r["reference"] for r in rows]
    unavailable: dict[str, str] = {}
    notes: list[str] = []
    means = _radgraph(rows, gens, refs, cfg, unavailable)
    means.update(_green(rows, gens, refs, cfg, unavailable, notes))
    chexbert = None
    if cfg.chexbert_dir:
        from ..metrics.chexbert import CheXbertLabeller

        try:
            lab = CheXbertLabeller(cfg.chexbert_dir)
            chexbert = (lab.label(gens), lab.label(refs))
        except ScorerUnavailable as e:
            unavailable["chexbert_f1_14_macro"] = f"n/a ({e})"
    else:
        unavailable["chexbert_f1_14_macro"] = "n/a (no local weights: pass --chexbert-dir DIR)"
    return ModelScores(means, chexbert, unavailable, notes)


def score_rows(rows: Sequence[dict], cfg: ReportEvalConfig, idx: Sequence[int] | None = None,
               pre: ModelScores | None = None) -> dict[str, Any]:
    """Metrics of rows[idx] (default: all) with bootstrap CIs; `pre` = model scores already computed for `rows`."""
    _require_references(rows, cfg.predictions)
    pre = pre or model_scores(rows, cfg)
    idx = list(range(len(rows))) if idx is None else list(idx)
    gens, refs = [rows[i]["generated"] for i in idx], [rows[i]["reference"] for i in idx]
    stats = bs.compute_report_stats(gens, refs, uncertain_as=cfg.uncertain_as,
                                    means={k: v[idx] for k, v in pre.means.items()})
    if pre.chexbert is not None:
        from ..data.labels import CHEXPERT_14
        from ..metrics import f1 as f1m

        g, r = pre.chexbert
        stats.label_counts["chexbert_f1_14"] = f1m.f1_counts([g[i] for i in idx], [r[i] for i in idx],
                                                             CHEXPERT_14, cfg.uncertain_as)
    result = bs.bootstrap(stats, cfg.bootstrap, cfg.seed)
    info = {**bs.METRICS, **EXTRA_METRICS}
    metrics = {k: {**v, "label": info[k][0], "definition": info[k][1]} for k, v in result.items()}
    return {"n": len(idx), "metrics": metrics, "unavailable": dict(pre.unavailable), "notes": list(pre.notes)}


def evaluate_predictions(cfg: ReportEvalConfig) -> dict[str, Any]:
    """Score the whole file (all rows) and, when it mixes datasets/encoders/LMs, each group separately."""
    from .inputs import load_predictions

    t0 = time.time()
    rows = load_predictions(cfg.predictions)
    for r in rows:
        r.setdefault("encoder", cfg.default_encoder or Path(cfg.predictions).resolve().parent.name)
        if cfg.default_dataset:
            r.setdefault("dataset", cfg.default_dataset)
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(group_key(r), []).append(i)
    _require_references(rows, cfg.predictions)
    pre = model_scores(rows, cfg)
    overall = score_rows(rows, cfg, pre=pre)
    out: dict[str, Any] = {
        "kind": "report-eval", "predictions": str(cfg.predictions), **overall,
        "labeller": "chexpert-rules (rule-based; not CheXbert)", "uncertain_as": cfg.uncertain_as,
        "groups": [], "config": dataclasses.asdict(cfg),
    }
    if len(groups) > 1:
        for (ds, enc, llm), idx in groups.items():
            out["groups"].append({"dataset": ds, "encoder": enc, "llm": llm, **score_rows(rows, cfg, idx, pre)})
    else:
        (ds, enc, llm), = groups
        out["groups"].append({"dataset": ds, "encoder": enc, "llm": llm, **overall})
    out["seconds"] = round(time.time() - t0, 2)
    return out
