"""`radjepa evaluate …`: report metrics with bootstrap CIs, the paper's tables, bias and agreement analyses.

    radjepa evaluate --table 3|4|6|7|9|12|13 [INPUTS…] [--compare-paper] [--out DIR] [--runs DIR] [--config protocol.toml]
    radjepa evaluate table N [INPUTS…] …                       (the same; `--table N` is rewritten to this)
    radjepa evaluate reports PREDICTIONS.jsonl [--bootstrap 500|0] [--uncertain-as positive|negative] [--out DIR]
    radjepa evaluate bias SHARDS [PREDICTIONS.jsonl] [--given Pneumothorax --finding "Pleural Effusion"]
    radjepa evaluate agreement RATINGS.csv [--humans H1,H2 --judges A,B,C] [--threshold 4]
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

SUBCOMMANDS = ("table", "reports", "bias", "agreement")


def route_table_flag(args: list[str]) -> list[str]:
    """`evaluate --table 3 X` → `evaluate table 3 X` (the DESIGN.md contract spelling)."""
    if args and args[0] in SUBCOMMANDS:
        return args
    for i, a in enumerate(args):
        if a == "--table" and i + 1 < len(args):
            return ["table", args[i + 1], *args[:i], *args[i + 2:]]
        if a.startswith("--table="):
            return ["table", a.split("=", 1)[1], *args[:i], *args[i + 1:]]
    return args


class EvaluateGroup(TyperGroup):
    def parse_args(self, ctx, args):
        return super().parse_args(ctx, route_table_flag(list(args)))


evaluate_app = typer.Typer(
    cls=EvaluateGroup, no_args_is_help=True,
    help="Report metrics with bootstrap CIs, the paper's tables beside our numbers, bias and agreement analyses.\n\n"
         "radjepa evaluate --table 3|4|6|7|9|12|13 [INPUTS...] [--compare-paper] is the same as "
         "`radjepa evaluate table N [INPUTS...]`; without INPUTS it searches --runs (default runs/quickstart).")

_UNC = typer.Option("positive", "--uncertain-as", help="How uncertain (-1) labels count in F1: positive | negative "
                                                       "(recorded in the output).")
_RG = typer.Option(None, "--radgraph-dir", envvar="RADJEPA_RADGRAPH_DIR", help="Local RadGraph model cache (radgraph package, model_type=radgraph).")
_CB = typer.Option(None, "--chexbert-dir", envvar="RADJEPA_CHEXBERT_DIR", help="Local CheXbert weights dir (chexbert.pth + bert-base-uncased files).")
_GR = typer.Option(None, "--green-dir", envvar="RADJEPA_GREEN_DIR", help="Local GREEN judge model dir (e.g. GREEN-RadLlama2-7b).")


def _console():
    from rich.console import Console

    return Console()


def _fail(e: Exception) -> None:
    _console().print(f"[red]error:[/] {e}")
    raise typer.Exit(2)


@evaluate_app.command("table")
def table_cmd(
    number: int = typer.Argument(..., help="Paper table: 3, 4 (reports), 6, 9 (probe), 7 (segment), 12 (GREEN), "
                                           "13 (report summary)."),
    inputs: Optional[List[Path]] = typer.Argument(None, help="predictions.jsonl / results.json files or folders; "
                                                             "default: search --runs."),
    compare_paper: bool = typer.Option(False, "--compare-paper", help="Put the paper's numbers beside ours, with deltas."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default RUNS/evaluate/tableN)."),
    runs: Path = typer.Option(Path("runs/quickstart"), "--runs", help="Where to look when no INPUTS are given."),
    config: Optional[Path] = typer.Option(None, "--config", help="protocol.toml: run train-report → generate-report "
                                                                  "→ score for its encoders first (tables 3/4/12/13)."),
    bootstrap: int = typer.Option(500, "--bootstrap", help="Bootstrap resamples for report metrics (0: point values)."),
    seed: int = typer.Option(0, "--seed"),
    uncertain_as: str = _UNC, radgraph_dir: Optional[Path] = _RG, chexbert_dir: Optional[Path] = _CB,
    green_dir: Optional[Path] = _GR,
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Write Figure-5/6 style PNGs (report tables); "
                                                                       "the per-finding AUPRC chart (table 6)."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Report tables: a 'random other report' "
                                   "and a 'most frequent report' row under each of ours (same references, bootstrap)."),
    iu_xray: bool = typer.Option(False, "--iu-xray", help="Report tables: also the two baselines on the real IU-Xray "
                                 "findings (torchxrayvision's NLMCXR_reports.tgz, installed by `make install`)."),
):
    """Lay out one of the paper's tables from our outputs (JSON + Markdown + CSV + LaTeX, and figures)."""
    from radjepa_cli.evaluate.render import to_rich, write_table
    from radjepa_cli.evaluate.tables import TableConfig, build_table

    cfg = TableConfig(number, tuple(str(p) for p in inputs or ()), str(runs), compare_paper,
                      str(out) if out else None, bootstrap, seed, uncertain_as,
                      *(str(p) if p else None for p in (radgraph_dir, chexbert_dir, green_dir)),
                      baselines=baselines, iu_xray=iu_xray)
    out_dir = Path(out) if out else Path(runs) / "evaluate" / f"table{number}"
    try:
        protocol = None
        if config is not None:
            from radjepa_cli import config as config_lib
            from radjepa_cli.evaluate.protocol import ProtocolConfig

            protocol = config_lib.load(ProtocolConfig, config)
        table, used = build_table(cfg, protocol)
    except (FileNotFoundError, ValueError, KeyError, TypeError, RuntimeError) as e:
        _fail(e)
    table.data["inputs"] = used
    table.data["config"] = {k: v for k, v in cfg.__dict__.items()}
    if figures and number in (3, 4, 13):
        from radjepa_cli.evaluate import plots
        from radjepa_cli.evaluate.paper import paper_numbers

        groups = used.get("groups", [])
        paper_rows = paper_numbers()["table3"]["rows"] if compare_paper and number != 4 else []
        if number == 4 and compare_paper:
            paper_rows = [dict(r, encoder=r["encoder"], dataset=f"{r['dataset']} · {r['vlm']}")
                          for r in paper_numbers()["table4"]["rows"] if r["encoder"] != "Base Encoder"]
        table.data["figures"] = [str(plots.forest_plot(groups, paper_rows, out_dir / "figure6_forest.png")),
                                 str(plots.ranking_plot(groups, paper_rows, out_dir / "figure5_ranking.png"))]
    if figures and number == 6 and table.data.get("ours"):
        from radjepa_cli.evaluate.plots import probe_comparison_chart

        table.data["figures"] = [str(probe_comparison_chart(table.data["ours"], out_dir / "probe_auprc.png"))]
    paths = write_table(table, out_dir)
    con = _console()
    con.print(to_rich(table))
    con.print(f"[green]wrote[/] {paths['json']} (+ .md .csv .tex)"
              + (f" and {', '.join(table.data.get('figures', []))}" if table.data.get("figures") else ""))


