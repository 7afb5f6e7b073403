"""Linear probing on frozen global embeddings (the paper's Section 10.1 / Tables 6 and 9).

A sigmoid linear classifier on the encoder's pooled embedding, binary cross-entropy over a multi-label set with
unknown labels masked out, AdamW (paper: lr 5e-5) with a cosine schedule, fitted on the `train` split (patient-level
splits come from the shards) and scored on `test`: per-class AUPRC and AUROC, and the aggregate = mean AUPRC over the
label set, each as mean ± std over seeds. Features are computed once and cached (models.features); with `augment`
the paper's probe augmentations are applied and the training features recomputed every epoch. Every seed's head
is saved (heads/seed-K.safetensors) with a model.json for `radjepa predict` (downstream/saved.py): the `val` split
picks the best seed (macro-AUPRC) and each label's decision threshold (max F1); it never touches the test metrics.

Features are standardised with the training set's mean/std before the linear layer (the MAE linear-probe
protocol's affine-free BatchNorm): a fixed affine map, so the probe is still linear in the encoder's embedding,
and one learning rate works for encoders whose embeddings differ in scale by orders of magnitude.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from radjepa_cli.data.labels import labels_to_arrays, resolve_label_set
from radjepa_cli.downstream.common import best_seed, cosine_lr, has_split, split_features, start_run, write_model
from radjepa_cli.downstream.saved import Standardizer, build_probe_head, save_head


@dataclasses.dataclass
class ProbeConfig:
    shards: str
    encoder: str
    out: str
    head: str = "linear"  # linear (the paper's, on pooled features) | attentive (queries over patch tokens)
    queries: int = 4  # attentive head: learnable queries (downstream/attentive.py)
    labels: str = "phantom"  # a label-set name (vindr6, rsna, chexpert14, nih14, phantom) or comma-separated names
    seeds: int = 5
    epochs: int = 100
    lr: float = 5e-5  # paper: AdamW 5e-5, cosine
    weight_decay: float = 0.01  # AdamW's default (the paper does not state one)
    batch_size: int = 96  # paper: 32 per GPU × 3
    augment: bool = False
    uncertain: str = "mask"  # -1 labels: mask | positive | negative
    standardize: bool = True
    image_size: int | None = None  # loader resolution; None = the encoder's input size
    train_split: str = "train"
    eval_split: str = "test"
    val_split: str | None = "val"  # decision thresholds and the best seed (the train split when there is no val)
    feature_batch_size: int = 32
    cache_dir: str | None = None
    use_cache: bool = True
    trust_remote_code: bool = False
    device: str = "auto"
    plots: bool = True
    progress: bool = True


def label_matrix(meta: list[dict], names, uncertain: str) -> tuple[torch.Tensor, torch.Tensor]:
    values, known = labels_to_arrays([m.get("labels") or {} for m in meta], names, uncertain)
    return torch.from_numpy(values), torch.from_numpy(known)


def masked_bce(logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (loss * known).sum() / known.sum().clamp_min(1)


def class_metrics(scores: np.ndarray, values: np.ndarray, known: np.ndarray, names) -> dict[str, dict]:
    """AUPRC (average precision) and AUROC per class over the known entries; None when a class has only one
    outcome in the evaluation split (its AUROC/AUPRC are undefined)."""
    from sklearn.metrics import average_precision_score, roc_auc_score
    out = {}
    for j, name in enumerate(names):
        k = known[:, j]
        y, s = values[k, j], scores[k, j]
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == len(y):
            out[name] = {"auprc": None, "auroc": None, "n_pos": n_pos, "n": int(len(y))}
            continue
        out[name] = {"auprc": float(average_precision_score(y, s)), "auroc": float(roc_auc_score(y, s)),
                     "n_pos": n_pos, "n": int(len(y))}
    return out


def train_head(x: torch.Tensor, y: torch.Tensor, known: torch.Tensor, cfg: ProbeConfig, seed: int,
               device: torch.device, feature_fn=None) -> nn.Module:
    """Fit Standardizer → Linear on (x, y, known). feature_fn(epoch, generator) → (x, y, known) recomputes the
    training features every epoch (augment mode)."""
    if device.type == "cpu" and feature_fn is None:
        # A [D → L] head is far too small for intra-op threads: on a busy machine their synchronisation costs
        # 10× the arithmetic. Run it on one thread and give the setting back afterwards.
        prev = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _train_head(x, y, known, cfg, seed, device, None)
        finally:
            torch.set_num_threads(prev)
    return _train_head(x, y, known, cfg, seed, device, feature_fn)


def _train_head(x, y, known, cfg: ProbeConfig, seed: int, device: torch.device, feature_fn) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = nn.Sequential(Standardizer(x, x.shape[-1], cfg.standardize), make_head(cfg, x.shape[-1], y.shape[1]))
    head = head.to(device)
    opt = torch.optim.AdamW(head[1].parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total, step = cfg.epochs * steps_per_epoch, 0
    for epoch in range(cfg.epochs):
        if feature_fn is not None:
            x, y, known = feature_fn(epoch, g)
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, total, cfg.lr)
            loss = masked_bce(head(x[idx].to(device)), y[idx].to(device), known[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return head.eval()


def make_head(cfg: ProbeConfig, in_dim: int, n_out: int) -> nn.Module:
    return build_probe_head(cfg.head, in_dim, n_out, head_config(cfg))


def head_config(cfg: ProbeConfig) -> dict:
    """The head's constructor options beyond (in_dim, n_out), as model.json records them."""
    return {"queries": cfg.queries} if cfg.head == "attentive" else {}


