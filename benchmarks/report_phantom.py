"""Report quality on phantom shards: generated findings vs the phantom's ground truth and a trivial baseline.

    radjepa generate-report SHARDS --model MODEL --out pred.jsonl           # the test split by default
    python benchmarks/report_phantom.py pred.jsonl --shards SHARDS [--out benchmarks/results/report_phantom.json]

- Label agreement: the CheXpert-style rule labeller (radjepa_cli.metrics.chexpert_rules) reads each generated
  report; its labels are compared with the phantom's ground-truth labels (the image's truth, not a labelled
  reference text), macro-F1 over the phantom findings the labeller knows (uncertain → positive).
  `labeller_ceiling` is the same F1 for the reference reports themselves (what a perfect writer would get).
- Lexical: BLEU-4 (sacrebleu conventions, 0-100) and ROUGE-L (rouge-score rougeL F1, mean), vs the references.
- Baseline: the most frequent Findings text of the training split, written for every image.
"""
from __future__ import annotations

import argparse
import collections
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def label_f1(generated_texts, truths, names):
    from radjepa_cli.metrics.chexpert_rules import label_reports
    from radjepa_cli.metrics.f1 import f1_counts, f1_from_counts

    counts = f1_counts(label_reports(generated_texts), truths, names, uncertain_as="positive").sum(0)
    f = f1_from_counts(counts)
    return float(f["macro"]), {n: round(float(v), 3) for n, v in zip(names, f["per_label"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("predictions")
    ap.add_argument("--shards", required=True, help="The shards the model was trained on (for the baseline).")
    ap.add_argument("--out", default="benchmarks/results/report_phantom.json")
    args = ap.parse_args()

    from radjepa_cli.data.labels import CHEXPERT_14, PHANTOM
    from radjepa_cli.data.loader import iter_records
    from radjepa_cli.metrics.lexical import corpus_bleu, rouge_l

    rows = [json.loads(line) for line in Path(args.predictions).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("reference") and r.get("reference_labels")]
    if not rows:
        raise SystemExit(f"{args.predictions}: no rows with reference + reference_labels (generate on shards)")
    names = [n for n in PHANTOM if n in CHEXPERT_14]
    truths = [r["reference_labels"] for r in rows]
    refs = [r["reference"] for r in rows]
    gens = [r["generated"] for r in rows]
    train_texts = [r.findings for r in iter_records(args.shards, "train", with_masks=False) if r.findings]
    most_frequent, freq = collections.Counter(train_texts).most_common(1)[0]
    base = [most_frequent] * len(rows)

    results = {}
    for name, hyp in (("model", gens), ("most_frequent_report", base), ("labeller_ceiling", refs)):
        macro, per_label = label_f1(hyp, truths, names)
        results[name] = {"macro_f1": round(macro, 4), "per_label_f1": per_label,
                         "bleu4": round(corpus_bleu(hyp, refs), 2), "rouge_l": round(float(np.mean(rouge_l(hyp, refs))), 4)}
    out = {
        "benchmark": "report generation on phantom shards", "predictions": args.predictions, "n": len(rows),
        "labels": names, "labeller": "chexpert-rules (uncertain → positive) vs phantom ground truth",
        "bleu": "sacrebleu corpus BLEU-4 (13a, 0-100)", "rouge": "rouge-score rougeL F1, mean",
        "most_frequent_report": {"text": most_frequent, "train_count": freq, "train_reports": len(train_texts)},
        "distinct_generated": len(set(gens)), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'':22s} {'macro-F1':>9s} {'BLEU-4':>7s} {'ROUGE-L':>8s}")
    for name in ("model", "most_frequent_report", "labeller_ceiling"):
        r = results[name]
        print(f"{name:22s} {r['macro_f1']:9.3f} {r['bleu4']:7.2f} {r['rouge_l']:8.3f}")
    print(f"({len(rows)} test images, {len(set(gens))} distinct generated reports) → {args.out}")


if __name__ == "__main__":
    main()
