"""Raw-pixel baseline on the phantom benchmark: what a pretrained encoder has to beat.

Renders phantoms, downsamples each to 32x32 (area mean), standardises the pixels and fits one logistic regression
per finding (sklearn; C picked on a held-out fifth of the training set by AUPRC). Reports AUPRC / AUROC per
finding on a disjoint test set (different phantom indices) and the macro-AUPRC over findings with enough positives.

    python benchmarks/phantom_baseline.py --n-train 1500 --n-test 500 --out benchmarks/results/phantom_baseline.json

If the macro-AUPRC gets near saturation (> ~0.85) the benchmark is too easy: raise PhantomConfig.difficulty.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from radjepa_cli.data.labels import PHANTOM  # noqa: E402
from radjepa_cli.data.phantom import PhantomConfig, generate  # noqa: E402
from radjepa_cli.io import write_json  # noqa: E402


def _features(args: tuple[int, int, dict, int]) -> tuple[np.ndarray, list[int]]:
    start, stop, cfg_kwargs, res = args
    cfg = PhantomConfig(**cfg_kwargs)
    feats, labels = [], []
    for i in range(start, stop):
        rec = generate(i, cfg)
        k = cfg.size // res
        img = rec.image[: k * res, : k * res].reshape(res, k, res, k).mean(axis=(1, 3))
        feats.append(img.ravel())
        labels.append([rec.labels[n] for n in PHANTOM])
    return np.asarray(feats, np.float32), labels


def render(start: int, n: int, cfg_kwargs: dict, res: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    chunks = [(a, min(a + 100, start + n), cfg_kwargs, res) for a in range(start, start + n, 100)]
    with ProcessPoolExecutor(workers) as ex:
        parts = list(ex.map(_features, chunks))
    return np.concatenate([p[0] for p in parts]), np.concatenate([np.asarray(p[1]) for p in parts])


def fit_probe(xtr, ytr, xte, yte, cs=(0.003, 0.03, 0.3), seed: int = 0) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(seed)
    val = rng.random(len(xtr)) < 0.2
    best_c, best = cs[0], -1.0
    for c in cs:  # model selection on the held-out fifth of the training set
        if ytr[~val].sum() == 0 or ytr[val].sum() == 0:
            break
        m = LogisticRegression(C=c, max_iter=3000).fit(xtr[~val], ytr[~val])
        ap = average_precision_score(ytr[val], m.predict_proba(xtr[val])[:, 1])
        if ap > best:
            best_c, best = c, ap
    m = LogisticRegression(C=best_c, max_iter=3000).fit(xtr, ytr)
    p = m.predict_proba(xte)[:, 1]
    return {"auprc": float(average_precision_score(yte, p)), "auroc": float(roc_auc_score(yte, p)), "C": best_c}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-train", type=int, default=1500)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--res", type=int, default=32, help="downsampled side (pixels) fed to the probe")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--difficulty", type=float, default=None, help="PhantomConfig.difficulty (default: its default)")
    ap.add_argument("--min-pos", type=int, default=15, help="findings with fewer test (or train) positives are skipped")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/phantom_baseline.json"))
    ap.add_argument("--cache", type=Path, default=None, help="npz of rendered features: reused when it matches")
    a = ap.parse_args(argv)

    cfg_kwargs = {"size": a.size, "seed": a.seed}
    if a.difficulty is not None:
        cfg_kwargs["difficulty"] = a.difficulty
    cfg = PhantomConfig(**cfg_kwargs)
    t0 = time.time()
    key = json.dumps([cfg_kwargs, a.n_train, a.n_test, a.res, PHANTOM], sort_keys=True)
    if a.cache and a.cache.exists() and str(np.load(a.cache)["key"]) == key:
        z = np.load(a.cache)
        xtr, ytr, xte, yte = z["xtr"], z["ytr"], z["xte"], z["yte"]
    else:
        xtr, ytr = render(0, a.n_train, cfg_kwargs, a.res, a.workers)
        xte, yte = render(a.n_train, a.n_test, cfg_kwargs, a.res, a.workers)  # disjoint phantom indices
        if a.cache:
            a.cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(a.cache, key=key, xtr=xtr, ytr=ytr, xte=xte, yte=yte)
    t_render = time.time() - t0
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd

    per: dict[str, dict] = {}
    for j, name in enumerate(PHANTOM):
        pos_tr, pos_te = int(ytr[:, j].sum()), int(yte[:, j].sum())
        row = {"prevalence_train": pos_tr / len(ytr), "prevalence_test": pos_te / len(yte),
               "positives_train": pos_tr, "positives_test": pos_te}
        if min(pos_tr, pos_te) >= a.min_pos and min(len(ytr) - pos_tr, len(yte) - pos_te) >= a.min_pos:
            row.update(fit_probe(xtr, ytr[:, j], xte, yte[:, j], seed=a.seed))
        per[name] = row
    scored = [n for n, r in per.items() if "auprc" in r and n != "No Finding"]
    macro = float(np.mean([per[n]["auprc"] for n in scored]))
    macro_auroc = float(np.mean([per[n]["auroc"] for n in scored]))
    chance = float(np.mean([per[n]["prevalence_test"] for n in scored]))

    print(f"raw-pixel linear probe ({a.res}x{a.res}), train {a.n_train} / test {a.n_test}, "
          f"difficulty {cfg.difficulty}, rendered in {t_render:.0f}s")
    print(f"{'finding':28s} {'prev':>6s} {'AUPRC':>7s} {'AUROC':>7s}")
    for n, r in per.items():
        cells = f"{r['auprc']:7.3f} {r['auroc']:7.3f}" if "auprc" in r else f"{'-':>7s} {'-':>7s}"
        print(f"{n:28s} {r['prevalence_test']:6.3f} {cells}")
    print(f"macro-AUPRC over {len(scored)} findings: {macro:.3f} (chance {chance:.3f}); macro-AUROC {macro_auroc:.3f}")

    result = {
        "benchmark": "phantom_raw_pixel_linear_probe", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
        "command": "python benchmarks/phantom_baseline.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": {**vars(a), "out": str(a.out), "cache": str(a.cache), "phantom": {"difficulty": cfg.difficulty, "size": cfg.size,
                                                              "seed": cfg.seed, "prevalence": cfg.prevalence,
                                                              "cooccurrence": cfg.cooccurrence}},
        "macro_auprc": macro, "macro_auroc": macro_auroc, "chance_macro_auprc": chance, "scored_findings": scored,
        "per_finding": per, "render_seconds": t_render,
    }
    write_json(a.out, result)
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
