"""`radjepa probe` (linear probing, Tables 6/9) and `radjepa segment` (frozen-encoder segmentation, Table 7)."""
from __future__ import annotations

from pathlib import Path

import typer

from radjepa_cli.commands.kernels_flag import kernels_option

ENCODER_NAMES = (
    "ENC names the frozen encoder:\n\n"
    "  RUN_DIR | CKPT.pt | EXPORT_DIR — ours (`radjepa pretrain` run dir, checkpoint, `radjepa export` dir);\n\n"
    "  random:MODEL@SEED:SIZE/PATCH — a random-init twin, e.g. random:vit_tiny@0:128/16 (seed and size optional; "
    "MODEL = vit_tiny … vit_huge), or random:RUN_DIR@SEED for the exact architecture of a run;\n\n"
    "  pixels:32 — raw pixels resized to 32×32 (the no-learning baseline);\n\n"
    "  ijepa:PATH (HF IJepaModel) · ijepa-official:FILE.pth (facebookresearch/ijepa checkpoint) · dinov2:PATH · "
    "rad-dino:PATH (Dinov2Model with RAD-DINO's 518-px MIMIC-normalised preprocessing; pooled = CLS) · "
    "clip:PATH (CLIPVisionModel, also CLIP-format medical encoders) · radjepa-release:PATH (the RadJEPA release, "
    "custom code: needs --trust-remote-code).\n\n"
    "PATH is a local model directory or an org/name id already in the Hugging Face cache; nothing is downloaded. "
    "Frozen features are cached under $RADJEPA_CACHE or ~/.cache/radjepa/features (--cache-dir), keyed by the "
    "encoder's weights, the shards' checksums, the split and the transform."
)


def _fail(console, e: Exception) -> None:
    console.print(f"[red]error:[/red] {e}")
    raise typer.Exit(1)


def _fmt(mean, std) -> str:
    return "—" if mean is None else f"{100 * mean:.1f} ± {100 * std:.1f}"


