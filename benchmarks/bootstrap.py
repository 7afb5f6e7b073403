"""Bootstrap CIs for report metrics: per-report statistics once + re-weighted sums, vs naive recomputation.

    python benchmarks/bootstrap.py [--n 3000] [--resamples 500] [--naive 3] [--out benchmarks/out]

Data: real IU-Xray findings + impressions (torchxrayvision package data), each paired with another report as the
"generation". Metrics: sacrebleu BLEU-4, coco BLEU-4, ROUGE-L, chexpert-rules F1-14 and F1-5 (macro and micro).
The naive path recomputes every metric from the resampled texts (sacrebleu, rouge-score, the labeller); it is
timed on --naive resamples and extrapolated to --resamples.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--naive", type=int, default=3, help="naive resamples actually run (then extrapolated)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from radjepa_cli.metrics import bootstrap as bs
    from radjepa_cli.metrics.iu_xray_mesh import load_reports

    texts = [f"{r.findings} {r.impression}".strip() for r in load_reports() if r.findings]
    refs = [texts[i % len(texts)] for i in range(args.n)]
    gens = [texts[(i * 7 + 3) % len(texts)] for i in range(args.n)]

    # Wall time and this process's CPU time: on a shared machine (load > cores) the CPU time is what the same
    # work takes on an uncontended core.
    t0, c0 = time.perf_counter(), time.process_time()
    stats = bs.compute_report_stats(gens, refs)
    t_stats, c_stats = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    ci = bs.bootstrap(stats, args.resamples, seed=0)
    t_boot, c_boot = time.perf_counter() - t0, time.process_time() - c0

    import sacrebleu
    from rouge_score import rouge_scorer
    from sklearn.metrics import f1_score

    from radjepa_cli.data.labels import CHEXPERT_5, CHEXPERT_14
    from radjepa_cli.metrics import chexpert_rules, f1 as f1m

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = np.random.default_rng(0)
    import logging

    logging.getLogger("sacrebleu").setLevel(logging.ERROR)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.naive):
        idx = rng.integers(0, args.n, args.n)
        g, r = [gens[i] for i in idx], [refs[i] for i in idx]
        sacrebleu.corpus_bleu(g, [r])
        np.mean([scorer.score(b, a)["rougeL"].fmeasure for a, b in zip(g, r)])
        lg = [chexpert_rules.label_report(x) for x in g]  # no caching: what a per-resample loop would do
        lr = [chexpert_rules.label_report(x) for x in r]
        for names in (CHEXPERT_14, CHEXPERT_5):
            yg, yr = f1m.positive_matrix(lg, names, "positive"), f1m.positive_matrix(lr, names, "positive")
            f1_score(yr, yg, average="macro", zero_division=0)
            f1_score(yr, yg, average="micro", zero_division=0)
    t_naive = (time.perf_counter() - t0) / args.naive * args.resamples
    c_naive = (time.process_time() - c0) / args.naive * args.resamples
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    result = {
        "reports": args.n, "resamples": args.resamples, "cpu_count": os.cpu_count(),
        "torch_threads_env": os.environ.get("OMP_NUM_THREADS"), "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_1min": load,
        "wall_seconds": {"per_report_stats": round(t_stats, 2), "resampling": round(t_boot, 3),
                         "ours_total": round(t_stats + t_boot, 2),
                         f"naive_extrapolated_from_{args.naive}": round(t_naive, 1)},
        "cpu_seconds": {"per_report_stats": round(c_stats, 2), "resampling": round(c_boot, 3),
                        "ours_total": round(c_stats + c_boot, 2),
                        f"naive_extrapolated_from_{args.naive}": round(c_naive, 1)},
        "speedup": round(c_naive / (c_stats + c_boot), 1),
        "ci": {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in ci.items()},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        from radjepa_cli.io import write_json

        write_json(args.out / "bootstrap.json", result)


if __name__ == "__main__":
    main()
