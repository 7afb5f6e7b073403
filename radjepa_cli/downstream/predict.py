"""`radjepa predict`: a saved probe or segmentation model (downstream/saved.py) on new images or shards.

The encoder is the one model.json names, found through the zoo and checked by its fingerprint; the head is the seed
whose validation score was best (or --seed). Outputs in --out:
  probe    predictions.csv + predictions.jsonl: per image the probability of every label and the label thresholded
           at model.json's decision threshold (max F1 on the validation split)
  segment  masks/{id}/{structure}.png (0/255, on the decoded image's pixel grid; shards: the eval crop),
           predictions.jsonl (mask files, area fractions), overlays/{id}.png with --overlays
  metrics.json   for shard inputs with labels / masks: the same metrics `probe` / `segment` report (every saved
                 seed, mean ± std; computed by the same functions on the same cached features, hence equal)
  skipped.json   inputs that could not be read, each with the reason
  predict.json   what ran (model, encoder, seed, counts); written last
Shards are read through the feature cache exactly like `probe` / `segment` read them.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from pathlib import Path

import numpy as np
import torch

from radjepa_cli.downstream.predict_inputs import classify_inputs, image_batches, mask_to_image_geometry, safe_name
from radjepa_cli.io import atomic_write_bytes, write_json

MAX_SHARD_OVERLAYS = 4  # overlays drawn per shard input (a test split can hold thousands of images)


@dataclasses.dataclass
class PredictConfig:
    model: str
    inputs: tuple[str, ...]
    out: str
    seed: int | None = None  # None = the best seed on the validation split (model.json)
    split: str = "test"  # which split of shard inputs; "all" = every shard
    batch_size: int = 16
    overlays: bool = False
    encoder: str | None = None  # a new location of the encoder (its fingerprint is still checked)
    device: str = "auto"
    cache_dir: str | None = None
    use_cache: bool = True
    trust_remote_code: bool = False
    max_megapixels: float = 200.0
    progress: bool = True


class _Run:
    """The loaded model, encoder and the rows written so far."""

    def __init__(self, cfg: PredictConfig):
        from radjepa_cli.downstream.common import resolve_device
        from radjepa_cli.downstream.saved import load_model, to_device
        from radjepa_cli.models.zoo import load_referenced_encoder

        self.cfg, self.device = cfg, resolve_device(cfg.device)
        self.model = to_device(load_model(cfg.model), self.device)
        rec = self.model.record
        self.encoder = load_referenced_encoder(rec["encoder"], where=f"{cfg.model}/model.json", override=cfg.encoder,
                                               device=self.device, trust_remote_code=cfg.trust_remote_code)
        self.seed = self.model.best_seed if cfg.seed is None else cfg.seed
        if self.seed not in self.model.heads:
            raise ValueError(f"--seed {self.seed}: {cfg.model} has heads for seeds {sorted(self.model.heads)}")
        self.out, self.rows = Path(cfg.out), []
        self.names = self.model.outputs
        self.thresholds = np.array([rec["thresholds"][n]["threshold"] for n in self.names], np.float64)
        self.layers = tuple(rec["head"].get("layers") or ())
        self.tokens = rec["head"].get("features") == "tokens"   # the attentive probe reads patch tokens

    # ---- features and heads -------------------------------------------------------------------------------------
    def feature_spec(self):
        from radjepa_cli.models.features import FeatureSpec
        size = int(self.model.record["input"]["image_size"])
        if self.model.task == "probe":
            return FeatureSpec(image_size=size, tokens=self.tokens)
        return FeatureSpec(image_size=size, layers=self.layers, mask_names=tuple(self.names))

    @torch.no_grad()
    def features(self, images: torch.Tensor):
        """As compute_features stores them (fp16) and probe / segment read them (.float())."""
        if self.model.task == "probe":
            out = self.encoder(images)
            return (out.patch_tokens if self.tokens else out.pooled).float().cpu().half().float()
        return [t.float().cpu().half() for t in self.encoder.intermediate(images, self.layers)]

    def outputs(self, feats, seed: int, size: int | None = None) -> np.ndarray:
        """probe: probabilities [N, L]; segment: logits [N, M, size, size]."""
        head = self.model.heads[seed]
        if self.model.task == "probe":
            from radjepa_cli.downstream.probe import head_scores
            return head_scores(head, feats, self.device)
        from radjepa_cli.downstream.segment import predict
        return predict(head, feats, (size, size), self.device)


def run_predict(cfg: PredictConfig) -> dict:
    """Predict for every readable input; write the files listed in the module docstring; return predict.json."""
    t0 = time.perf_counter()
    if cfg.split not in ("train", "val", "test", "all"):
        raise ValueError(f"--split must be train, val, test or all, not {cfg.split!r}")
    run = _Run(cfg)
    inputs = classify_inputs(cfg.inputs)
    run.out.mkdir(parents=True, exist_ok=True)
    (run.out / "predict.json").unlink(missing_ok=True)
    metrics = [m for m in (_predict_shards(run, p, inputs.skipped) for p in inputs.shards) if m]
    for batch in image_batches(inputs.images, run.model.record["input"], cfg.batch_size, inputs.skipped,
                               keep_preview=cfg.overlays and run.model.task == "segment",
                               max_megapixels=cfg.max_megapixels):
        _predict_images(run, batch)
    if not run.rows:
        raise ValueError(f"no readable input among {list(cfg.inputs)}: "
                         + "; ".join(f"{s['path']}: {s['reason']}" for s in inputs.skipped[:5]))
    _write_rows(run)
    write_json(run.out / "skipped.json", inputs.skipped)
    if metrics:
        write_json(run.out / "metrics.json", {"task": run.model.task, "model": str(cfg.model), "sources": metrics})
    summary = {"model": str(Path(cfg.model).resolve()), "task": run.model.task, "seed": run.seed,
               "best_seed": run.model.best_seed, "encoder": run.encoder.name,
               "encoder_fingerprint": run.encoder.fingerprint, "outputs": run.names, "n_predicted": len(run.rows),
               "n_skipped": len(inputs.skipped), "skipped": inputs.skipped, "metrics": metrics,
               "seconds": round(time.perf_counter() - t0, 2), "config": dataclasses.asdict(cfg)}
    write_json(run.out / "predict.json", summary)  # last: its presence means the run finished
    return summary


# ---- shards --------------------------------------------------------------------------------------------------------

def _predict_shards(run: _Run, shards: Path, skipped: list[dict]) -> dict | None:
    """Predict every sample of the split; return its metrics (or None when it has no labels / masks)."""
    from radjepa_cli.data.loader import shard_paths
    from radjepa_cli.models.features import extract_features

    split = None if run.cfg.split == "all" or shards.is_file() else run.cfg.split
    if shards.is_dir() and not shard_paths(shards, split):
        skipped.append({"path": str(shards), "reason": f"no {split} shards (choose another --split)"})
        return None
    spec = run.feature_spec()
    fs = extract_features(run.encoder, shards, split, spec, cache_dir=run.cfg.cache_dir,
                          use_cache=run.cfg.use_cache, batch_size=run.cfg.batch_size, progress=run.cfg.progress)
    sources = [f"{shards}#{k}" for k in fs.keys]
    if run.model.task == "probe":
        probs = run.outputs(_probe_input(run, fs), run.seed)
        _add_probe_rows(run, fs.keys, sources, probs, [m.get("labels") or {} for m in fs.meta])
        return _probe_metrics(run, shards, split, fs)
    feats = fs.layers(spec.layers)
    logits = run.outputs(feats, run.seed, spec.image_size)
    images = _shard_images(shards, split, spec.image_size) if run.cfg.overlays else {}
    for i, key in enumerate(fs.keys):
        masks = (logits[i] > 0).numpy()
        _add_mask_row(run, key, sources[i], masks, images.get(key))
    return _segment_metrics(run, shards, split, fs, feats)


def _shard_images(shards: Path, split: str | None, size: int) -> dict[str, np.ndarray]:
    """The first MAX_SHARD_OVERLAYS eval-transformed images, for overlays."""
    from radjepa_cli.data.loader import make_loader
    batch = next(iter(make_loader(shards, split=split, batch_size=MAX_SHARD_OVERLAYS, image_size=size,
                                  shuffle=False)))
    return {k: img[0].numpy() for k, img in zip(batch["key"], batch["image"])}


def _probe_input(run: _Run, fs) -> torch.Tensor:
    return (fs.tokens if run.tokens else fs.pooled).float()


def _probe_metrics(run: _Run, shards: Path, split, fs) -> dict | None:
    from radjepa_cli.downstream.probe import label_matrix, seed_metrics, summarize_seeds
    values, known = label_matrix(fs.meta, run.names, run.model.record.get("uncertain", "mask"))
    if not known.any():
        return None
    x = _probe_input(run, fs)
    per_seed = [seed_metrics(s, run.outputs(x, s), values.numpy(), known.numpy(), run.names)
                for s in sorted(run.model.heads)]
    evaluated, per_class, aggregate = summarize_seeds(per_seed, run.names)
    used = next(p for p in per_seed if p["seed"] == run.seed)
    return {"shards": str(shards), "split": split or "all", "n": len(fs), "labels": evaluated,
            "per_class": per_class, "aggregate": aggregate, "per_seed": per_seed, "seed_used": run.seed,
            "seed_used_aggregate_auprc": used["aggregate_auprc"]}


def _segment_metrics(run: _Run, shards: Path, split, fs, feats) -> dict | None:
    from radjepa_cli.downstream.segment import seed_dice, summarize_dice
    masks, known = fs.tensors["masks"], fs.tensors["mask_known"]
    if not known.any():
        return None
    size = masks.shape[-1]
    per_seed = [seed_dice(s, run.outputs(feats, s, size) > 0, masks, known, run.names)
                for s in sorted(run.model.heads)]
    evaluated, per_structure, (mean, std) = summarize_dice(per_seed, run.names)
    used = next(p for p in per_seed if p["seed"] == run.seed)
    return {"shards": str(shards), "split": split or "all", "n": len(fs), "structures": evaluated,
            "per_structure": per_structure, "mean_dice": {"mean": mean, "std": std}, "per_seed": per_seed,
            "seed_used": run.seed, "seed_used_mean_dice": used["mean_dice"]}


# ---- image files ---------------------------------------------------------------------------------------------------

def _predict_images(run: _Run, batch) -> None:
    images = torch.stack([p.tensor for p in batch])
    size = images.shape[-1]
    out = run.outputs(run.features(images), run.seed, size)
    if run.model.task == "probe":
        _add_probe_rows(run, [p.id for p in batch], [str(p.path) for p in batch], out, None)
        return
    for p, logits in zip(batch, out):
        _add_mask_row(run, p.id, str(p.path), mask_to_image_geometry(logits, p.shape), p.preview)


# ---- rows and files ------------------------------------------------------------------------------------------------

def _add_probe_rows(run: _Run, ids, sources, probs: np.ndarray, references) -> None:
    decided = probs >= run.thresholds[None]
    for i, (image_id, source) in enumerate(zip(ids, sources)):
        row = {"id": image_id, "source": source,
               "probabilities": {n: float(probs[i, j]) for j, n in enumerate(run.names)},
               "labels": {n: int(decided[i, j]) for j, n in enumerate(run.names)}}
        if references is not None:
            row["reference_labels"] = {n: references[i].get(n) for n in run.names}
        run.rows.append(row)


def _add_mask_row(run: _Run, image_id: str, source: str, masks: np.ndarray, preview) -> None:
    """masks bool [M, H, W]: one 0/255 PNG per structure, an overlay when a preview image is given."""
    from PIL import Image
    files = {}
    for name, m in zip(run.names, masks):
        rel = f"masks/{safe_name(image_id)}/{safe_name(name)}.png"
        buf = io.BytesIO()
        Image.fromarray(m.astype(np.uint8) * 255).save(buf, format="PNG")
        atomic_write_bytes(run.out / rel, buf.getvalue())
        files[name] = rel
    row = {"id": image_id, "source": source, "size": list(masks.shape[1:]), "masks": files,
           "area_fraction": {n: float(m.mean()) for n, m in zip(run.names, masks)}}
    if preview is not None:
        from radjepa_cli.downstream.plots import mask_overlay
        row["overlay"] = f"overlays/{safe_name(image_id)}.png"
        mask_overlay(run.out / row["overlay"], preview, masks, run.names, title=f"{image_id} · seed {run.seed}")
    run.rows.append(row)


def _write_rows(run: _Run) -> None:
    jsonl = "".join(json.dumps(r, sort_keys=False) + "\n" for r in run.rows)
    atomic_write_bytes(run.out / "predictions.jsonl", jsonl.encode())
    if run.model.task != "probe":
        return
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "source", *[f"p:{n}" for n in run.names], *[f"label:{n}" for n in run.names]])
    for r in run.rows:
        w.writerow([r["id"], r["source"], *[f"{r['probabilities'][n]:.6f}" for n in run.names],
                    *[r["labels"][n] for n in run.names]])
    atomic_write_bytes(run.out / "predictions.csv", buf.getvalue().encode())
