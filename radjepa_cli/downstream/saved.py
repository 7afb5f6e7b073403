"""A saved downstream model: the heads `probe` / `segment` trained, and the model.json that makes them usable.

Layout of a probe or segment output folder once the run has finished:
  heads/seed-{k}.safetensors   the head of seed k (probe: standardiser + classifier; segment: the decoder)
  model.json                   written LAST, atomically: a folder without it is not a model. It records
    task                       "probe" | "segment"
    encoder                    spec, absolute spec and fingerprint (models.zoo.encoder_reference): checked on load
    input                      how an image becomes the head's input: decode, the shard resize / bit depth the
                               encoder saw in training, the loader's eval transform to image_size, fp16 features
    head                       {kind, config, features}: rebuilt by `build_head` (one function for every kind)
    labels | structures        the head's output channels, in order
    thresholds                 per output, the decision threshold and the rule that chose it
    seeds                      [{seed, file, sha256, val_score}], best_seed and what chose it
    trained_on                 shards, splits and counts
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch
import torch.nn as nn

from radjepa_cli.io import atomic_write_bytes, read_json, write_json

MODEL_JSON = "model.json"
FORMAT = "radjepa-downstream-model/1"
HEADS_DIR = "heads"


class ModelDirError(FileNotFoundError):
    """A model folder that is missing, unfinished or inconsistent; the message names the file."""


def head_file(seed: int) -> str:
    return f"{HEADS_DIR}/seed-{seed}.safetensors"


def save_head(out: str | Path, seed: int, head: nn.Module) -> dict:
    """Write one seed's head (its full state_dict, buffers included) and return its model.json entry."""
    from safetensors.torch import save
    data = save({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()})
    atomic_write_bytes(Path(out) / head_file(seed), data)
    return {"seed": seed, "file": head_file(seed), "sha256": hashlib.sha256(data).hexdigest()}


def write_model_json(out: str | Path, record: dict) -> Path:
    """The completion marker of a saved model: call it after every head file (and results.json) is written."""
    return write_json(Path(out) / MODEL_JSON, {"format": FORMAT, **record})


# ---- rebuilding heads --------------------------------------------------------------------------------------------

class Standardizer(nn.Module):
    """Per-channel z-score with the training features' statistics; patch tokens [N, T, D] share one per channel.
    The first module of every saved probe head (its mean/std are buffers in the head file); `probe` fits it,
    `build_head` rebuilds it, so it lives here, beside the head constructors."""

    def __init__(self, x: torch.Tensor | None, dim: int, enabled: bool):
        super().__init__()
        x = x.reshape(-1, dim) if x is not None else None
        mean = x.mean(0) if (x is not None and enabled) else torch.zeros(dim)
        std = x.std(0).clamp_min(1e-6) if (x is not None and enabled) else torch.ones(dim)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x):
        return (x - self.mean) / self.std


def _linear_probe(in_dim: int, n_out: int) -> nn.Module:
    return nn.Linear(in_dim, n_out)


def _attentive_probe(in_dim: int, n_out: int, queries: int = 4) -> nn.Module:
    from radjepa_cli.downstream.attentive import AttentivePoolHead
    return AttentivePoolHead(in_dim, n_out, queries)


# Probe head kinds → constructor(in_dim, n_out, **config); the saved record carries kind, config and the features
# it reads ("pooled" [N, D] for linear, "tokens" [N, T, D] for attentive).
PROBE_HEADS = {"linear": _linear_probe, "attentive": _attentive_probe}


def build_probe_head(kind: str, in_dim: int, n_out: int, config: dict) -> nn.Module:
    if kind not in PROBE_HEADS:
        raise ValueError(f"unknown probe head kind {kind!r}; this version knows {', '.join(PROBE_HEADS)}")
    return PROBE_HEADS[kind](in_dim, n_out, **config)


def build_head(task: str, head: dict) -> nn.Module:
    """The untrained module a saved head's state_dict loads into: the ONE place saved heads are rebuilt."""
    kind, cfg = head["kind"], dict(head.get("config") or {})
    if task == "probe":
        in_dim, n_out = int(cfg.pop("in_dim")), int(cfg.pop("n_out"))
        return nn.Sequential(Standardizer(None, in_dim, False), build_probe_head(kind, in_dim, n_out, cfg))
    if task == "segment":
        from radjepa_cli.downstream.decoders import build_decoder
        return build_decoder(kind, int(cfg["in_dim"]), int(cfg["n_out"]), int(cfg.get("channels", 256)))
    raise ValueError(f"unknown task {task!r} (expected probe or segment)")


# ---- loading -----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SavedModel:
    dir: Path
    record: dict
    heads: dict[int, nn.Module]  # seed → head in eval mode

    @property
    def task(self) -> str:
        return self.record["task"]

    @property
    def outputs(self) -> list[str]:
        return list(self.record["labels"] if self.task == "probe" else self.record["structures"])

    @property
    def best_seed(self) -> int:
        return int(self.record["best_seed"])


def load_model(model_dir: str | Path, seeds: list[int] | None = None) -> SavedModel:
    """Read model.json and the heads of `seeds` (None = every saved seed), each checked against its sha256."""
    from safetensors.torch import load
    d = Path(model_dir)
    path = d / MODEL_JSON
    if not path.is_file():
        why = ("the run did not finish, or was made before heads were saved: rerun `radjepa probe` / "
               "`radjepa segment`") if (d / "results.json").is_file() or (d / HEADS_DIR).is_dir() else \
            "expected the --out folder of `radjepa probe` or `radjepa segment`"
        raise ModelDirError(f"{d}: no {MODEL_JSON} ({why})")
    record = read_json(path)
    if record.get("format") != FORMAT:
        raise ModelDirError(f"{path}: format {record.get('format')!r}, expected {FORMAT!r}")
    entries = {int(e["seed"]): e for e in record["seeds"]}
    wanted = sorted(entries) if seeds is None else seeds
    heads = {}
    for seed in wanted:
        if seed not in entries:
            raise ValueError(f"{path}: no head for seed {seed}; saved seeds: {sorted(entries)}")
        f = d / entries[seed]["file"]
        if not f.is_file():
            raise ModelDirError(f"{f}: missing (listed in {path})")
        data = f.read_bytes()
        if hashlib.sha256(data).hexdigest() != entries[seed]["sha256"]:
            raise ModelDirError(f"{f}: its sha256 differs from the one {path} recorded (changed after training)")
        head = build_head(record["task"], record["head"])
        head.load_state_dict(load(data), strict=True)
        heads[seed] = head.eval()
    return SavedModel(d, record, heads)


def to_device(model: SavedModel, device: torch.device) -> SavedModel:
    for h in model.heads.values():
        h.to(device)
    return model
