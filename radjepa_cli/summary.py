"""The quickstart's summary: key numbers in the terminal, and one Markdown + HTML page with the plots."""
from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from radjepa_cli.io import atomic_write_bytes

SECTIONS = (  # (title, folder glob, what the plots show)
    ("Pretraining", "pretrain", "loss and collapse monitors (effective rank, target-feature std)"),
    ("Linear probe", "probe-*", "AUPRC per finding, one bar per encoder (whiskers: seed SD; dashed: prevalence); "
                                "below it, each encoder's precision–recall curves per finding"),
    ("Segmentation", "segment-*", "Dice overlays (prediction vs ground truth)"),
    ("Report generation", "report_model", "training / validation loss"),
    ("Saved models applied", "predict/*/overlays",
     "`radjepa predict`: the saved UPerNet lung model on phantom test images and the real RG1 DICOM / PNG"),
    ("Evaluation", "evaluate", "bootstrap medians with 95% CIs, paper tables"),
)


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def key_numbers(out: Path) -> list[tuple[str, str]]:
    """(what, value) rows from the results files the pipeline wrote; absent files are simply not listed."""
    rows: list[tuple[str, str]] = []
    for p in sorted(out.glob("probe-*/results.json")):
        r = _load(p)
        if r and "aggregate" in r:
            a = r["aggregate"]
            who = f"{p.parent.name.removeprefix('probe-')} ({r.get('head', 'linear')} head)"
            rows.append((f"probe macro-AUPRC · {who}",
                         f"{100 * a['auprc_mean']:.1f} ± {100 * a['auprc_std']:.1f} (AUROC {100 * a['auroc_mean']:.1f})"))
    for p in sorted(out.glob("segment-*/results.json")):
        r = _load(p)
        if r and "mean_dice" in r:
            per = ", ".join(f"{k} {100 * v['dice_mean']:.1f}" for k, v in r.get("per_structure", {}).items())
            rows.append((f"Dice · {r.get('decoder')} · {r.get('task')}",
                         f"{100 * r['mean_dice']['mean']:.1f} ± {100 * r['mean_dice']['std']:.1f} ({per})"))
    rows += online_probe_rows(out / "pretrain")
    rows += ceiling_rows()
    s = _load(out / "reports" / "predictions.summary.json")  # generate-report's label F1 beside the probe's
    if s and s.get("report"):
        transfer = s.get("label_transfer")
        probe = s.get("probe_macro_f1")
        rows.append(("report label transfer (report F1 / probe F1)",
                     f"{'n/a' if transfer is None else f'{transfer:.2f}'} (report {s['report']['macro_f1']:.3f}, "
                     f"probe {'n/a' if probe is None else f'{probe:.3f}'}; {s['distinct_reports']}/{s['n']} distinct)"))
    r = _load(out / "evaluate" / "reports" / "results.json")
    if r:
        for name, m in (r.get("metrics") or {}).items():
            if not isinstance(m, dict) or m.get("value") is None:
                continue
            label = f"report {m.get('label', name)}"
            if m.get("median") is None:  # --bootstrap 0: point estimate only
                rows.append((label, f"{m['value']:.3g}"))
            else:
                rows.append((label, f"{m['median']:.3g} [{m['ci_low']:.3g}, {m['ci_high']:.3g}] (median, 95% CI)"))
    return rows


