"""`radjepa evaluate --table 3 --config protocol.toml`: the paper's report protocol end to end for many encoders.

For each encoder: train-report (projector + LM on frozen features) → generate-report → score, through the public
CLI (the contract every stage keeps), resuming finished steps; then Table 3 from the resulting predictions.

protocol.toml:
    shards = "shards/mimic"            # training shards (train split used by train-report)
    test = "shards/mimic"              # what generate-report reads (default: shards)
    dataset = "MIMIC-CXR"              # how our rows are labelled in the table
    llm = "tiny"                       # tiny | smollm2 | PATH
    out = "runs/protocol"
    encoders = ["radjepa:runs/pre", "rad-dino:/models/rad-dino"]
    train_args = ["--epochs", "1"]     # passed through to train-report
    generate_args = []                 # passed through to generate-report
"""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

from .. import config as config_lib


@dataclasses.dataclass
class ProtocolConfig:
    shards: str
    encoders: list[str]
    test: str | None = None
    dataset: str = "unknown"
    llm: str = "tiny"
    out: str = "runs/protocol"
    train_args: list[str] = dataclasses.field(default_factory=list)
    generate_args: list[str] = dataclasses.field(default_factory=list)


def slug(encoder: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", encoder).strip("_")[:80] or "encoder"


def _run_cli(args: list[str]) -> int:
    return subprocess.run([sys.executable, "-m", "radjepa_cli.cli", *args]).returncode


def run_protocol(cfg: ProtocolConfig, run: Callable[[list[str]], int] = _run_cli) -> list[tuple[str, Path]]:
    """Train and generate for every encoder (skipping finished steps); returns [(encoder, predictions path)]."""
    if not cfg.encoders:
        raise ValueError("protocol config: `encoders` is empty")
    out = Path(cfg.out)
    config_lib.save(cfg, out, "protocol_config.json")
    done = []
    for enc in cfg.encoders:
        d = out / slug(enc)
        model, preds = d / "model", d / "predictions.jsonl"
        if not (model / "report_model.json").exists():  # train-report writes it last
            rc = run(["train-report", cfg.shards, "--encoder", enc, "--llm", cfg.llm, "--out", str(model),
                      *cfg.train_args])
            if rc != 0:
                raise RuntimeError(f"train-report failed for encoder {enc!r} (exit code {rc}); see its output above")
        if not preds.exists():
            rc = run(["generate-report", cfg.test or cfg.shards, "--model", str(model), "--out", str(preds),
                      *cfg.generate_args])
            if rc != 0 or not preds.exists():
                raise RuntimeError(f"generate-report failed for encoder {enc!r} (exit code {rc})")
        done.append((enc, preds))
    return done