def _summary(values: list[float | None]) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def head_scores(head: nn.Module, x: torch.Tensor, device) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(head(x.to(device))).cpu().numpy()


def seed_metrics(seed: int, scores: np.ndarray, values: np.ndarray, known: np.ndarray, names) -> dict:
    """One seed's per-class AUPRC/AUROC and their means over the classes where they are defined."""
    m = class_metrics(scores, values, known.astype(bool), names)
    auprc = [v["auprc"] for v in m.values() if v["auprc"] is not None]
    auroc = [v["auroc"] for v in m.values() if v["auroc"] is not None]
    return {"seed": seed, "per_class": m, "aggregate_auprc": float(np.mean(auprc)) if auprc else None,
            "aggregate_auroc": float(np.mean(auroc)) if auroc else None}


def summarize_seeds(per_seed: list[dict], names) -> tuple[list[str], dict, dict]:
    """(evaluated labels, per-class mean ± std over seeds, aggregate mean ± std): what results.json reports
    (and what `predict` reports against labelled shards)."""
    evaluated = [n for n in names if per_seed[0]["per_class"][n]["auprc"] is not None]
    per_class = {}
    for n in evaluated:
        pm, ps = _summary([s["per_class"][n]["auprc"] for s in per_seed])
        rm, rs = _summary([s["per_class"][n]["auroc"] for s in per_seed])
        per_class[n] = {"auprc_mean": pm, "auprc_std": ps, "auroc_mean": rm, "auroc_std": rs,
                        "n_pos": per_seed[0]["per_class"][n]["n_pos"]}
    am, asd = _summary([s["aggregate_auprc"] for s in per_seed])
    rm, rsd = _summary([s["aggregate_auroc"] for s in per_seed])
    return evaluated, per_class, {"auprc_mean": am, "auprc_std": asd, "auroc_mean": rm, "auroc_std": rsd}


def run_probe(cfg: ProbeConfig, console=None) -> dict:
    """Fit and score the probe for every seed; write results.json (+ PR curves), every seed's head and, last,
    model.json (downstream/saved.py) into cfg.out; return the results."""
    from radjepa_cli import config as config_mod
    from radjepa_cli.io import write_json
    from radjepa_cli.models.features import FeatureSpec

    out, device, encoder = start_run(cfg)
    names = resolve_label_set(cfg.labels)
    if cfg.head not in ("linear", "attentive"):
        raise ValueError(f"--head must be linear or attentive, not {cfg.head!r}")
    if cfg.head == "attentive" and cfg.augment:
        raise ValueError("--augment recomputes pooled features every epoch; it is not available with --head attentive")
    tokens = cfg.head == "attentive"   # fp16 patch tokens in the cache: [N, T, D]
    spec = FeatureSpec(image_size=cfg.image_size or encoder.image_size, tokens=tokens)
    select = cfg.val_split if has_split(cfg.shards, cfg.val_split) else cfg.train_split
    t0 = time.perf_counter()
    feats = {split: split_features(cfg, encoder, split, spec)
             for split in dict.fromkeys((cfg.train_split, cfg.eval_split, select))}
    feature_s = time.perf_counter() - t0
    train, test, sel = feats[cfg.train_split], feats[cfg.eval_split], feats[select]
    _check_disjoint_patients(train.meta, test.meta, cfg)
    x_tr, x_te, x_sel = ((f.tokens if tokens else f.pooled).float() for f in (train, test, sel))
    y_tr, k_tr = label_matrix(train.meta, names, cfg.uncertain)
    y_te, k_te = label_matrix(test.meta, names, cfg.uncertain)
    y_sel, k_sel = (t.numpy() for t in label_matrix(sel.meta, names, cfg.uncertain))
    if not k_tr.any():
        raise ValueError(f"{cfg.shards}: none of the labels {list(names)} is known in the {cfg.train_split} split")
    feature_fn = _augmented_features(encoder, cfg, spec, names, device) if cfg.augment else None

    per_seed, scores_by_seed, saved, sel_scores = [], [], [], []
    t1 = time.perf_counter()
    for seed in range(cfg.seeds):
        head = train_head(x_tr, y_tr, k_tr, cfg, seed, device, feature_fn)
        scores = head_scores(head, x_te, device)
        per_seed.append(seed_metrics(seed, scores, y_te.numpy(), k_te.numpy(), names))
        scores_by_seed.append(scores)
        sel_scores.append(head_scores(head, x_sel, device))
        saved.append({**save_head(out, seed, head),
                      "val_score": seed_metrics(seed, sel_scores[-1], y_sel, k_sel, names)["aggregate_auprc"]})
    fit_s = time.perf_counter() - t1

    evaluated, per_class, aggregate = summarize_seeds(per_seed, names)
    if not evaluated:
        raise ValueError(f"no label of {list(names)} has both outcomes in the {cfg.eval_split} split of {cfg.shards}")
    datasets = Counter(m.get("dataset", "") for m in test.meta)
    results = {
        "kind": "probe", "encoder": cfg.encoder, "head": cfg.head, "label_set": cfg.labels, "labels": evaluated,
        "dataset": "+".join(sorted(datasets)),
        "seeds": list(range(cfg.seeds)), "per_class": per_class,
        "aggregate": aggregate,
        "per_seed": per_seed,
        "skipped_labels": [n for n in names if n not in evaluated],
        "n_train": len(train), "n_test": len(test),
        "encoder_info": {"name": encoder.name, "fingerprint": encoder.fingerprint, "embed_dim": encoder.pooled_dim,
                         "pooling": encoder.pooling, "image_size": encoder.image_size},
        "timing_s": {"features": round(feature_s, 3), "fit_and_score": round(fit_s, 3),
                     "features_from_cache": bool(train.from_cache and test.from_cache)},
        "config": config_mod.to_dict(cfg),
    }
    config_mod.save(cfg, out)
    if cfg.plots:
        from radjepa_cli.downstream.plots import pr_curves
        pr_curves(out / "pr_curves.png", scores_by_seed, y_te.numpy(), k_te.numpy().astype(bool), evaluated, names,
                  title=f"{cfg.encoder} — {cfg.labels} ({cfg.eval_split})")
    write_json(out / "results.json", results)  # its presence means the run finished
    _write_probe_model(cfg, out, encoder, spec, names, evaluated, saved, sel_scores, (y_sel, k_sel), select,
                       (len(train), len(test)))
    return results