@evaluate_app.command("reports")
def reports_cmd(
    predictions: Path = typer.Argument(..., help="predictions.jsonl (id, generated, reference, …)."),
    bootstrap: int = typer.Option(500, "--bootstrap", help="Resamples (0: point estimates only)."),
    seed: int = typer.Option(0, "--seed"),
    uncertain_as: str = _UNC,
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: beside the file, eval/)."),
    radgraph_dir: Optional[Path] = _RG, chexbert_dir: Optional[Path] = _CB, green_dir: Optional[Path] = _GR,
):
    """Score generated reports: BLEU-4 (sacrebleu and coco), ROUGE-L, chexpert-rules F1-14/F1-5, optional RadGraph,
    CheXbert and GREEN — medians with 95% bootstrap CIs, per (dataset, encoder, LM) group."""
    from radjepa_cli import config as config_lib
    from radjepa_cli.evaluate.reports import ReportEvalConfig, evaluate_predictions
    from radjepa_cli.io import write_json

    cfg = ReportEvalConfig(str(predictions), bootstrap, seed, uncertain_as,
                           *(str(p) if p else None for p in (radgraph_dir, chexbert_dir, green_dir)))
    out_dir = Path(out) if out else predictions.parent / "eval"
    try:
        res = evaluate_predictions(cfg)
    except (FileNotFoundError, ValueError) as e:
        _fail(e)
    _print_report_eval(res)
    config_lib.save(cfg, out_dir)
    write_json(out_dir / "results.json", res)
    _console().print(f"[green]wrote[/] {out_dir / 'results.json'}")


