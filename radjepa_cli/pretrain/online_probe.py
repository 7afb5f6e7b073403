"""The online probe: how good the target encoder's features are *while* pretraining runs (issue 15).

A fixed labelled subset — the first `n_train` samples of the shards' train split and the first `n_val` of `val`
(`test` when there is no val), in shard order, so every read-out of a run and any later offline read-out sees the
same images — is decoded once (eval transform, as `radjepa probe` loads images) and kept in memory. Every
`probe_every` steps rank 0 embeds it with the *target* encoder (mean-pooled final tokens: the probe protocol) and
reads it out with two deterministic, training-free probes:
  ridge  closed-form ridge regression on standardised features, per label, λ chosen by generalised cross-validation
         (GCV) over a fixed grid from the SVD; no seeds, so the curve moves only when the features do.
  knn    cosine k-nearest neighbours (k = 20), the positive fraction among the neighbours with a known label.
Macro-AUPRC / AUROC over the labels with both outcomes in both subsets go to metrics.jsonl, TensorBoard and the
progress line. `offline_readout` reproduces a milestone's numbers from a saved checkpoint (the test checks that
they are equal), and `readout` is the same function on any features.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from radjepa_cli.metrics.ridge import RidgeSVD

KNN_K = 20
BUDGET = 0.05   # default mode: read-outs take at most this fraction of the wall time (issue 15)
# GCV searches this grid (relative to the mean squared singular value, so it is scale-free after standardising).
RIDGE_GRID = np.logspace(-4, 3, 29)


@dataclasses.dataclass
class Subset:
    images: torch.Tensor          # [N, 1, S, S] float16 in [0, 1]: half the memory; fp16 rounding, the same online and offline
    labels: np.ndarray            # [N, L] 0/1
    known: np.ndarray             # [N, L] bool


def probe_labels(shards: str | Path, train_split: str, val_split: str) -> list[str]:
    """Labels with both outcomes in both splits, from manifest.json's tallies (no images read)."""
    path = Path(shards) / "manifest.json"
    if not path.is_file():
        return []
    tallies = json.loads(path.read_text()).get("labels", {})

    def both(split):
        return {n for n, t in tallies.get(split, {}).items() if t.get("positive") and t.get("negative")}
    return sorted(both(train_split) & both(val_split))


def eval_split(shards: str | Path) -> str:
    counts = json.loads((Path(shards) / "manifest.json").read_text()).get("counts", {}).get("split", {})
    return "val" if counts.get("val") else "test"


def load_subset(shards: str | Path, split: str, n: int, image_size: int, names: list[str]) -> Subset:
    from radjepa_cli.data.loader import make_loader
    loader = make_loader(shards, split=split, batch_size=64, image_size=image_size, train=False,
                         label_names=names, shuffle=False)
    imgs, ys, ks, got = [], [], [], 0
    for batch in loader:
        take = min(n - got, len(batch["key"]))
        imgs.append(batch["image"][:take].half())
        ys.append(batch["labels"][:take].numpy())
        ks.append(batch["label_known"][:take].numpy())
        got += take
        if got >= n:
            break
    return Subset(torch.cat(imgs), np.concatenate(ys), np.concatenate(ks).astype(bool))


