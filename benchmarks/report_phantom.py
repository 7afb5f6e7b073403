"""Report generation on phantom shards, per encoder: does the report carry what a linear probe can read?

    radjepa prepare-data synthetic --n 2000 --size 64 --out shards
    python benchmarks/report_phantom.py --shards shards [--encoder pixels:32 --encoder random:vit_tiny:64/16
        --encoder RUN_DIR] [--stage1-epochs 1 --epochs 1] [--limit 200] [--bootstrap 500]
        [--out benchmarks/results/report_phantom.json]

For each encoder it trains a report model (train-report, the tiny LM unless --llm), then runs the diagnostics
(radjepa_cli/report/diagnostics.py) and scores on the first --limit test images:
- probe macro-F1: ridge probe on the encoder's tokens (strength and thresholds chosen on val), the best view by val;
- report macro-F1: chexpert-rules labels of the generated text vs the phantom's ground truth, same labels and F1;
- label transfer = report / probe; distinct reports; the real-vs-shuffled image val loss and the attention mass;
- BLEU-4 (sacrebleu, 0-100) and ROUGE-L (rouge-score rougeL F1 x100) vs the reference reports;
- baselines on the same images: the most frequent training report for every image, and a random training
  report per image (seeded). Every metric has a bootstrap median and 95% CI (seeded resamples of the test images).
"""
from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's radjepa_cli, not an installed one

DEFAULT_ENCODERS = ("pixels:32", "random:vit_tiny:64/16")


def scores(texts, refs, truths, names, n_boot: int, seed: int) -> dict:
    """Point values and bootstrap [median, 2.5%, 97.5%] of label macro-F1, BLEU-4 and ROUGE-L."""
    from radjepa_cli.metrics.bootstrap import bootstrap, compute_report_stats
    from radjepa_cli.metrics.chexpert_rules import label_reports
    from radjepa_cli.report.probe import label_matrix, masked_f1

    gen_labels = label_reports(texts)
    stats = compute_report_stats(texts, refs, gen_labels=gen_labels, ref_labels=truths)
    lex = bootstrap(stats, n_boot, seed)
    pred, _ = label_matrix(gen_labels, names)
    y, known = label_matrix(truths, names)
    f1 = [masked_f1(pred > 0.5, y, known)[0]]
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):  # the same resampling protocol as metrics/bootstrap.py, on the ground-truth F1
        i = rng.integers(0, len(texts), len(texts))
        f1.append(masked_f1(pred[i] > 0.5, y[i], known[i])[0])
    out = {"distinct": len(set(texts))}
    for key, vals in (("label_macro_f1", np.array(f1)),):
        lo, med, hi = np.percentile(vals[1:], [2.5, 50, 97.5]) if n_boot else (None, None, None)
        out[key] = {"value": round(float(vals[0]), 4), "median": med, "ci": [lo, hi] if n_boot else None}
    for key, name in (("bleu4", "bleu4"), ("rouge_l", "rougeL")):
        m = lex[name]
        out[key] = {"value": round(m["value"], 3), "median": m["median"],
                    "ci": [m["ci_low"], m["ci_high"]] if n_boot else None}
    return out