def _print_report_eval(res: dict) -> None:
    from rich.table import Table

    for g in res["groups"]:
        t = Table(title=f"{res['predictions']} · dataset {g['dataset']} · encoder {g['encoder']}"
                        f"{' · LM ' + g['llm'] if g['llm'] else ''} · n={g['n']}",
                  caption=f"labeller: {res['labeller']}; uncertain → {res['uncertain_as']}", caption_justify="left")
        for c in ("metric", "value", "median", "95% CI", "definition"):
            t.add_column(c, overflow="fold")
        for m in g["metrics"].values():
            ci = f"[{m['ci_low']:.2f}, {m['ci_high']:.2f}]" if m["ci_low"] is not None else "—"
            med = f"{m['median']:.2f}" if m["median"] is not None else "—"
            t.add_row(m["label"], f"{m['value']:.2f}", med, ci, m["definition"])
        for k, why in g["unavailable"].items():
            t.add_row(k, "n/a", "", "", why, style="yellow")
        _console().print(t)


@evaluate_app.command("bias")
def bias_cmd(
    shards: str = typer.Argument(..., help="Shards (dir, manifest or tar pattern); or a predictions.jsonl alone."),
    predictions: Optional[Path] = typer.Argument(None, help="predictions.jsonl for joint-absence errors."),
    given: str = typer.Option("Pneumothorax", "--given", help="The conditioning finding (the paper's N)."),
    finding: str = typer.Option("Pleural Effusion", "--finding", help="The conditioned finding (the paper's B)."),
    uncertain: str = typer.Option("exclude", "--uncertain", help="Uncertain labels: exclude | positive | negative."),
    split: Optional[str] = typer.Option(None, "--split", help="Only this split of the shards."),
    labels_from: str = typer.Option("auto", "--labels-from", help="auto | dataset | text (chexpert-rules on "
                                                                   "findings + impression)."),
    compare_paper: bool = typer.Option(False, "--compare-paper", help="Show the paper's Table 5 (MIMIC-CXR) beside."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder for bias.json."),
):
    """Table 5 (label co-occurrence, P(finding | given)) and Section 6 joint-absence errors."""
    from rich.table import Table

    from radjepa_cli.evaluate.bias import bias_report
    from radjepa_cli.evaluate.paper import paper_numbers
    from radjepa_cli.io import write_json

    if predictions is None and shards.endswith(".jsonl"):
        shards, predictions = None, Path(shards)
    try:
        res = bias_report(shards, str(predictions) if predictions else None, given, finding, uncertain, split,
                          labels_from)
    except (FileNotFoundError, ValueError) as e:
        _fail(e)
    con = _console()
    if "table5" in res:
        t5 = res["table5"]
        t = Table(title=f"P({finding} | {given}) in {shards} ({res['labels_source']}); counts (probability)")
        for c in ("", f"{given}+ (n={t5['n_given_pos']})", f"{given}- (n={t5['n_given_neg']})"):
            t.add_column(c)
        for b in "+-":
            cells = [t5["cells"][f"B{b}|N{n}"] for n in "+-"]
            t.add_row(f"{finding}{b}", *[f"{c['count']} ({c['p']:.3f})" if c["p"] is not None else "0 (n/a)"
                                         for c in cells])
        if compare_paper:
            p5 = paper_numbers()["table5"]
            t.add_row("paper, MIMIC-CXR", *[", ".join(f"B{b} {p5['cells'][f'B{b}|N{n}']['count']} "
                                                      f"({p5['cells'][f'B{b}|N{n}']['p']:.3f})" for b in "+-")
                                            for n in "+-"], style="dim")
        con.print(t)
    for enc, ja in res.get("joint_absence", {}).items():
        rate = f"{100 * ja['rate']:.1f}%" if ja["rate"] is not None else "n/a"
        con.print(f"joint-absence errors · {enc}: {ja['errors']} of {ja['cases']} references with "
                  f"{' or '.join(ja['pair'])} ({rate}) are denied both in the generated report")
    if compare_paper and res.get("joint_absence"):
        p = paper_numbers()["table5"]["joint_absence_errors"]
        con.print(f"[dim]paper (200 human-annotated cases): RadJEPA {p['RadJEPA']}, RAD-DINO {p['RAD-DINO']}[/]")
    out_dir = Path(out) if out else Path("runs") / "evaluate" / "bias"
    write_json(out_dir / "bias.json", res)
    con.print(f"[green]wrote[/] {out_dir / 'bias.json'}")


@evaluate_app.command("agreement")
def agreement_cmd(
    ratings: Path = typer.Argument(..., help="CSV: an id column and one 0-5 score column per rater."),
    humans: str = typer.Option("", "--humans", help="Comma-separated human rater columns (e.g. H1,H2)."),
    judges: str = typer.Option("", "--judges", help="Comma-separated LLM judge columns; their majority = Master vote."),
    id_column: str = typer.Option("id", "--id-column"),
    threshold: int = typer.Option(4, "--threshold", help="Acceptable = score >= threshold."),
    compare_paper: bool = typer.Option(False, "--compare-paper", help="Show the paper's Tables 10-11 beside."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder for agreement.json (default: beside CSV)."),
):
    """Inter-rater statistics: QWK, Cohen's κ (Acceptable), Fleiss' κ, Krippendorff's α (ordinal), ICC(2,1),
    within-±1 agreement and the judges' majority vote (Appendix 14, Tables 10-11)."""
    from rich.table import Table

    from radjepa_cli.evaluate.agreement_study import AgreementConfig, agreement_study
    from radjepa_cli.evaluate.paper import paper_numbers
    from radjepa_cli.io import write_json

    split = lambda s: tuple(x.strip() for x in s.split(",") if x.strip())  # noqa: E731
    cfg = AgreementConfig(str(ratings), id_column, split(humans), split(judges), threshold)
    try:
        res = agreement_study(cfg)
    except (FileNotFoundError, ValueError) as e:
        _fail(e)
    paper10 = {tuple(r["pair"]): r for r in paper_numbers()["table10"]["rows"]} if compare_paper else {}
    t = Table(title=f"Pairwise agreement · {ratings} (Acceptable = score >= {threshold})")
    for c in ("pair", "n", "QWK", "κ (Acceptable)", "within ±1") + (("paper QWK", "paper κ") if compare_paper else ()):
        t.add_column(c)
    for p in res["pairwise"]:
        extra = paper10.get(tuple(p["pair"]))
        t.add_row(" vs ".join(p["pair"]), str(p["n"]), f"{p['qwk']:.3f}", f"{p['kappa_acceptable']:.3f}",
                  f"{100 * p['within_1']:.1f}%",
                  *((f"{extra['qwk']:.2f}", f"{extra['kappa']:.2f}") if extra else (("—", "—") if compare_paper else ())))
    con = _console()
    con.print(t)
    m = res["multi_rater"]
    paper11 = paper_numbers()["table11"]["values"] if compare_paper else {}
    for key, label in (("krippendorff_alpha_ordinal", "Krippendorff's α (ordinal, score)"),
                       ("icc_2_1", "ICC(2,1) (score)"), ("fleiss_kappa_acceptable", "Fleiss' κ (Acceptable)"),
                       ("within_1_human_vs_master", "within ±1 (humans vs Master vote)")):
        if key in m and m[key] is not None:
            ref = f"   (paper: {paper11[key]:.3f})" if key in paper11 else ""
            con.print(f"{label}: {m[key]:.3f}{ref}")
    out_dir = Path(out) if out else ratings.parent
    write_json(out_dir / "agreement.json", res)
    con.print(f"[green]wrote[/] {out_dir / 'agreement.json'}")


def register(app: typer.Typer) -> None:
    app.add_typer(evaluate_app, name="evaluate")
