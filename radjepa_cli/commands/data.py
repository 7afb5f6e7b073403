"""`radjepa prepare-data` and `radjepa merge-manifests`."""
from __future__ import annotations

from pathlib import Path

import typer

from radjepa_cli.data.shards import PNG_LEVEL
from radjepa_cli.data.sources import SOURCES


def _datasets_help() -> str:
    from radjepa_cli.data.sources import describe
    lines = [f"  {describe(name)}" for name in SOURCES]
    return "\n\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("prepare-data", help=(
        "Turn a chest X-ray collection into WebDataset shards ({split}-{index:06d}.tar: {key}.png, {key}.json, "
        "optional {key}.masks.npz) plus manifest.json (counts, label prevalences, sha256 per shard, every rejected "
        "input with its reason). Images a dataset's CSV lists but that are not on disk (a partial download) are "
        "left out with one summary by folder. Reruns resume, retrying inputs that were missing or unreadable; "
        "patient ids are stored only as salted hashes.\n\n"
        "Exit code: 0 (with a warning summary when some inputs were rejected); 1 when nothing usable remains or "
        "under --strict at the first bad input.\n\nDATASET and the ROOT layout it expects:\n\n" + _datasets_help()))
    def prepare_data_cmd(
        dataset: str = typer.Argument(..., help=f"One of: {' | '.join(SOURCES)}."),
        root: Path = typer.Argument(None, help="The dataset's folder in its official layout (not for synthetic)."),
        out: Path = typer.Option(..., "--out", help="Output shard folder."),
        n: int = typer.Option(None, "--n", help="synthetic: number of phantoms (default 1000); others: keep at most N."),
        size: int = typer.Option(256, "--size", help="Shorter image side in pixels (518 for RAD-DINO-style runs)."),
        bits: int = typer.Option(8, "--bits", help="PNG bit depth: 8 or 16."),
        png_level: int = typer.Option(
            PNG_LEVEL, "--png-level", min=0, max=9,
            help="PNG zlib compression, 0-9 (recorded in manifest.json; the pixels are the same at every level). "
                 "0 decodes ~3x faster for 1.3-2x the disk: use it for training shards on GPU nodes where PNG "
                 "decode limits the loader (few cores per GPU). A rerun with another level is refused unless "
                 "--overwrite."),
        workers: int = typer.Option(0, "--workers", help="Decoding processes (0 = one per CPU, at most 8)."),
        split: str = typer.Option("all", "--split", help="train | val | test | all."),
        shard_size: int = typer.Option(1000, "--shard-size", help="Samples per tar."),
        seed: int = typer.Option(0, "--seed", help="Phantom seed; key of the patient-level split hash."),
        salt: str = typer.Option(None, "--salt", help="Patient-id hash salt (default: random, kept in OUT/.salt)."),
        val_frac: float = typer.Option(0.1, "--val-frac", help="Validation share when a dataset has no split."),
        test_frac: float = typer.Option(0.1, "--test-frac", help="Test share when a dataset has no split."),
        exclude_subjects: Path = typer.Option(None, "--exclude-subjects",
                                              help="File of raw patient ids (one a line) to leave out."),
        views: str = typer.Option(None, "--views", help="Keep only these views, e.g. PA,AP,LATERAL."),
        lateral_ratio: float = typer.Option(None, "--lateral-ratio", help="At most 1 lateral per R frontals."),
        part: str = typer.Option(None, "--part", help="i/N: write the i-th of N disjoint parts (needs --salt)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be written; write nothing."),
        strict: bool = typer.Option(False, "--strict", help="Stop with an error at the first bad input."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace shards made with another config."),
        max_megapixels: float = typer.Option(200.0, "--max-megapixels", help="Decompression-bomb limit."),
        csv: Path = typer.Option(None, "--csv", help="folder: a CSV of path,labels…,findings,impression,patient."),
        contact_sheet: int = typer.Option(24, "--contact-sheet",
                                          help="Images in OUT/contact_sheet.png (labels, mask outlines); 0 = none."),
    ):
        from rich.console import Console

        from radjepa_cli.data.prepare import PrepareConfig, StrictError, image_progress, prepare_data

        console = Console(stderr=True)
        cfg = PrepareConfig(
            dataset=dataset, out=str(out), root=str(root) if root else None, n=n, size=size, bits=bits,
            png_level=png_level, workers=workers, split=split, shard_size=shard_size, seed=seed, salt=salt,
            val_frac=val_frac, test_frac=test_frac,
            exclude_subjects=str(exclude_subjects) if exclude_subjects else None, views=views,
            lateral_ratio=lateral_ratio, part=part, dry_run=dry_run, strict=strict, overwrite=overwrite,
            max_megapixels=max_megapixels, csv=str(csv) if csv else None, contact_sheet=contact_sheet)
        try:
            with image_progress(console) as progress:
                result = prepare_data(cfg, progress=progress)
        except (StrictError, ValueError, KeyError, FileNotFoundError, FileExistsError) as e:
            console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(1)
        if dry_run:
            _print_plan(console, result)
            raise typer.Exit(0 if result["items"] else 1)
        raise typer.Exit(_print_summary(console, result, out))

    @app.command("merge-manifests")
    def merge_manifests_cmd(out: Path = typer.Argument(..., help="Shard folder holding manifest.part-*-of-*.json.")):
        """Merge the manifests of `prepare-data --part i/N` runs (copied into one folder) into manifest.json."""
        from rich.console import Console

        from radjepa_cli.data.manifest import merge_part_manifests

        console = Console(stderr=True)
        try:
            m = merge_part_manifests(out)
        except (ValueError, FileNotFoundError) as e:
            console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(1)
        raise typer.Exit(_print_summary(console, m, out))


def _print_inputs(console, m: dict) -> None:
    """What the reader read, what it had to guess (loud), and which listed images are not on disk (one summary)."""
    about = m.get("source") or {}
    for note in about.get("notes", []):
        console.print(f"[dim]{note}[/dim]", soft_wrap=True)
    for w in about.get("warnings", []):
        console.print(f"[bold yellow]WARNING:[/bold yellow] {w}", soft_wrap=True)
    if (m.get("missing") or {}).get("text"):
        console.print(f"[yellow]missing:[/yellow] {m['missing']['text']}", soft_wrap=True)


def _print_plan(console, plan: dict) -> None:
    _print_inputs(console, plan)
    console.print(f"[bold]dry run[/bold]: {plan['items']} items in {len(plan['shards'])} shard(s) "
                  f"(of {plan['total_shards']} planned) → {plan['out']}")
    for s in plan["shards"]:
        console.print(f"  {s['name']}  {s['items']:>6} items  {'(exists)' if s['exists'] else ''}")
    if plan["excluded"]:
        console.print(f"  excluded by filters: {plan['excluded']}")
    for r in plan["rejected"]:
        console.print(f"  [yellow]rejected[/yellow] {r['path'] or r['key']}: {r['reason']}")


def _print_summary(console, m: dict, out: Path) -> int:
    from rich.table import Table

    _print_inputs(console, m)
    counts = m["counts"]
    table = Table(title=f"{out}/manifest ({'complete' if m['complete'] else 'INCOMPLETE'})")
    for col in ("dataset", "split", "views", "samples"):
        table.add_column(col)
    for ds, per_split in counts["dataset"].items():
        for sp, views in per_split.items():
            table.add_row(ds, sp, ", ".join(f"{v}:{c}" for v, c in views.items()), str(sum(views.values())))
    console.print(table)
    rejected = m.get("rejected", [])
    if rejected:
        console.print(f"[yellow]warning:[/yellow] {len(rejected)} input(s) rejected (listed in manifest.json):")
        for r in rejected[:20]:
            console.print(f"  {r['path'] or r['key']}: {r['reason']}")
        if len(rejected) > 20:
            console.print(f"  … and {len(rejected) - 20} more")
    if counts["total"] == 0:
        console.print("[red]error:[/red] no usable images were written")
        return 1
    console.print(f"{counts['total']} samples in {len(m['shards'])} shard(s); manifest: {out}/manifest.json")
    return 0
