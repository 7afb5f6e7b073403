"""`radjepa pretrain` (I-JEPA pretraining) and `radjepa export` (the target encoder for other tools)."""
from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("pretrain", help=(
        "Pretrain a ViT encoder with I-JEPA on SHARDS (from prepare-data) into the run folder --out: "
        "config.json, encoder_config.json, checkpoints/latest.pt (+ step_XXXXXXX.pt milestones), metrics.jsonl, "
        "tb/ (TensorBoard), COMPLETE when done. One process by default; --procs N CPU processes (gloo); --gpus N "
        "GPU processes (NCCL); several nodes with --nnodes/--rdzv-endpoint; under torchrun or srun the processes "
        "are taken from the environment. --resume continues a run exactly where its last checkpoint left off.\n\n"
        "Options set here override --config FILE.toml, which overrides the defaults (the I-JEPA recipe)."))
    def pretrain_cmd(
        shards: Path = typer.Argument(..., help="Shard folder written by `radjepa prepare-data`."),
        out: Path = typer.Option(..., "--out", help="Run folder."),
        config: Path = typer.Option(None, "--config", help="TOML file with PretrainConfig keys ([masks] table)."),
        model: str = typer.Option(None, "--model",
                                  help="vit_tiny | vit_small | vit_base (default) | vit_large | vit_huge."),
        depth: int = typer.Option(None, "--depth", help="Encoder blocks (default: the preset's; vit_tiny 12)."),
        embed_dim: int = typer.Option(None, "--embed-dim", help="Encoder width (default: the preset's)."),
        num_heads: int = typer.Option(None, "--num-heads", help="Encoder attention heads (default: the preset's)."),
        steps: int = typer.Option(None, "--steps", help="Optimizer steps (or --epochs)."),
        epochs: int = typer.Option(None, "--epochs", help="Passes over the split (needs the shard manifest)."),
        batch_size: int = typer.Option(None, "--batch-size", help="Images per process per micro-batch (default 64)."),
        grad_accum: int = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step."),
        lr: float = typer.Option(None, "--lr", help="Peak learning rate (default 1e-3, I-JEPA at batch 2048)."),
        warmup_steps: int = typer.Option(None, "--warmup-steps", help="Default: 40/300 of the run (I-JEPA)."),
        clip_grad: float = typer.Option(None, "--clip-grad", help="Clip the gradient norm to this value."),
        ema_start: float = typer.Option(None, "--ema-start", help="EMA momentum at step 0, linear to 1.0 (I-JEPA "
                                                                   "0.996; short runs want less, e.g. 0.98)."),
        loss: str = typer.Option(None, "--loss", help="smooth_l1 (default, the official I-JEPA code) | l2 (the objective the papers write)."),
        reg_var: float = typer.Option(None, "--reg-var", help="Weight of a VICReg variance term on the pooled "
                                      "context embeddings (C-JEPA; default 0 = I-JEPA). Keeps short runs from "
                                      "settling on position-only features."),
        reg_cov: float = typer.Option(None, "--reg-cov", help="Weight of the VICReg covariance term (default 0)."),
        image_size: int = typer.Option(None, "--image-size", help="Input size in pixels (default 224)."),
        crop_scale: str = typer.Option(None, "--crop-scale", help="RandomResizedCrop area range MIN,MAX "
                                       "(default 0.3,1.0 as I-JEPA)."),
        patch_size: int = typer.Option(None, "--patch-size", help="Patch size (default 14)."),
        pred_depth: int = typer.Option(None, "--pred-depth", help="Predictor depth (default per model)."),
        pred_dim: int = typer.Option(None, "--pred-dim", help="Predictor width (default 384)."),
        init: str = typer.Option(None, "--init", help="official (default: what I-JEPA training applies) | "
                                 "rescaled (departure: block output projections / sqrt(2·layer))."),
        init_from: Path = typer.Option(None, "--init-from", help="Start from an official I-JEPA checkpoint "
                                       "(.pth.tar: encoder, predictor, target encoder, AdamW state); the run's "
                                       "model options must match it. RGB weights are folded for grey input."),
        min_keep: int = typer.Option(None, "--min-keep", help="Masks must keep more than this many patches "
                                                               "(default 10; lower it for small patch grids)."),
        variable_length: bool = typer.Option(None, "--variable-length/--truncate-masks",
                                             help="Keep every mask patch with key padding instead of cutting masks "
                                                  "to the batch minimum (I-JEPA)."),
        fix_masks: bool = typer.Option(None, "--fix-masks/--faithful-masks",
                                       help="Fix I-JEPA's mask quirks: independent scale/aspect draws and a "
                                            "reachable last row/column."),
        kernels: str = typer.Option(None, "--kernels", help="auto | triton | eager."),
        seed: int = typer.Option(None, "--seed"),
        num_workers: int = typer.Option(None, "--num-workers", help="Data loader workers per process."),
        threads: int = typer.Option(None, "--threads", help="CPU threads per process (default: cores / processes)."),
        ckpt_every: int = typer.Option(None, "--ckpt-every", help="Steps between checkpoints/latest.pt writes."),
        milestone_every: int = typer.Option(None, "--milestone-every", help="Steps between kept milestones."),
        log_every: int = typer.Option(None, "--log-every", help="Steps between metrics.jsonl lines."),
        monitor_every: int = typer.Option(None, "--monitor-every", help="Steps between collapse measurements."),
        probe_every: int = typer.Option(None, "--probe-every", help="Steps between online-probe read-outs of the "
                                        "target encoder (ridge + kNN on a fixed labelled subset). Default: up to 6 "
                                        "per run when the shards have labels, spaced to take at most 5% of the "
                                        "wall time; 0: off."),
        resume: bool = typer.Option(None, "--resume", help="Continue the run in --out from its latest checkpoint."),
        device: str = typer.Option("auto", "--device", help="auto (CUDA when it works, CPU on a machine without "
                                   "an NVIDIA GPU; a GPU whose CUDA fails is an error) | cuda (error if unusable) | "
                                   "cpu (train on the CPU on purpose)."),
        gpus: int = typer.Option(0, "--gpus", help="Local GPU processes (NCCL)."),
        procs: int = typer.Option(0, "--procs", help="Local CPU processes (gloo)."),
        nnodes: int = typer.Option(1, "--nnodes", help="Nodes in the job."),
        node_rank: int = typer.Option(None, "--node-rank", help="This node's rank (static rendezvous)."),
        rdzv_endpoint: str = typer.Option(None, "--rdzv-endpoint", help="HOST:PORT of the rendezvous (node 0)."),
        rdzv_id: str = typer.Option(None, "--rdzv-id", help="Job id, the same on every node."),
        max_restarts: int = typer.Option(0, "--max-restarts", help="Restart failed process groups from the last "
                                                                   "checkpoint up to this many times."),
    ):
        from rich.console import Console
        from rich.markup import escape  # messages hold [part] labels, not markup

        from radjepa_cli.pretrain.launch import LaunchOptions, WorkerFailedError, run_pretrain
        from radjepa_cli.pretrain.monitors import NonFiniteLossError
        from radjepa_cli.pretrain.train import resolve_config

        console = Console(stderr=True)
        masks = {}
        if variable_length is not None:
            masks["variable_length"] = variable_length
        if min_keep is not None:
            masks["min_keep"] = min_keep
        if fix_masks is not None:
            masks["independent_scale_aspect"] = masks["reach_last_row_col"] = fix_masks
        overrides = dict(
            shards=str(shards), out=str(out), model=model, depth=depth, embed_dim=embed_dim, num_heads=num_heads,
            steps=steps, epochs=epochs, batch_size=batch_size,
            grad_accum=grad_accum, lr=lr, warmup_steps=warmup_steps, clip_grad=clip_grad, ema_start=ema_start,
            loss=loss, reg_var=reg_var, reg_cov=reg_cov, image_size=image_size,
            crop_scale=_pair(crop_scale, "--crop-scale"), patch_size=patch_size, pred_depth=pred_depth,
            pred_dim=pred_dim, init=init, init_from=str(init_from) if init_from else None,
            kernels=kernels, seed=seed, num_workers=num_workers, threads=threads, ckpt_every=ckpt_every,
            milestone_every=milestone_every, log_every=log_every, monitor_every=monitor_every, probe_every=probe_every, resume=resume,
            masks=masks or None)
        try:
            cfg = resolve_config(config, overrides)
            opts = LaunchOptions(gpus=gpus, procs=procs, nnodes=nnodes, node_rank=node_rank,
                                 rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id, max_restarts=max_restarts,
                                 device=device)
            summary = run_pretrain(cfg, opts)
        except (ValueError, FileNotFoundError, FileExistsError, KeyError, TypeError, RuntimeError) as e:
            # NonFiniteLossError and WorkerFailedError are RuntimeErrors with a complete message.
            label = "stopped" if isinstance(e, (NonFiniteLossError, WorkerFailedError)) else "error"
            console.print(f"[red]{label}:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        if summary is None:
            console.print(f"this node's processes finished; rank 0 writes {out}/COMPLETE")
            return
        if summary.get("already_complete"):
            console.print(f"{out} is already complete ({summary.get('steps')} steps); nothing to do")
            return
        mon = summary.get("monitors", {})
        console.print(f"[green]done[/]: {summary['steps']} steps, final loss {summary['final_loss']:.4f}, "
                      f"RankMe {mon.get('rankme', float('nan')):.1f}, {summary['wall_s']:.0f} s → {out}",
                      highlight=False)

    @app.command("export", help=(
        "Export a run's target encoder (the one to evaluate, as I-JEPA) for other tools: safetensors "
        "(model.safetensors + encoder_config.json), hf (a transformers IJepaModel folder) or timm (a state dict "
        "for timm's VisionTransformer); hf and timm take RGB by default. Each folder's README.md says how to feed "
        "it images, 16-bit PNGs included. RUN may be a run folder or a checkpoint file."))
    def export_cmd(
        run: Path = typer.Argument(..., help="Run folder (uses checkpoints/latest.pt) or a checkpoint .pt."),
        out: Path = typer.Option(..., "--out", help="Output folder."),
        fmt: str = typer.Option("safetensors", "--format", help="safetensors | hf | timm."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
        channels: int = typer.Option(None, "--channels", help="Input channels: 3 (default for hf/timm: grey "
                                     "replicated to RGB gives our features exactly) or 1 (native; safetensors)."),
    ):
        from rich.console import Console
        from rich.markup import escape  # messages hold [part] labels, not markup

        from radjepa_cli.models.export import export

        console = Console(stderr=True)
        try:
            info = export(run, out, fmt, overwrite=overwrite, channels=channels)
        except (ValueError, FileNotFoundError, FileExistsError, KeyError, RuntimeError) as e:
            console.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        console.print(f"[green]exported[/] the {info.get('which') or 'target_encoder'} (step {info.get('step')}) as "
                      f"{fmt} → {out} (max feature difference vs ours {info['max_abs_diff_vs_ours']:.1e})",
                      highlight=False)


def _pair(text: str | None, flag: str) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{flag} takes MIN,MAX (e.g. 0.3,1.0), not {text!r}") from None
    return lo, hi