def register(app: typer.Typer) -> None:
    @app.command("probe", help=(
        "Linear probe on frozen pooled embeddings (the paper's Section 10.1): a sigmoid linear head fitted on "
        "the train split of SHARDS with BCE (unknown labels masked), AdamW + cosine, one run per seed; per-class "
        "AUPRC/AUROC on the test split as mean ± std over seeds, and the aggregate (mean AUPRC over the labels). "
        "Writes --out/results.json, config.json and pr_curves.png.\n\n" + ENCODER_NAMES))
    def probe_cmd(
        shards: Path = typer.Argument(..., help="Shard folder (prepare-data); train/test splits are by patient."),
        encoder: str = typer.Option(..., "--encoder", "-e", help="Encoder spec (see above)."),
        out: Path = typer.Option(..., "--out", help="Output folder."),
        labels: str = typer.Option("phantom", "--labels",
                                   help="vindr6 | rsna | chexpert14 | chexpert5 | nih14 | phantom, or "
                                        "comma-separated label names."),
        seeds: int = typer.Option(5, "--seeds", help="Independent head fits (paper: 5)."),
        epochs: int = typer.Option(100, "--epochs", help="Paper: 100."),
        lr: float = typer.Option(5e-5, "--lr", help="AdamW peak LR, cosine to 0 (paper: 5e-5)."),
        weight_decay: float = typer.Option(0.01, "--weight-decay"),
        batch_size: int = typer.Option(96, "--batch-size", help="Paper: 96 (32 × 3 GPUs)."),
        augment: bool = typer.Option(False, "--augment",
                                     help="The paper's probe augmentations (flip, affine, crop, intensity jitter, "
                                          "Gaussian noise), training features recomputed every epoch (slow)."),
        uncertain: str = typer.Option("mask", "--uncertain", help="Uncertain (-1) labels: mask | positive | negative."),
        image_size: int = typer.Option(None, "--image-size", help="Loader resolution (default: the encoder's)."),
        no_standardize: bool = typer.Option(False, "--no-standardize",
                                            help="Feed raw embeddings (default: z-score with train statistics)."),
        cache_dir: Path = typer.Option(None, "--cache-dir", help="Feature cache (default $RADJEPA_CACHE or "
                                                                 "~/.cache/radjepa/features)."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Recompute features, do not read or write the cache."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
        kernels: str = kernels_option(),  # applied by its callback (radjepa_cli/commands/kernels_flag.py)
        trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                               help="Allow radjepa-release: to run the Python code in its directory."),
        head: str = typer.Option("linear", "--head", help="linear (the paper's, on average-pooled features) | "
                                 "attentive (learnable queries attending over the frozen patch tokens, then linear)."),
        queries: int = typer.Option(4, "--queries", help="Attentive head: number of learnable queries."),
        baselines: bool = typer.Option(False, "--baselines", help="Also probe the random-init twin of the encoder "
                                       "and raw 32×32 pixels, same settings, into OUT/baselines/ (labelled rows)."),
    ):
        from rich.console import Console
        from rich.table import Table

        from radjepa_cli.downstream.probe import ProbeConfig, run_probe

        console = Console(stderr=True)
        cfg = ProbeConfig(shards=str(shards), encoder=encoder, out=str(out), labels=labels, seeds=seeds,
                          epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size, augment=augment,
                          uncertain=uncertain, image_size=image_size, standardize=not no_standardize,
                          cache_dir=str(cache_dir) if cache_dir else None, use_cache=not no_cache, device=device,
                          trust_remote_code=trust_remote_code, head=head, queries=queries)
        try:
            r = run_probe(cfg)
            if baselines:
                from radjepa_cli.downstream.probe_baselines import run_baselines
                rows = {encoder: r, **{f"{k} (baseline)": v for k, v in run_baselines(cfg).items()}}
        except (ValueError, FileNotFoundError, KeyError, PermissionError, IndexError) as e:
            _fail(console, e)
        table = Table(title=f"probe · {head} head · {encoder} · {r['dataset']} "
                            f"({r['n_train']} train / {r['n_test']} test, "
                            f"{len(r['seeds'])} seeds)")
        for col in ("label", "n_pos", "AUPRC %", "AUROC %"):
            table.add_column(col, justify="left" if col == "label" else "right")
        for name in r["labels"]:
            c = r["per_class"][name]
            table.add_row(name, str(c["n_pos"]), _fmt(c["auprc_mean"], c["auprc_std"]),
                          _fmt(c["auroc_mean"], c["auroc_std"]))
        a = r["aggregate"]
        table.add_row("[b]aggregate[/b]", "", f"[b]{_fmt(a['auprc_mean'], a['auprc_std'])}[/b]",
                      _fmt(a["auroc_mean"], a["auroc_std"]))
        Console().print(table)
        if r["skipped_labels"]:
            console.print(f"[yellow]not scored (one outcome only in the test split):[/yellow] "
                          f"{', '.join(r['skipped_labels'])}")
        if baselines:
            summary = Table(title=f"macro-AUPRC % · {head} head · the encoder beside its baselines")
            for col in ("encoder", "AUPRC %", "AUROC %"):
                summary.add_column(col)
            for name, res in rows.items():
                a = res["aggregate"]
                summary.add_row(name, _fmt(a["auprc_mean"], a["auprc_std"]), _fmt(a["auroc_mean"], a["auroc_std"]))
            Console().print(summary)
        console.print(f"results: {out / 'results.json'}  curves: {out / 'pr_curves.png'}  "
                      f"features {'from cache' if r['timing_s']['features_from_cache'] else 'computed'} "
                      f"({r['timing_s']['features']:.1f} s), heads {r['timing_s']['fit_and_score']:.1f} s")

    @app.command("segment", help=(
        "Frozen-encoder segmentation (the paper's Section 10.2): a linear, ViTDet (simple feature pyramid from the "
        "last block) or UPerNet (four blocks, --layers) decoder trained with Adam + cosine on the train split, "
        "the lowest-validation-loss epoch kept, Dice per structure on test as mean ± SD over seeds. Tasks: lungs "
        "(2 structures), lung-zones (6), ribs (20), read from the shards' masks. Writes --out/results.json, "
        "config.json, overlays.png.\n\n" + ENCODER_NAMES))
    def segment_cmd(
        shards: Path = typer.Argument(..., help="Shard folder with masks (phantoms, VinDr-RibCXR, ImaGenome)."),
        encoder: str = typer.Option(..., "--encoder", "-e", help="Encoder spec (see above)."),
        out: Path = typer.Option(..., "--out", help="Output folder."),
        decoder: str = typer.Option("upernet", "--decoder", help="linear | vitdet | upernet."),
        task: str = typer.Option("lungs", "--task", help="lungs | lung-zones | ribs."),
        seeds: int = typer.Option(3, "--seeds"),
        epochs: int = typer.Option(100, "--epochs", help="Paper: 100."),
        lr: float = typer.Option(5e-4, "--lr", help="Adam peak LR, cosine to 0 (paper: 5e-4)."),
        batch_size: int = typer.Option(16, "--batch-size"),
        layers: str = typer.Option(None, "--layers", help="UPerNet blocks, 0-based, e.g. 3,5,7,11 (default: those "
                                                          "of a 12-block encoder, scaled to its depth)."),
        channels: int = typer.Option(256, "--channels", help="ViTDet / UPerNet decoder width."),
        augment: bool = typer.Option(False, "--augment",
                                     help="Affine, elastic, brightness/contrast, gamma (flips only for ribs, with "
                                          "L/R swapped); training features recomputed every epoch (slow)."),
        image_size: int = typer.Option(None, "--image-size", help="Loader and mask resolution (default: the "
                                                                  "encoder's)."),
        cache_dir: Path = typer.Option(None, "--cache-dir", help="Feature cache directory."),
        no_cache: bool = typer.Option(False, "--no-cache"),
        device: str = typer.Option("auto", "--device"),
        kernels: str = kernels_option(),  # applied by its callback (radjepa_cli/commands/kernels_flag.py)
        trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    ):
        from rich.console import Console
        from rich.table import Table

        from radjepa_cli.downstream.segment import SegmentConfig, run_segment

        console = Console(stderr=True)
        try:
            layer_ids = tuple(int(x) for x in layers.split(",")) if layers else None
        except ValueError:
            _fail(console, ValueError(f"--layers must be comma-separated integers, got {layers!r}"))
        cfg = SegmentConfig(shards=str(shards), encoder=encoder, out=str(out), decoder=decoder, task=task,
                            seeds=seeds, epochs=epochs, lr=lr, batch_size=batch_size, layers=layer_ids,
                            channels=channels, augment=augment, image_size=image_size,
                            cache_dir=str(cache_dir) if cache_dir else None, use_cache=not no_cache, device=device,
                            trust_remote_code=trust_remote_code)
        try:
            r = run_segment(cfg)
        except (ValueError, FileNotFoundError, KeyError, PermissionError, IndexError) as e:
            _fail(console, e)
        table = Table(title=f"segment · {encoder} + {decoder} · {task} ({r['n_train']} train / {r['n_test']} test, "
                            f"{len(r['per_seed'])} seeds)")
        table.add_column("structure")
        table.add_column("Dice %", justify="right")
        for s in r["structures"]:
            d = r["per_structure"][s]
            table.add_row(s, _fmt(d["dice_mean"], d["dice_std"]))
        table.add_row("[b]mean[/b]", f"[b]{_fmt(r['mean_dice']['mean'], r['mean_dice']['std'])}[/b]")
        Console().print(table)
        console.print(f"results: {out / 'results.json'}  overlays: {out / 'overlays.png'}")

    @app.command("predict", help=(
        "Apply a saved probe or segmentation model (the --out folder of `radjepa probe` / `radjepa segment`) to new "
        "images: PNG / JPEG / DICOM files, folders of them, or shard folders. The encoder is found from its "
        "model.json and checked by checksum; images are decoded as prepare-data decodes them. Probe: "
        "predictions.csv + .jsonl (probabilities and labels at the validation-chosen thresholds). Segment: "
        "masks/ID/STRUCTURE.png (+ overlays/ with --overlays). Shards with labels or masks also get metrics.json, "
        "the metrics probe / segment report. Unreadable inputs are skipped and listed in skipped.json."))
    def predict_cmd(
        model: Path = typer.Argument(..., help="A probe or segment output folder holding model.json."),
        inputs: list[str] = typer.Argument(..., help="Image files, folders of images, shard folders or .tar shards."),
        out: Path = typer.Option(..., "--out", help="Output folder."),
        seed: int = typer.Option(None, "--seed", help="Which saved head (default: the best on validation)."),
        split: str = typer.Option("test", "--split", help="Split of shard inputs: train | val | test | all."),
        overlays: bool = typer.Option(False, "--overlays", help="Segmentation: draw overlays/ID.png."),
        batch_size: int = typer.Option(16, "--batch-size"),
        encoder: str = typer.Option(None, "--encoder", help="Where the encoder is now, if it moved (its checksum "
                                                            "must still match)."),
        cache_dir: Path = typer.Option(None, "--cache-dir", help="Feature cache for shard inputs."),
        no_cache: bool = typer.Option(False, "--no-cache"),
        device: str = typer.Option("auto", "--device"),
        trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    ):
        from rich.console import Console

        from radjepa_cli.downstream.predict import PredictConfig, run_predict
        from radjepa_cli.downstream.saved import ModelDirError

        console = Console(stderr=True)
        cfg = PredictConfig(model=str(model), inputs=tuple(inputs), out=str(out), seed=seed, split=split,
                            batch_size=batch_size, overlays=overlays, encoder=encoder, device=device,
                            cache_dir=str(cache_dir) if cache_dir else None, use_cache=not no_cache,
                            trust_remote_code=trust_remote_code)
        try:
            r = run_predict(cfg)
        except (ValueError, FileNotFoundError, ModelDirError, PermissionError) as e:
            _fail(console, e)
        for s in r["skipped"]:
            console.print(f"[yellow]skipped[/yellow] {s['path']}: {s['reason']}")
        for m in r["metrics"]:
            Console().print(_metrics_table(r["task"], m))
        console.print(f"{r['n_predicted']} image(s) predicted with seed {r['seed']}, {r['n_skipped']} skipped, "
                      f"{r['seconds']:.1f} s → {out}")