def online_probe_rows(run: Path) -> list[tuple[str, str]]:
    """The online probe's first and last read-outs and what they cost against the run's wall time."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    probe = [r for r in recs if r.get("kind") == "probe" and r.get("probe_ridge_auprc") is not None]
    if not probe:
        return []
    first, last = probe[0], probe[-1]
    rows = [("online probe (ridge, val) macro-AUPRC, first → last read-out",
             f"{100 * first['probe_ridge_auprc']:.1f} (step {first['step']}) → {100 * last['probe_ridge_auprc']:.1f} "
             f"(step {last['step']}); kNN {100 * first['probe_knn_auprc']:.1f} → "
             f"{100 * last['probe_knn_auprc']:.1f}")]
    done = _load(run / "COMPLETE") or {}
    if done.get("wall_s"):
        spent = last.get("probe_seconds_total", 0.0)
        rows.append(("online probe cost", f"{spent:.1f} s of {done['wall_s']:.0f} s pretraining wall time "
                                          f"({100 * spent / done['wall_s']:.1f}%, {len(probe)} read-outs)"))
    return rows


# A measured reference, not rerun by the quickstart: the same ViT trained *with* the labels (see RESULTS.md).
CEILING = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "supervised_ceiling_phantom5k.json"


def ceiling_rows() -> list[tuple[str, str]]:
    r = _load(CEILING)
    if not r or r.get("macro_auprc") is None:
        return []   # an installed package without the source tree's benchmarks/
    arch = r.get("architecture", {})
    return [("supervised ceiling (measured once, not rerun)",
             f"{100 * r['macro_auprc']:.1f} macro-AUPRC: {arch.get('model')} depth {arch.get('depth')} at "
             f"{arch.get('image_size')} px trained on the labels for {r.get('train_seconds', 0):.0f} s on 5,000 "
             f"phantoms (benchmarks/results/{CEILING.name})")]


def probe_chart(out: Path) -> Path | None:
    """out/probe_auprc_comparison.png from every probe-*/results.json (evaluate/plots.py draws it)."""
    from radjepa_cli.evaluate.inputs import load_results
    from radjepa_cli.evaluate.plots import probe_comparison_chart
    results = []
    for p in sorted(out.glob("probe-*/results.json")):
        try:
            results.append(load_results(p))
        except ValueError:
            continue
    return probe_comparison_chart(results, out / "probe_auprc_comparison.png") if results else None


LEAD_FIGURES = {"Linear probe": probe_chart}  # drawn first in their section, above the per-run plots


def plot_pretrain_curves(run: Path) -> Path | None:
    """RUN/loss_curve.png from RUN/metrics.jsonl: the loss, and the collapse monitor where it was measured."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    loss = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None and "step" in r]
    if not loss:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rank = [(r["step"], r["rankme"]) for r in rows if r.get("rankme") is not None]
    probe = [r for r in rows if r.get("kind") == "probe" and r.get("probe_ridge_auprc") is not None]
    panels = 1 + bool(rank) + bool(probe)
    fig, ax = plt.subplots(1, panels, figsize=(4.5 * panels, 3.2), squeeze=False)
    ax[0, 0].plot(*zip(*loss), label="total")
    pred = [(r["step"], r["loss_pred"]) for r in rows if r.get("loss_pred") is not None]
    if pred:  # logged when --reg-var/--reg-cov add terms: show the prediction term on its own too
        ax[0, 0].plot(*zip(*pred), label="prediction term")
        ax[0, 0].legend()
    ax[0, 0].set(xlabel="optimizer step", ylabel="JEPA loss", title="pretraining loss")
    if rank:
        ax[0, 1].plot(*zip(*rank), marker="o")
        ax[0, 1].set(xlabel="optimizer step", ylabel="RankMe", title="effective rank of target features")
    if probe:  # pretrain/online_probe.py's read-outs of the target encoder, beside the loss
        a = ax[0, panels - 1]
        for key, name in (("probe_ridge_auprc", "ridge (GCV)"), ("probe_knn_auprc", "kNN (k=20)")):
            pts = [(r["step"], 100 * r[key]) for r in probe if r.get(key) is not None]
            if pts:
                a.plot(*zip(*pts), marker="o", label=name)
        a.legend(fontsize=8)
        a.set(xlabel="optimizer step", ylabel="val macro-AUPRC (%)", title="online probe of the target encoder")
    fig.tight_layout()
    png = run / "loss_curve.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def write_summary(out: Path, state: dict[str, Any]) -> Path:
    out = Path(out)
    plot_pretrain_curves(out / "pretrain")
    rows = key_numbers(out)
    steps = state.get("steps", {})

    t = Table(title="quickstart — key numbers (phantom data; not comparable to the paper's real-data results)")
    t.add_column("what")
    t.add_column("value")
    for k, v in rows:
        t.add_row(k, v)
    Console().print(t)

    md = ["# radjepa quickstart summary", "",
          "All numbers come from procedurally generated phantom chest X-rays (plus the real RG1 DICOM for report "
          "generation); they show the pipeline works and learns, they are not comparable to the paper's numbers.", "",
          "## Steps", "", "| step | status | seconds |", "|---|---|---|"]
    md += [f"| {k} | {v.get('status')} | {v.get('seconds', '')} |" for k, v in steps.items()]
    md += ["", "## Key numbers", "", "| what | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    html_parts = [f"<h1>radjepa quickstart summary</h1><p>{html.escape(md[2])}</p>",
                  "<h2>Key numbers</h2><table border=1 cellpadding=4>" +
                  "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows) + "</table>"]
    for title, pattern, what in SECTIONS:
        pngs = sorted(p for d in out.glob(pattern) if d.is_dir() for p in d.rglob("*.png"))
        lead = LEAD_FIGURES[title](out) if title in LEAD_FIGURES else None
        pngs = ([lead] if lead else []) + pngs
        if not pngs:
            continue
        md += ["", f"## {title}", "", f"_{what}_", ""]
        html_parts.append(f"<h2>{html.escape(title)}</h2><p><i>{html.escape(what)}</i></p>")
        for p in pngs:
            rel = os.path.relpath(p, out)
            md.append(f"![{rel}]({rel})")
            html_parts.append(f'<figure style="display:inline-block;margin:6px"><img src="{html.escape(rel)}" '
                              f'style="max-width:480px"><figcaption>{html.escape(rel)}</figcaption></figure>')
    md += ["", "## Where everything is", ""] + [f"- `{p.name}/`" for p in sorted(out.iterdir()) if p.is_dir()]
    atomic_write_bytes(out / "summary.md", "\n".join(md).encode())
    page = out / "summary.html"
    atomic_write_bytes(page, ("<!doctype html><meta charset=utf-8><title>radjepa quickstart</title>"
                              "<body style='font-family:sans-serif;max-width:1100px;margin:auto'>"
                              + "\n".join(html_parts) + "</body>").encode())
    return page