def _write_probe_model(cfg: ProbeConfig, out: Path, encoder, spec, names, evaluated, saved, sel_scores, sel_labels,
                       select: str, counts) -> None:
    """model.json, last of all: the heads are usable by `radjepa predict` from here on."""
    from radjepa_cli.metrics.classification import decision_thresholds

    best, (y_sel, k_sel) = best_seed(saved), sel_labels
    write_model(cfg, out, encoder, "probe", spec.image_size, {
        "head": {"kind": cfg.head, "config": {"in_dim": int(encoder.embed_dim if cfg.head == "attentive"
                                                           else encoder.pooled_dim), "n_out": len(names),
                                              **head_config(cfg)},
                 "features": "tokens" if cfg.head == "attentive" else "pooled", "standardize": cfg.standardize},
        "labels": list(names), "label_set": cfg.labels, "uncertain": cfg.uncertain, "evaluated_labels": evaluated,
        "thresholds": decision_thresholds(y_sel, sel_scores[best], k_sel, names, select),
        "seeds": saved, "best_seed": best, "best_seed_by": f"macro-AUPRC on the {select} split",
        "trained_on": {"shards": str(Path(cfg.shards).resolve()), "train_split": cfg.train_split,
                       "selection_split": select, "eval_split": cfg.eval_split, "n_train": counts[0],
                       "n_test": counts[1]},
    })


def _check_disjoint_patients(train_meta, test_meta, cfg: ProbeConfig) -> None:
    """Patient-level splits: a patient in both train and test would leak; refuse."""
    tr = {m.get("patient") for m in train_meta if m.get("patient")}
    both = tr & {m.get("patient") for m in test_meta if m.get("patient")}
    if both:
        raise ValueError(f"{cfg.shards}: {len(both)} patient(s) appear in both {cfg.train_split} and "
                         f"{cfg.eval_split} (e.g. {sorted(both)[:3]}); splits must be by patient")


def _augmented_features(encoder, cfg: ProbeConfig, spec, names, device):
    """Augment mode: each epoch re-reads the training images, applies the paper's probe augmentations and
    re-encodes them (nothing cached: every epoch's features differ)."""
    from radjepa_cli.data.loader import make_loader
    from radjepa_cli.downstream.augment import AugmentConfig, augment
    aug = AugmentConfig.probe()

    def features(epoch: int, g: torch.Generator):
        loader = make_loader(cfg.shards, split=cfg.train_split, batch_size=cfg.feature_batch_size,
                             image_size=spec.image_size, label_names=names, uncertain=cfg.uncertain,
                             shuffle=False, seed=epoch)
        xs, ys, ks = [], [], []
        with torch.no_grad():
            for batch in loader:
                images, _, _ = augment(batch["image"].to(device), None, aug, g)
                xs.append(encoder(images).pooled.float())
                ys.append(batch["labels"])
                ks.append(batch["label_known"])
        return torch.cat(xs), torch.cat(ys), torch.cat(ks)
    return features