def _metrics_table(task: str, m: dict):
    from rich.table import Table
    head = f"{m['shards']} ({m['split']}, {m['n']} images, {len(m['per_seed'])} seeds)"
    if task == "probe":
        table = Table(title=f"predict · probe metrics · {head}")
        for col in ("label", "n_pos", "AUPRC %", "AUROC %"):
            table.add_column(col, justify="left" if col == "label" else "right")
        for name in m["labels"]:
            c = m["per_class"][name]
            table.add_row(name, str(c["n_pos"]), _fmt(c["auprc_mean"], c["auprc_std"]),
                          _fmt(c["auroc_mean"], c["auroc_std"]))
        a = m["aggregate"]
        table.add_row("[b]aggregate[/b]", "", f"[b]{_fmt(a['auprc_mean'], a['auprc_std'])}[/b]",
                      _fmt(a["auroc_mean"], a["auroc_std"]))
        return table
    table = Table(title=f"predict · Dice · {head}")
    table.add_column("structure")
    table.add_column("Dice %", justify="right")
    for s in m["structures"]:
        d = m["per_structure"][s]
        table.add_row(s, _fmt(d["dice_mean"], d["dice_std"]))
    table.add_row("[b]mean[/b]", f"[b]{_fmt(m['mean_dice']['mean'], m['mean_dice']['std'])}[/b]")
    return table
