"""The paper's tables laid out from our outputs, optionally beside the published numbers with deltas.

Report tables (3, 4, 12, 13) come from predictions.jsonl files (scored with bootstrap CIs), classification tables
(6, 9) from probe results.json, segmentation (7) from segment results.json. Our rows carry their dataset
(e.g. "ours (synthetic)") so nobody mistakes phantom numbers for MIMIC-CXR ones; a delta row compares each of
our rows with the paper's row for the same encoder (or RadJEPA, which we reproduce) on the same dataset when the
paper has it, else on the paper's first dataset — and says which.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from . import paper as pp
from .baselines import baseline_groups, iu_xray_rows
from .inputs import classify_inputs, discover, load_results
from .render import Table

TABLES = (3, 4, 6, 7, 9, 12, 13)
REPORT_METRICS = ("rougeL", "bleu4", "rger", "f1_14_macro")
REPORT_HEADERS = ("ROUGE-L", "BLEU-4", "RGER", "Macro-F1-14")
VINDR_COLS = (("Lung Opacity", "LO"), ("Cardiomegaly", "CM"), ("Pleural Thickening", "PL-T"),
              ("Aortic Enlargement", "AE"), ("Pulmonary Fibrosis", "PF"), ("Pleural Effusion", "PE"))
SEG_TASKS = (("lungs", "Lungs"), ("lung-zones", "Lung zones"), ("ribs", "Ribs"))
HINT_REPORTS = ("no predictions.jsonl found: `radjepa train-report SHARDS --encoder ENC --llm LLM --out M`, then "
                "`radjepa generate-report SHARDS --model M --out DIR/predictions.jsonl` (or `radjepa quickstart`)")
HINT_PROBE = "no probe results.json found: `radjepa probe SHARDS --encoder ENC --labels vindr6|rsna --seeds 5 --out DIR`"
HINT_SEGMENT = ("no segment results.json found: `radjepa segment SHARDS --encoder ENC --decoder linear|vitdet|upernet "
                "--task lungs|lung-zones|ribs --out DIR`")


@dataclasses.dataclass
class TableConfig:
    table: int
    inputs: tuple[str, ...] = ()
    runs: str = "runs/quickstart"
    compare_paper: bool = False
    out: str | None = None
    bootstrap: int = 500
    seed: int = 0
    uncertain_as: str = "positive"
    radgraph_dir: str | None = None
    chexbert_dir: str | None = None
    green_dir: str | None = None
    baselines: bool = True      # report tables: random-other / most-frequent rows under each of ours (baselines.py)
    iu_xray: bool = False       # report tables: the baselines on the real IU-Xray findings (torchxrayvision data)


# ---- cell formatting -------------------------------------------------------------------------------------------------
def ci_cell(m: dict | None, nd: int = 1) -> str:
    if not m:
        return "—"
    if m.get("median") is None:
        return f"{m['value']:.{nd}f}" if m.get("value") is not None else "—"
    return f"{m['median']:.{nd}f} [{m['ci_low']:.{nd}f}, {m['ci_high']:.{nd}f}]"


def ms_cell(mean: float | None, std: float | None = None, paren: bool = False, nd: int = 1) -> str:
    if mean is None:
        return "—"
    if std is None:
        return f"{mean:.{nd}f}"
    return f"{mean:.{nd}f} ({std:.{nd}f})" if paren else f"{mean:.{nd}f} ± {std:.{nd}f}"


def delta(ours: float | None, theirs: float | None, nd: int = 1) -> str:
    if ours is None or theirs is None:
        return "n/a"
    return f"{ours - theirs:+.{nd}f}"


def _center(m: dict | None) -> float | None:
    if not m:
        return None
    return m.get("median") if m.get("median") is not None else m.get("value")


# ---- inputs ----------------------------------------------------------------------------------------------------------
def gather(cfg: TableConfig) -> dict[str, list[Path]]:
    return classify_inputs(cfg.inputs) if cfg.inputs else discover(cfg.runs)


def scored_groups(paths: list[Path], cfg: TableConfig, defaults: dict[str, tuple[str, str]] | None = None,
                  skipped: list[str] | None = None) -> list[dict]:
    """Score each predictions file (bootstrap CIs) and return its (dataset, encoder, llm) groups.
    `defaults`: {path: (encoder, dataset)} for rows that do not name them. Files found by searching a runs
    directory that cannot be scored (e.g. no reference texts) are listed in `skipped` instead of failing."""
    from .reports import ReportEvalConfig, evaluate_predictions

    groups = []
    for p in paths:
        enc, ds = (defaults or {}).get(str(p), (None, None))
        try:
            res = evaluate_predictions(ReportEvalConfig(str(p), cfg.bootstrap, cfg.seed, cfg.uncertain_as,
                                                        cfg.radgraph_dir, cfg.chexbert_dir, cfg.green_dir,
                                                        default_encoder=enc, default_dataset=ds))
        except ValueError as e:
            if skipped is None:
                raise
            skipped.append(f"skipped {e}")
            continue
        rcfg = ReportEvalConfig(str(p), cfg.bootstrap, cfg.seed, cfg.uncertain_as)
        rows = _rows_by_group(p, enc, ds) if cfg.baselines else {}
        for g in res["groups"]:
            groups.append({**g, "source_file": str(p)})
            key = (g["dataset"], g["encoder"], g["llm"])
            if key in rows and len(rows[key][1]) >= 2:
                groups += [{**b, "source_file": str(p)} for b in baseline_groups(rows[key][0], g, rows[key][1],
                                                                                 rcfg)]
    if cfg.iu_xray:
        iu = iu_xray_rows()
        rcfg = ReportEvalConfig("IU-Xray findings (torchxrayvision's NLMCXR_reports.tgz)", cfg.bootstrap, cfg.seed,
                                cfg.uncertain_as)
        groups += [{**b, "source_file": "torchxrayvision:data/NLMCXR_reports.tgz"}
                   for b in baseline_groups(iu, {"dataset": iu[0]["dataset"], "encoder": "none", "llm": ""},
                                            range(len(iu)), rcfg)]
    return groups


def _rows_by_group(path: Path, encoder: str | None, dataset: str | None) -> dict[tuple, tuple[list, list[int]]]:
    """{(dataset, encoder, llm): (rows, indices)} as evaluate_predictions groups them (same defaults)."""
    from .inputs import load_predictions
    from .reports import group_key

    rows = load_predictions(str(path))
    for r in rows:
        r.setdefault("encoder", encoder or Path(path).resolve().parent.name)
        if dataset:
            r.setdefault("dataset", dataset)
    out: dict[tuple, tuple[list, list[int]]] = {}
    for i, r in enumerate(rows):
        out.setdefault(group_key(r), (rows, []))[1].append(i)
    return out


def _reference_row(rows: list[dict], encoder: str, dataset: str, extra: dict | None = None) -> tuple[dict | None, str]:
    """The paper row ours is compared with, and a label saying which."""
    enc = pp.paper_encoder(encoder) or pp.OUR_METHOD
    cands = [r for r in rows if r["encoder"] == enc and all(r.get(k) == v for k, v in (extra or {}).items())]
    if not cands:
        return None, "no paper row"
    ds = pp.paper_dataset(dataset)
    same = [r for r in cands if r.get("dataset") == ds]
    row = same[0] if same else cands[0]
    where = (f" on {row['dataset']}" if "dataset" in row else "") + (f" with {row['vlm']}" if "vlm" in row else "")
    return row, f"vs paper {pp.display(enc)}{where}" + ("" if same or "dataset" not in row else f" (ours: {dataset})")


# ---- report tables (3, 4) --------------------------------------------------------------------------------------------
def _metric_keys(g: dict) -> list[str]:
    """Our metric per paper column: CheXbert F1 when its weights were given, else chexpert-rules."""
    return [("chexbert_f1_14_macro" if k == "f1_14_macro" and "chexbert_f1_14_macro" in g["metrics"] else k)
            for k in REPORT_METRICS]


def _metric_cells(g: dict) -> list[str]:
    out = []
    for k in _metric_keys(g):
        if k in g["metrics"]:
            out.append(ci_cell(g["metrics"][k]) + (" (CheXbert)" if k.startswith("chexbert") else ""))
        else:
            out.append(g.get("unavailable", {}).get(k, "n/a"))
    return out


def report_table(number: int, cfg: TableConfig, groups: list[dict]) -> Table:
    paper = pp.paper_numbers()[f"table{number}"]
    lead = ["Dataset", "Encoder"] if number == 3 else ["Dataset", "VLM / LM", "Encoder"]
    headers = list(REPORT_HEADERS)
    headers[3] = "Macro-F1-14 (paper: CheXbert; ours: chexpert-rules unless marked)"
    t = Table(f"Table {number}: " + paper["caption"], lead + ["Source"] + headers)
    if cfg.compare_paper:
        for r in paper["rows"]:
            lead_cells = [r["dataset"], pp.display(r["encoder"])] if number == 3 else \
                [r["dataset"], r["vlm"], r["encoder"]]
            t.add(lead_cells + ["paper"] + [ci_cell(r[m]) for m in REPORT_METRICS], "paper")
    for g in groups:
        ds = pp.paper_dataset(g["dataset"])
        lead_cells = [ds, g["encoder"]] if number == 3 else [ds, g["llm"] or "—", g["encoder"]]
        if g.get("baseline"):   # evaluate/baselines.py: same references, same bootstrap, no image seen
            t.add(lead_cells + [f"baseline ({g['dataset']}, n={g['n']})"] + _metric_cells(g), "baseline")
            continue
        t.add(lead_cells + [f"ours ({g['dataset']}, n={g['n']})"] + _metric_cells(g), "ours")
        if cfg.compare_paper:
            extra = {"vlm": g["llm"]} if number == 4 and g["llm"] in {r["vlm"] for r in paper["rows"]} else None
            ref, label = _reference_row(paper["rows"], g["encoder"], g["dataset"], extra)
            if ref is not None:
                cells = [delta(_center(g["metrics"].get(k)), ref[m]["median"])
                         for k, m in zip(_metric_keys(g), REPORT_METRICS)]
                t.add([""] * len(lead) + [f"Δ ours − paper ({label})"] + cells, "delta")
    if not groups:
        t.add([""] * (len(lead) - 1) + ["(none)", "ours: missing"] + [HINT_REPORTS] + ["—"] * 3, "missing")
    t.notes = ["Report metrics: median [95% CI] over bootstrap resamples of the test reports; "
               "BLEU-4 = sacrebleu (13a, cased, corpus), ROUGE-L = rouge-score rougeL F1 mean, x100.",
               "Our Macro-F1-14 uses the rule-based chexpert-rules labeller (not CheXbert) unless --chexbert-dir "
               f"is given; uncertain counted as {cfg.uncertain_as}.",
               "Phantom/synthetic rows show the pipeline works; they are not comparable with MIMIC-CXR/IU-Xray.",
               "Baseline rows never see an image: each reference paired with a random other report of the same set "
               "(seeded derangement), or the set's most frequent report for every image; same references and "
               "bootstrap as the row above them."]
    t.data = {"paper": paper["rows"] if cfg.compare_paper else [], "ours": groups}
    return t


def green_table(cfg: TableConfig, groups: list[dict]) -> Table:
    paper = pp.paper_numbers()["table12"]
    ours_ds = sorted({pp.paper_dataset(g["dataset"]) for g in groups} - {"MIMIC-CXR", "IU-Xray"})
    t = Table("Table 12: " + paper["caption"], ["Encoder", "Source", "MIMIC-CXR", "IU-Xray", *ours_ds])
    if cfg.compare_paper:
        for r in paper["rows"]:
            t.add([pp.display(r["encoder"]), "paper", f"{r['MIMIC-CXR']:.3f}", f"{r['IU-Xray']:.3f}",
                   *["—"] * len(ours_ds)], "paper")
    for g in groups:
        cols = ["MIMIC-CXR", "IU-Xray", *ours_ds]
        val = ci_cell(g["metrics"]["green"], 3) if "green" in g["metrics"] else g["unavailable"].get("green", "n/a")
        t.add([g["encoder"], f"ours ({g['dataset']})", *[val if c == pp.paper_dataset(g["dataset"]) else "—"
                                                        for c in cols]], "ours")
    if not groups:
        t.add(["(none)", "ours: missing", HINT_REPORTS, "—", *["—"] * len(ours_ds)], "missing")
    t.data = {"paper": paper["rows"] if cfg.compare_paper else [], "ours": groups}
    return t


def summary_table(cfg: TableConfig, groups: list[dict]) -> Table:
    """Table 13: composite = mean of the four Table-3 medians per dataset; mean CI width over datasets x metrics."""
    paper = pp.paper_numbers()
    t = Table("Table 13: " + paper["table13"]["caption"],
              ["Encoder", "Source", "Dataset", "Composite", "Mean CI width"])
    if cfg.compare_paper:
        for r in paper["table13"]["rows"]:
            for ds in ("MIMIC-CXR", "IU-Xray"):
                t.add([pp.display(r["encoder"]), "paper", ds, f"{r[ds]:.2f}", f"{r['mean_ci_width']:.2f}"], "paper")
    for g in groups:
        ms = [g["metrics"].get(k) for k in _metric_keys(g)]
        if all(ms):
            comp = f"{sum(_center(m) for m in ms) / 4:.2f}"
            widths = [m["ci_high"] - m["ci_low"] for m in ms if m.get("ci_low") is not None]
            width = f"{sum(widths) / len(widths):.2f}" if len(widths) == 4 else "n/a (no bootstrap)"
        else:
            missing = [h for h, m in zip(REPORT_HEADERS, ms) if not m]
            comp = width = f"n/a ({', '.join(missing)} unavailable)"
        t.add([g["encoder"], "ours", pp.paper_dataset(g["dataset"]), comp, width], "ours")
    if not groups:
        t.add(["(none)", "ours: missing", HINT_REPORTS, "—", "—"], "missing")
    t.data = {"paper": paper["table13"]["rows"] if cfg.compare_paper else [], "ours": groups}
    return t


# ---- probe tables (6, 9) ---------------------------------------------------------------------------------------------
def _probe_rows(paths: list[Path]) -> list[dict]:
    return [load_results(p) for p in paths]


def _probe_source(res: dict) -> tuple[str, str]:
    """(Source cell's lead, row kind): `probe --baselines` results (random-init twin, raw pixels) are labelled."""
    if res.get("baseline"):
        return f"baseline: {res['baseline']}", "baseline"
    return "ours", "ours"


def probe_table(cfg: TableConfig, results: list[dict]) -> Table:
    paper = pp.paper_numbers()["table6"]
    cols = ["Encoder", "Source"] + [a for _, a in VINDR_COLS] + ["Agg.", "RSNA AUPRC", "RSNA AUC"]
    t = Table("Table 6: " + paper["caption"], cols)
    if cfg.compare_paper:
        for r in paper["rows"]:
            t.add([r["encoder"], "paper"] + [ms_cell(r["vindr_auprc"][n]["mean"], r["vindr_auprc"][n]["std"])
                                             for n, _ in VINDR_COLS]
                  + [f"{r['vindr_agg_auprc']:.1f}", ms_cell(r["rsna_auprc"]["mean"], r["rsna_auprc"]["std"]),
                     ms_cell(r["rsna_auroc"]["mean"], r["rsna_auroc"]["std"])], "paper")
    for res in results:
        pc, agg = res["per_class"], res["aggregate"]
        rsna = res["label_set"] == "rsna" or set(pc) == {"Pneumonia"}
        vindr = [ms_cell(100 * pc[n]["auprc_mean"], 100 * pc[n]["auprc_std"]) if n in pc else "—"
                 for n, _ in VINDR_COLS]
        if rsna:
            cells = ["—"] * 7 + [ms_cell(100 * agg["auprc_mean"], 100 * agg["auprc_std"]),
                                 ms_cell(100 * agg["auroc_mean"], 100 * agg["auroc_std"])]
        else:
            cells = vindr + [f"{100 * agg['auprc_mean']:.1f}", "—", "—"]
        ds = res.get("dataset", "?")
        who, kind = _probe_source(res)
        t.add([res["encoder"], f"{who} ({ds}; labels {res['label_set']}, {len(pc)} classes; "
                               f"{res.get('head', 'linear')} head)"] + cells, kind)
        if cfg.compare_paper and kind == "ours":
            ref, label = _reference_row(paper["rows"], res["encoder"], ds)
            if ref is not None:
                if rsna:
                    d = ["n/a"] * 7 + [delta(100 * agg["auprc_mean"], ref["rsna_auprc"]["mean"]),
                                       delta(100 * agg["auroc_mean"], ref["rsna_auroc"]["mean"])]
                else:
                    d = [delta(100 * pc[n]["auprc_mean"], ref["vindr_auprc"][n]["mean"]) if n in pc else "n/a"
                         for n, _ in VINDR_COLS] + [delta(100 * agg["auprc_mean"], ref["vindr_agg_auprc"]),
                                                    "n/a", "n/a"]
                t.add(["", f"Δ ours − paper ({label})"] + d, "delta")
    if not results:
        t.add(["(none)", "ours: missing", HINT_PROBE] + ["—"] * 8, "missing")
    t.notes = ["AUPRC x100, mean ± std over seeds. Agg. = mean AUPRC over the result's own label set "
               "(the paper: the six VinDr-CXR classes)."]
    t.data = {"paper": paper["rows"] if cfg.compare_paper else [], "ours": results}
    return t


def auroc_table(cfg: TableConfig, results: list[dict]) -> Table:
    paper = pp.paper_numbers()["table9"]
    other = sorted({r.get("dataset", "?") for r in results if r["label_set"] not in ("vindr6", "rsna")})
    t = Table("Table 9: " + paper["caption"], ["Encoder", "Source", "VinDr-CXR", "RSNA", *other])
    if cfg.compare_paper:
        for r in paper["rows"]:
            t.add([r["encoder"], "paper", ms_cell(r["vindr_auroc"]["mean"], r["vindr_auroc"]["std"], nd=2),
                   ms_cell(r["rsna_auroc"]["mean"], r["rsna_auroc"]["std"], nd=2), *["—"] * len(other)], "paper")
    for res in results:
        agg = res["aggregate"]
        cell = ms_cell(100 * agg["auroc_mean"], 100 * agg["auroc_std"], nd=2)
        col = "VinDr-CXR" if res["label_set"] == "vindr6" else "RSNA" if res["label_set"] == "rsna" else \
            res.get("dataset", "?")
        who, kind = _probe_source(res)
        t.add([res["encoder"], f"{who} ({res.get('dataset', '?')}, labels {res['label_set']}; "
                               f"{res.get('head', 'linear')} head)",
               *[cell if c == col else "—" for c in ["VinDr-CXR", "RSNA", *other]]], kind)
    if not results:
        t.add(["(none)", "ours: missing", HINT_PROBE, "—", *["—"] * len(other)], "missing")
    t.data = {"paper": paper["rows"] if cfg.compare_paper else [], "ours": results}
    return t


# ---- segmentation (7) ------------------------------------------------------------------------------------------------
def segment_table(cfg: TableConfig, results: list[dict]) -> Table:
    paper = pp.paper_numbers()["table7"]
    t = Table("Table 7: " + paper["caption"], ["Encoder", "Decoder", "Source", *[h for _, h in SEG_TASKS]])
    if cfg.compare_paper:
        for r in paper["rows"]:
            t.add([r["encoder"], r["decoder"], "paper", *[ms_cell(r[k]["mean"], r[k]["std"], paren=True)
                                                          for k, _ in SEG_TASKS]], "paper")
    merged: dict[tuple[str, str, str], dict[str, dict]] = {}
    for res in results:
        merged.setdefault((res["encoder"], res["decoder"], res.get("config", {}).get("dataset", "") or
                           res.get("dataset", "")), {})[res["task"]] = res["mean_dice"]
    for (enc, dec, ds), tasks in merged.items():
        cells = [ms_cell(100 * tasks[k]["mean"], 100 * tasks[k]["std"], paren=True) if k in tasks else
                 f"n/a (run: radjepa segment … --decoder {dec} --task {k})" for k, _ in SEG_TASKS]
        t.add([enc, dec, f"ours{f' ({ds})' if ds else ''}", *cells], "ours")
        if cfg.compare_paper:
            ref, label = _reference_row(paper["rows"], enc, ds, {"decoder": dec})
            if ref is not None:
                t.add(["", "", f"Δ ours − paper ({label}, {dec})",
                       *[delta(100 * tasks[k]["mean"], ref[k]["mean"]) if k in tasks else "n/a"
                         for k, _ in SEG_TASKS]], "delta")
    if not results:
        t.add(["(none)", "—", "ours: missing", HINT_SEGMENT, "—", "—"], "missing")
    t.notes = ["Dice x100, mean (std) over seeds."]
    t.data = {"paper": paper["rows"] if cfg.compare_paper else [], "ours": results}
    return t


def build_table(cfg: TableConfig, protocol=None) -> tuple[Table, dict[str, Any]]:
    """The table and the inputs it used ({'predictions': [...], ...}). `protocol` (a ProtocolConfig) first runs
    train-report → generate-report for each of its encoders and lays out those predictions."""
    if cfg.table not in TABLES:
        raise ValueError(f"table {cfg.table} is not one we lay out; choose one of {TABLES} "
                         "(Table 5: `radjepa evaluate bias`, Tables 10-11: `radjepa evaluate agreement`)")
    defaults = None
    if protocol is not None:
        if cfg.table not in (3, 4, 12, 13):
            raise ValueError(f"--config runs the report protocol; it feeds tables 3, 4, 12, 13, not {cfg.table}")
        from .protocol import run_protocol

        done = run_protocol(protocol)
        found = {"predictions": [p for _, p in done], "probe": [], "segment": []}
        defaults = {str(p): (enc, protocol.dataset) for enc, p in done}
    else:
        found = gather(cfg)
    if cfg.table in (3, 4, 12, 13):
        skipped: list[str] | None = [] if not cfg.inputs and protocol is None else None
        groups = scored_groups(found["predictions"], cfg, defaults, skipped)
        builder = {3: lambda: report_table(3, cfg, groups), 4: lambda: report_table(4, cfg, groups),
                   12: lambda: green_table(cfg, groups), 13: lambda: summary_table(cfg, groups)}[cfg.table]
        table = builder()
        table.notes += skipped or []
        return table, {"predictions": [str(p) for p in found["predictions"]], "groups": groups,
                       "skipped": skipped or []}
    if cfg.table in (6, 9):
        results = _probe_rows(found["probe"])
        return (probe_table if cfg.table == 6 else auroc_table)(cfg, results), \
            {"probe": [str(p) for p in found["probe"]]}
    results = _probe_rows(found["segment"])
    return segment_table(cfg, results), {"segment": [str(p) for p in found["segment"]]}