def run_encoder(encoder: str, args, work: Path) -> dict:
    from radjepa_cli.report.diagnostics import DiagnoseConfig, diagnose
    from radjepa_cli.report.train import ReportTrainConfig, train_report

    safe = encoder.replace(":", "_").replace("/", "_")
    model = work / f"model-{safe}"
    t0 = time.time()
    cfg = ReportTrainConfig(shards=args.shards, encoder=encoder, llm=args.llm, out=str(model),
                            stage1_epochs=args.stage1_epochs, epochs=args.epochs, token_norm=args.token_norm,
                            aux_label_loss=args.aux_label_loss, max_steps=args.max_steps, seed=args.seed)
    train_report(cfg, show_progress=False)
    train_s = time.time() - t0
    d = diagnose(DiagnoseConfig(model=str(model), shards=args.shards, limit=args.limit,
                                repetition_penalty=args.repetition_penalty, out=str(model / "diagnostics.json")))
    return {"encoder": encoder, "train_seconds": round(train_s, 1), "diagnostics": d}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--encoder", action="append", help=f"repeatable; default {', '.join(DEFAULT_ENCODERS)} "
                                                       "(add a run dir for our pretrained encoder)")
    ap.add_argument("--llm", default="tiny")
    ap.add_argument("--stage1-epochs", type=float, default=1.0)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--token-norm", default="none")
    ap.add_argument("--aux-label-loss", type=float, default=0.0)
    ap.add_argument("--repetition-penalty", type=float, default=None)
    ap.add_argument("--limit", type=int, default=200, help="test images generated and scored")
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="where report models go (default: beside --out)")
    ap.add_argument("--out", default="benchmarks/results/report_phantom.json")
    args = ap.parse_args()

    from radjepa_cli.data.loader import iter_records

    out = Path(args.out)
    work = Path(args.work) if args.work else out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    train_texts = [r.findings for r in iter_records(args.shards, "train", with_masks=False) if r.findings]
    most_frequent, freq = collections.Counter(train_texts).most_common(1)[0]
    results = []
    for enc in args.encoder or DEFAULT_ENCODERS:
        r = run_encoder(enc, args, work)
        d = r["diagnostics"]
        preds = d["predictions"]
        refs = [p["reference"] for p in preds]
        truths = [p["reference_labels"] for p in preds]
        rng = np.random.default_rng(args.seed)
        systems = {"model": [p["generated"] for p in preds], "most_frequent_report": [most_frequent] * len(preds),
                   "random_report": [train_texts[i] for i in rng.integers(0, len(train_texts), len(preds))]}
        r["scores"] = {k: scores(v, refs, truths, d["labels"], args.bootstrap, args.seed) for k, v in systems.items()}
        r["probe_macro_f1"], r["report_macro_f1"] = d["probe_macro_f1"], d["report"]["macro_f1"]
        r["label_transfer"], r["summary"] = d["label_transfer"], d["summary"]
        d.pop("predictions")  # kept in the model dir's diagnostics.json
        results.append(r)
        print(f"{enc}: {d['summary']}", flush=True)
    doc = {"benchmark": "report generation on phantom shards, per encoder (issue 14)", "shards": args.shards,
           "recipe": {k: getattr(args, k) for k in ("llm", "stage1_epochs", "epochs", "max_steps", "token_norm",
                                                    "aux_label_loss", "repetition_penalty", "limit", "bootstrap")},
           "most_frequent_report": {"text": most_frequent, "train_count": freq, "train_reports": len(train_texts)},
           "labeller": "chexpert-rules (uncertain → positive) vs the phantom's ground-truth labels",
           "bleu": "sacrebleu corpus BLEU-4 (13a, 0-100)", "rouge": "rouge-score rougeL F1, mean x100",
           "ci": "bootstrap median and 2.5/97.5 percentiles over seeded resamples of the test images",
           "device": f"CPU ({platform.processor() or platform.machine()}), contended",
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "results": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\n{'encoder':24s} {'system':22s} {'F1':>6s} {'BLEU-4':>16s} {'ROUGE-L':>16s} distinct")
    for r in results:
        for name, s in r["scores"].items():
            def fmt(m, scale=1.0):
                ci = f" [{scale * m['ci'][0]:.1f},{scale * m['ci'][1]:.1f}]" if m["ci"] else ""
                return f"{scale * m['value']:.1f}{ci}"
            print(f"{r['encoder']:24s} {name:22s} {s['label_macro_f1']['value']:6.3f} {fmt(s['bleu4']):>16s} "
                  f"{fmt(s['rouge_l']):>16s} {s['distinct']}")
        print(f"{'':24s} probe F1 {r['probe_macro_f1']:.3f}, label transfer {r['label_transfer']}")
    print(f"→ {out}")


if __name__ == "__main__":
    main()