@torch.no_grad()
def embed(vit: torch.nn.Module, images: torch.Tensor, mean: float, std: float, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled final tokens of `vit` (eval mode for the call, then its mode restored), float64 on the CPU."""
    was = vit.training
    vit.eval()
    dev = next(vit.parameters()).device
    out = []
    try:
        for i in range(0, len(images), batch_size):
            x = (images[i:i + batch_size].to(dev).float() - mean) / std
            out.append(vit.forward_features(x).float().mean(dim=1).cpu())
    finally:
        vit.train(was)
    return torch.cat(out).double().numpy()


def ridge_scores(x_tr: np.ndarray, y: np.ndarray, x_va: np.ndarray) -> tuple[np.ndarray, float]:
    """Ridge on standardised features for one label (rows with a known label only), λ by GCV; (val scores, λ)."""
    r = RidgeSVD(x_tr)     # constant features: sd < 1e-8 (absolute), as before the shared core
    y_mean = y.mean()
    yc = y - y_mean
    uty = r.project(yc)
    best = None
    for lam in RIDGE_GRID * max(r.mean_s2, 1e-12):
        gcv = r.gcv(yc, uty, lam)
        if best is None or gcv < best[0] - 1e-15:   # strict: ties go to the smaller λ, deterministically
            best = (gcv, lam)
    lam = best[1]
    return r.transform(x_va) @ r.weights(uty, lam) + y_mean, float(lam)


def knn_scores(x_tr: np.ndarray, y: np.ndarray, known: np.ndarray, x_va: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """[N_val, L] positive fraction among each val sample's k most cosine-similar train samples with a known
    label (ties broken by index: a stable sort keeps it deterministic)."""
    a = x_tr / np.maximum(np.linalg.norm(x_tr, axis=1, keepdims=True), 1e-12)
    b = x_va / np.maximum(np.linalg.norm(x_va, axis=1, keepdims=True), 1e-12)
    out = np.zeros((len(x_va), y.shape[1]))
    for j in range(y.shape[1]):
        kj = known[:, j]
        nearest = np.argsort(-(b @ a[kj].T), axis=1, kind="stable")[:, :k]
        out[:, j] = y[kj, j][nearest].mean(axis=1)
    return out


def readout(x_tr: np.ndarray, y_tr: np.ndarray, k_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray,
            k_va: np.ndarray, names: list[str]) -> dict[str, float]:
    """Both read-outs on fixed features: {probe_ridge_auprc, probe_ridge_auroc, probe_knn_auprc, probe_knn_auroc}
    as macro means over the labels with both outcomes among the known train and val entries."""
    from radjepa_cli.metrics.classification import aggregate, per_class
    usable = [j for j in range(len(names))
              if 0 < y_tr[k_tr[:, j], j].sum() < k_tr[:, j].sum() and 0 < y_va[k_va[:, j], j].sum() < k_va[:, j].sum()]
    if not usable:
        return {}
    ridge = np.zeros((len(x_va), len(usable)))
    for c, j in enumerate(usable):
        ridge[:, c], _ = ridge_scores(x_tr[k_tr[:, j]], y_tr[k_tr[:, j], j].astype(float), x_va)
    knn = knn_scores(x_tr, y_tr[:, usable], k_tr[:, usable], x_va)
    sel = [names[j] for j in usable]
    out = {}
    for tag, scores in (("ridge", ridge), ("knn", knn)):
        agg = aggregate(per_class(y_va[:, usable], scores, k_va[:, usable], sel))
        out[f"probe_{tag}_auprc"], out[f"probe_{tag}_auroc"] = agg["auprc"], agg["auroc"]
    return out


class OnlineProbe:
    """Rank 0's read-out during pretraining; built by `build` (None when off).

    With an explicit `--probe-every N` the read-outs fall exactly on multiples of N (and the last step). In the
    default (budget) mode the interval starts at about a sixth of the run and is stretched after each read-out so
    that read-outs take at most `budget` of the wall time: a read-out costs a few training steps, which a short
    run cannot afford six times."""

    def __init__(self, every: int, train: Subset, val: Subset, names: list[str], mean: float, std: float,
                 budget: float | None = None, start: int = 0):
        self.every, self.train, self.val, self.names = every, train, val, names
        self.mean, self.std, self.budget = mean, std, budget
        self.seconds = 0.0      # total wall time spent in read-outs (reported against the run's wall time)
        self.next = start + every   # a resumed run counts from where it resumes
        self._t_mark, self._step_mark = time.perf_counter(), start

    def due(self, step: int, total: int) -> bool:
        if self.budget is None:
            return step % self.every == 0 or step == total
        return step >= self.next or step == total

    def run(self, target_encoder: torch.nn.Module, step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        x_tr = embed(target_encoder, self.train.images, self.mean, self.std)
        x_va = embed(target_encoder, self.val.images, self.mean, self.std)
        rec = readout(x_tr, self.train.labels, self.train.known, x_va, self.val.labels, self.val.known, self.names)
        t1 = time.perf_counter()
        dt = t1 - t0
        self.seconds += dt
        if self.budget is not None:
            # training seconds per step since the previous read-out (this read-out excluded)
            step_s = (t0 - self._t_mark) / max(step - self._step_mark, 1)
            gap = math.ceil(dt / (self.budget * max(step_s, 1e-9)))
            self.next = step + max(self.every, gap)
            self._t_mark, self._step_mark = t1, step
        return {"step": step, **rec, "probe_seconds": round(dt, 3), "probe_seconds_total": round(self.seconds, 3)}


def default_every(total: int, readouts: int = 6) -> int:
    """About `readouts` read-outs per run (the last step always gets one)."""
    return max(1, total // readouts)


def build(cfg, total: int, mean: float, std: float, start: int = 0) -> OnlineProbe | None:
    """From a PretrainConfig: None when `probe_every` is 0, or when it is unset (None) and the shards carry no
    label with both outcomes in train and val/test (an explicit N > 0 on unlabelled shards is an error)."""
    every = cfg.probe_every
    if every == 0:
        return None
    val_split = eval_split(cfg.shards) if (Path(cfg.shards) / "manifest.json").is_file() else "test"
    names = probe_labels(cfg.shards, cfg.split, val_split)
    if not names:
        if every:
            raise ValueError(f"--probe-every {every}: {cfg.shards} has no label with both outcomes in "
                             f"{cfg.split} and {val_split} (manifest.json); pass --probe-every 0")
        return None
    size = cfg.image_size
    train = load_subset(cfg.shards, cfg.split, cfg.probe_train, size, names)
    val = load_subset(cfg.shards, val_split, cfg.probe_val, size, names)
    if every:
        return OnlineProbe(every, train, val, names, mean, std, start=start)
    return OnlineProbe(default_every(total), train, val, names, mean, std, budget=BUDGET, start=start)


def offline_readout(encoder_spec: str, shards: str | Path, *, split: str = "train", n_train: int = 512,
                    n_val: int = 256) -> dict[str, float]:
    """The online probe's numbers for any encoder of ours (a run dir, a milestone checkpoint, `random:…`): the
    same subset, the same embedding and the same read-out, outside the training loop."""
    from radjepa_cli.models.zoo import load_encoder
    enc = load_encoder(encoder_spec)
    pre = enc.preprocessing
    val_split = eval_split(shards)
    names = probe_labels(shards, split, val_split)
    if not names:
        raise ValueError(f"{shards}: no label with both outcomes in {split} and {val_split}")
    train = load_subset(shards, split, n_train, pre.size, names)
    val = load_subset(shards, val_split, n_val, pre.size, names)
    x_tr = embed(enc.backbone, train.images, pre.mean[0], pre.std[0])
    x_va = embed(enc.backbone, val.images, pre.mean[0], pre.std[0])
    return readout(x_tr, train.labels, train.known, x_va, val.labels, val.known, names)
