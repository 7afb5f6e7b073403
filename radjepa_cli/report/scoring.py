"""Scoring a report model's labels against a linear probe on the same features (issue 14).

The probe answers "how much of each finding could a linear read-out recover from these tokens?" on the encoder's
tokens and on the projector's output tokens (what the LM is given); the generated text's labels (chexpert-rules,
uncertain → positive) are scored against the same ground truth, label set and F1 (report/probe.py). Their ratio
is the "label transfer": 1 means the report carries all the probe can read, ~0 that the LM writes without it.

Distinct-report warning: for N >= MIN_IMAGES_FOR_WARNING images we warn when fewer than DISTINCT_FRACTION·N
reports are distinct. Phantom and real findings combine into far more than 10% distinct label sets, so a model
below it has collapsed onto a few texts (the quickstart model wrote 2 for 295 images).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from radjepa_cli.report.features import CachedSplit, cache_split
from radjepa_cli.report.probe import label_matrix, masked_f1, probe_label_names, ridge_probe

MIN_IMAGES_FOR_WARNING = 50
DISTINCT_FRACTION = 0.10
FLAT_MAX_DIM = 8192  # flattened tokens above this width are probed by their mean only (SVD cost ~ n·d·min(n, d))
UNCERTAIN_AS = "positive"


def distinct_warning(texts: Sequence[str], hint: bool = True) -> str | None:
    n, k = len(texts), len(set(texts))
    if n >= MIN_IMAGES_FOR_WARNING and k < DISTINCT_FRACTION * n:
        return (f"the model wrote only {k} distinct reports for {n} images (< {DISTINCT_FRACTION:.0%}): it is "
                f"probably ignoring the image" +
                ("; run `radjepa diagnose-report` to see where the signal is lost" if hint else ""))
    return None


def split_cache(bundle, shards: str, split: str, *, progress=None) -> CachedSplit:
    """Encoder tokens of one shard split, cached under MODEL/cache/SPLIT (training's cache is reused when the
    encoder and shard contents are the same)."""
    from radjepa_cli.data.loader import iter_records, shard_paths
    from radjepa_cli.models.features import shards_fingerprint

    if not shard_paths(shards, split):
        raise ValueError(f"{shards}: no '{split}' shards (the probe needs train and val splits)")
    enc = bundle.encoder
    identity = {"encoder": enc.fingerprint, "split": split, "shards": shards_fingerprint(shards, split)}
    return cache_split(enc, iter_records(shards, split, with_masks=False), Path(bundle.path) / "cache" / split,
                       identity=identity, image_size=enc.image_size, feature_layer=bundle.feature_layer,
                       device=enc.device, progress=progress, description=f"encoding {split} images")


@torch.no_grad()
def feature_views(bundle, split: CachedSplit, idx: Sequence[int] | None = None, chunk: int = 256) -> dict:
    """{view: [n, d] float64}: encoder tokens and projector output tokens, mean-pooled and (when small) flat."""
    idx = np.arange(len(split)) if idx is None else np.asarray(idx)
    proj = bundle.model.projector
    device = next(proj.parameters()).device
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(idx), chunk):
        tok = split.batch(idx[i:i + chunk])
        out = proj(tok.to(device, next(proj.parameters()).dtype)).float().cpu()
        for name, t in (("encoder", tok), ("projector", out)):
            parts.setdefault(f"{name}_mean", []).append(t.mean(1).double().numpy())
            if t.shape[1] * t.shape[2] <= FLAT_MAX_DIM:
                parts.setdefault(f"{name}_flat", []).append(t.flatten(1).double().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def probe_scores(bundle, train: CachedSplit, val: CachedSplit, test: CachedSplit, test_idx: Sequence[int],
                 names: Sequence[str]) -> dict:
    """{view: {macro_f1, per_label_f1, val_macro_f1, ridge}} for every feature view, on test_idx of test."""
    y_tr, k_tr = label_matrix(train.labels, names, UNCERTAIN_AS)
    y_va, k_va = label_matrix(val.labels, names, UNCERTAIN_AS)
    y_te, k_te = label_matrix([test.labels[i] for i in test_idx], names, UNCERTAIN_AS)
    f_tr, f_va, f_te = feature_views(bundle, train), feature_views(bundle, val), feature_views(bundle, test, test_idx)
    out = {}
    for view in f_tr:
        res = ridge_probe(f_tr[view], y_tr, k_tr, f_va[view], y_va, k_va, f_te[view], names)
        macro, per = res.f1(y_te, k_te)
        out[view] = {"macro_f1": round(macro, 4), "per_label_f1": dict(zip(names, np.round(per, 3).tolist())),
                     "val_macro_f1": round(res.val_macro_f1, 4), "ridge": res.ridge}
    return out


def best_view(probes: Mapping[str, dict], prefix: str) -> tuple[str, float] | None:
    """The view of `prefix` ('encoder' | 'projector') with the best *validation* F1 (not the test F1)."""
    cands = [(v["val_macro_f1"], k) for k, v in probes.items() if k.startswith(prefix)]
    if not cands:
        return None
    k = max(cands)[1]
    return k, probes[k]["macro_f1"]


def report_f1(generated_labels: Sequence[Mapping], truth: Sequence[Mapping], names: Sequence[str]) -> dict:
    pred, _ = label_matrix(generated_labels, names, UNCERTAIN_AS)
    y, known = label_matrix(truth, names, UNCERTAIN_AS)
    macro, per = masked_f1(pred > 0.5, y, known)
    return {"macro_f1": round(macro, 4), "per_label_f1": dict(zip(names, np.round(per, 3).tolist()))}


def transfer(report: float, probe: float | None) -> float | None:
    return round(report / probe, 4) if probe else None


def summarize(rows: Sequence[dict], *, bundle=None, shards: str | None = None, split: str | None = None,
              probe: bool = True, progress=None) -> dict:
    """The predictions' one-line summary: distinct reports (+ warning), the report's label F1 and, given the
    shards the rows came from, the linear probe's F1 on the same images and the label-transfer ratio."""
    from radjepa_cli.data.labels import CHEXPERT_14
    from radjepa_cli.metrics.chexpert_rules import NAME

    texts = [r["generated"] for r in rows]
    out: dict = {"n": len(rows), "distinct_reports": len(set(texts)), "warning": distinct_warning(texts)}
    scored = [r for r in rows if r.get("reference_labels") and r.get("labels") is not None]
    if not scored:
        return out
    names = None
    if probe and bundle is not None and shards is not None:
        try:
            train, val = split_cache(bundle, shards, "train", progress=progress), \
                split_cache(bundle, shards, "val", progress=progress)
            test = split_cache(bundle, shards, split or "test", progress=progress)
        except ValueError as e:  # e.g. a test-only shard folder: the reports are still scored, without a probe
            out["probe_skipped"] = str(e)
        else:
            names = probe_label_names(train.labels, CHEXPERT_14)
            where = {k: i for i, k in enumerate(test.keys)}
            scored = [r for r in scored if r["id"] in where]
            if names and scored:
                out["probe"] = probe_scores(bundle, train, val, test, [where[r["id"]] for r in scored], names)
    if names is None:
        names = probe_label_names([r["reference_labels"] for r in scored], CHEXPERT_14)
    if not names or not scored:
        return out
    rep = report_f1([r["labels"] for r in scored], [r["reference_labels"] for r in scored], names)
    out.update(labels=list(names), labeller=f"{NAME} (uncertain → {UNCERTAIN_AS}) vs the dataset's labels",
               thresholds="probe: ridge strength and per-label max-F1 thresholds chosen on val", report=rep,
               scored=len(scored))
    if "probe" in out:
        enc, proj = best_view(out["probe"], "encoder"), best_view(out["probe"], "projector")
        out["probe_macro_f1"] = enc[1] if enc else None
        out["projector_probe_macro_f1"] = proj[1] if proj else None
        out["label_transfer"] = transfer(rep["macro_f1"], out["probe_macro_f1"])
    return out


def summary_line(s: Mapping) -> str:
    parts = [f"{s['distinct_reports']}/{s['n']} distinct reports"]
    if "report" in s:
        parts.append(f"report label macro-F1 {s['report']['macro_f1']:.3f}")
    if s.get("probe_macro_f1") is not None:
        parts.append(f"linear probe {s['probe_macro_f1']:.3f} (projector tokens {s['projector_probe_macro_f1']:.3f})")
        parts.append(f"label transfer {s['label_transfer']}")
    return "; ".join(parts)
