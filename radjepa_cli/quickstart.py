"""`radjepa quickstart`: the whole pipeline on the embedded data, resumable step by step.

Each step is a `radjepa` command run in a child process (so the quickstart exercises the real CLI and a failing
step cannot take the earlier outputs with it). A step is done when its completion marker exists; a rerun skips
done steps and resumes interrupted ones (pretraining resumes from its last checkpoint).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.rule import Rule

from radjepa_cli import config as config_lib
from radjepa_cli.io import read_json, write_json

console = Console()


@dataclasses.dataclass
class QuickstartConfig:
    out: str = "runs/quickstart"
    fresh: bool = False
    n: int = 2000                 # phantoms (patient-level split into train/val/test by prepare-data)
    shard_size: int = 128         # stored shorter side; models train at image_size
    image_size: int = 96          # 6×6 patches of 16 px: the CPU budget's sweet spot (tokens carry more content
    patch_size: int = 16          # than at 64/8; measured in the recipe search, see the pretrain issue's note)
    model: str = "vit_tiny"
    depth: int = 6                # half-depth ViT-tiny: twice the steps in the same minutes
    pred_depth: int = 2
    pred_dim: int = 192
    min_keep: int = 3             # I-JEPA's 10 is for a 16×16 grid; on 6×6 a target can be 2×2, so 4 would never fit
    pretrain_steps: int = 800     # ≈ 26k images, ~5 min on 2 idle cores; 250 steps did not beat random init
    batch_size: int = 32
    lr: float = 5e-4
    ema_start: float = 0.99       # short runs need a faster-moving target than I-JEPA's 0.996
    reg_var: float = 1.0          # VICReg variance/covariance on pooled context embeddings: without them a short
    reg_cov: float = 0.04         # run settles on position-only features (RankMe < 25% of the width)
    probe_seeds: int = 3          # 5 → 3 pays for the online probe and the attentive-head probe (issue 15)
    attentive_queries: int = 4    # the attentive probe on the pretrained encoder (probe-radjepa-attentive)
    probe_epochs: int = 200
    probe_lr: float = 1e-3        # the paper's 5e-5 is for 15k images; with ~1.5k the head barely moves
    segment_epochs: int = 6
    segment_seeds: int = 2
    segment_channels: int = 32    # decoder width: 32 keeps UPerNet to a few minutes on CPU (Dice ≥ 0.9 on lungs)
    report_epochs: int = 3
    report_max_steps: int | None = None   # caps train-report (tests); None = the epochs decide
    generate_limit: int | None = None     # caps generate-report on the test split (tests)
    seed: int = 0


@dataclasses.dataclass
class Step:
    name: str
    title: str
    args: list[str]
    done_marker: Path
    resume_args: list[str] = dataclasses.field(default_factory=list)


def build_steps(cfg: QuickstartConfig) -> list[Step]:
    from radjepa_cli.data import embedded

    out = Path(cfg.out)
    shards, run = out / "shards", out / "pretrain"
    size = ["--image-size", str(cfg.image_size)]
    encoders = {
        "radjepa": str(run),
        "random": f"random:{run}@{cfg.seed}",   # same architecture as the run, random init
        "pixels": "pixels:32",
    }
    steps = [
        Step("data", "Phantom chest X-rays → WebDataset shards",
             ["prepare-data", "synthetic", "--n", str(cfg.n), "--size", str(cfg.shard_size), "--seed",
              str(cfg.seed), "--out", str(shards)], shards / "manifest.json"),
        Step("pretrain", f"I-JEPA pretraining of a {cfg.model} ({cfg.pretrain_steps} steps)",
             ["pretrain", str(shards), "--out", str(run), "--model", cfg.model, *size, "--patch-size",
              str(cfg.patch_size), "--depth", str(cfg.depth), "--pred-depth", str(cfg.pred_depth), "--pred-dim",
              str(cfg.pred_dim), "--lr", str(cfg.lr), "--ema-start", str(cfg.ema_start), "--reg-var",
              str(cfg.reg_var), "--reg-cov", str(cfg.reg_cov), "--warmup-steps", str(max(1, cfg.pretrain_steps // 12)),
              "--loss", "l2", "--fix-masks", "--variable-length", "--min-keep", str(cfg.min_keep), "--steps", str(cfg.pretrain_steps),
              "--batch-size", str(cfg.batch_size),
              "--seed", str(cfg.seed)], run / "COMPLETE", resume_args=["--resume"]),
    ]
    # the pretrained encoder beside its baselines (random-init twin, raw pixels), linear head; then the attentive
    # head on the pretrained encoder (the pretrain step's online probe gives the curve over training)
    probes = [(name, enc, "linear") for name, enc in encoders.items()] + [("radjepa-attentive", str(run), "attentive")]
    for name, enc, head in probes:
        attentive = ["--head", "attentive", "--queries", str(cfg.attentive_queries)] if head == "attentive" else []
        steps.append(Step(f"probe-{name}", f"{head.capitalize()} probe on frozen features: {name}",
                          ["probe", str(shards), "--encoder", enc, "--labels", "phantom", "--seeds",
                           str(cfg.probe_seeds), "--epochs", str(cfg.probe_epochs), "--lr", str(cfg.probe_lr), *size,
                           *attentive, "--out", str(out / f"probe-{name}")], out / f"probe-{name}" / "results.json"))
    steps += [
        Step("segment", "Lung segmentation, UPerNet decoder on the frozen encoder",
             ["segment", str(shards), "--encoder", str(run), "--decoder", "upernet", "--task", "lungs",
              "--epochs", str(cfg.segment_epochs), "--seeds", str(cfg.segment_seeds), "--channels",
              str(cfg.segment_channels), *size,
              "--out", str(out / "segment-upernet-lungs")], out / "segment-upernet-lungs" / "results.json"),
        *predict_steps(out, shards, [embedded.rg1_dicom(), real_png(out)]),
        Step("train-report", "Report generation: projector + tiny LM on phantom findings",
             ["train-report", str(shards), "--encoder", str(run), "--llm", "tiny", "--epochs",
              str(cfg.report_epochs), *(["--max-steps", str(cfg.report_max_steps)] if cfg.report_max_steps else []),
              "--out", str(out / "report_model")], out / "report_model" / "report_model.json"),
        Step("generate", "Generate findings for the phantom test split",
             ["generate-report", str(shards), "--model", str(out / "report_model"),
              *(["--limit", str(cfg.generate_limit)] if cfg.generate_limit else []),
              "--out", str(out / "reports" / "predictions.jsonl")], out / "reports" / "predictions.jsonl"),
        Step("generate-rg1", "Generate findings for the real RG1 chest DICOM",
             ["generate-report", str(embedded.rg1_dicom()), "--model", str(out / "report_model"),
              "--out", str(out / "reports" / "rg1.jsonl")], out / "reports" / "rg1.jsonl"),
        Step("evaluate-reports", "Report metrics with 500-sample bootstrap CIs",
             ["evaluate", "reports", str(out / "reports" / "predictions.jsonl"), "--bootstrap", "500",
              "--out", str(out / "evaluate" / "reports")], out / "evaluate" / "reports" / "results.json"),
        Step("table3", "Paper Table 3 layout, phantom results beside the paper's",
             ["evaluate", "table", "3", "--runs", str(out), "--compare-paper",
              "--out", str(out / "evaluate" / "table3")], out / "evaluate" / "table3" / "table.json"),
        Step("table6", "Paper Table 6 layout (linear probe), phantom results beside the paper's",
             ["evaluate", "table", "6", "--runs", str(out), "--compare-paper",
              "--out", str(out / "evaluate" / "table6")], out / "evaluate" / "table6" / "table.json"),
    ]
    return steps


def real_png(out: Path) -> Path:
    """A real chest PNG for `predict`: none ships with the installed packages, so it is made from the RG1 DICOM
    (decoded as prepare-data decodes it, shorter side 1024, 16-bit) the first time it is needed."""
    from radjepa_cli.data import embedded
    from radjepa_cli.data.decode import decode_image
    from radjepa_cli.data.shards import encode_png, resize_shorter
    from radjepa_cli.io import atomic_write_bytes

    png = out / "real" / "RG1_from_dicom.png"
    if not png.is_file():
        atomic_write_bytes(png, encode_png(resize_shorter(decode_image(embedded.rg1_dicom()), 1024), bits=16))
    return png


def predict_steps(out: Path, shards: Path, real: list[Path]) -> list[Step]:
    """The saved probe and lung model applied with `radjepa predict` to the phantom test split (metrics equal to
    the runs') and to the real images, in one command each."""
    runs = {"probe": out / "probe-radjepa", "segment": out / "segment-upernet-lungs"}
    return [Step(f"predict-{kind}", f"Apply the saved {kind} model to the test split and real images",
                 ["predict", str(model), str(shards), *map(str, real), *(["--overlays"] if kind == "segment" else []),
                  "--out", str(out / "predict" / kind)], out / "predict" / kind / "predict.json")
            for kind, model in runs.items()]


def _run_step(step: Step, log_dir: Path) -> int:
    cmd = [sys.executable, "-m", "radjepa_cli.cli", *step.args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    console.print(f"[dim]$ radjepa {' '.join(step.args)}[/]")
    return subprocess.run(cmd, env=env).returncode


def run_quickstart(cfg: QuickstartConfig, steps_factory: Callable[[QuickstartConfig], list[Step]] = build_steps,
                   runner: Callable[[Step, Path], int] = _run_step) -> int:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    config_lib.save(cfg, out, "quickstart_config.json")
    state_path = out / "quickstart_state.json"
    state = read_json(state_path) if state_path.exists() and not cfg.fresh else {"steps": {}}
    steps = steps_factory(cfg)
    t_all = time.time()
    for i, step in enumerate(steps, 1):
        console.print(Rule(f"[bold]{i}/{len(steps)} {step.title}[/]"))
        if step.done_marker.exists() and not cfg.fresh:
            console.print(f"[green]done[/] (found {step.done_marker}); skipping")
            continue
        args_before = step.args
        if step.resume_args and state["steps"].get(step.name, {}).get("status") in {"failed", "running"}:
            step.args = [*step.args, *step.resume_args]
        state["steps"][step.name] = {"status": "running", "started": time.time()}
        write_json(state_path, state)
        t0 = time.time()
        rc = runner(step, out / "logs")
        step.args = args_before
        state["steps"][step.name] = {"status": "done" if rc == 0 else "failed", "seconds": round(time.time() - t0, 1),
                                     "returncode": rc}
        write_json(state_path, state)
        if rc != 0 or not step.done_marker.exists():
            why = f"exit code {rc}" if rc else f"it did not write {step.done_marker}"
            console.print(f"[bold red]Step '{step.name}' failed[/] ({why}). Outputs of the earlier steps are in "
                          f"{out}; fix the problem and rerun `radjepa quickstart --out {out}` to resume here.")
            return 1
    state["total_seconds_this_run"] = round(time.time() - t_all, 1)
    write_json(state_path, state)
    from radjepa_cli.summary import write_summary
    page = write_summary(out, state)
    console.print(Rule("[bold green]quickstart complete"))
    console.print(f"Summary page: [bold]{page}[/] (open it in a browser); all outputs under {out}")
    return 0
