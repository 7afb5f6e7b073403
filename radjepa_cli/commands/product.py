"""`radjepa quickstart` and `radjepa doctor`."""
from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("quickstart")
    def quickstart(
        out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Output folder (reruns resume)."),
        fresh: bool = typer.Option(False, "--fresh", help="Redo every step instead of resuming."),
        n: int = typer.Option(None, "--n", help="Number of phantoms (default: the quickstart's own)."),
    ):
        """The whole pipeline on the embedded data (phantoms + the real RG1 DICOM), <= 15 min on 2 CPU cores:
        shards → pretrain → probe → segment → train-report → generate-report → evaluate, then a summary page."""
        from radjepa_cli.quickstart import QuickstartConfig, run_quickstart

        cfg = QuickstartConfig(out=str(out), fresh=fresh, **({"n": n} if n else {}))
        raise typer.Exit(run_quickstart(cfg))

    @app.command("doctor")
    def doctor(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")):
        """What this machine has (devices, versions, fused kernels, optional scorers, caches, disk) and what follows."""
        from radjepa_cli.doctor import collect, render

        info = collect()
        if as_json:
            typer.echo(json.dumps(info, indent=2))
        else:
            render(info)
