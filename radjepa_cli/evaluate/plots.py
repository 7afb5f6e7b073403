"""Figures like the paper's: Figure 6 (medians with 95% CIs, one row per dataset, one column per metric) and
Figure 5 (per-metric ranking, marker area ~ log parameter count, colour = model family); and the linear probes'
per-finding comparison (AUPRC with seed spread, one bar per encoder, the prevalence line)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io import atomic_write_bytes
from . import paper as pp

METRICS = (("rougeL", "ROUGE-L"), ("bleu4", "BLEU-4"), ("rger", "RGER"), ("f1_14_macro", "Macro-F1-14"))
FAMILY_COLOURS = {"image-text": "tab:blue", "image-only": "tab:green", "jepa": "tab:purple", "ours": "tab:red",
                  "baseline": "tab:gray"}


def _entries(groups: list[dict], paper_rows: list[dict]) -> list[dict]:
    """Uniform points: {dataset, name, family, params_m, metric: (median, lo, hi) | None}."""
    enc_info = pp.paper_numbers()["encoders"]
    out = []
    for r in paper_rows:
        info = enc_info.get(r["encoder"], {})
        out.append({"dataset": r["dataset"], "name": pp.display(r["encoder"]), "family": info.get("family", "other"),
                    "params_m": info.get("params_m"),
                    **{m: (r[m]["median"], r[m]["ci_low"], r[m]["ci_high"]) for m, _ in METRICS}})
    for g in groups:
        base = bool(g.get("baseline"))   # evaluate/baselines.py rows: named as such, drawn grey
        e = {"dataset": pp.paper_dataset(g["dataset"]), "name": g["encoder"] if base else f"ours: {g['encoder']}",
             "family": "baseline" if base else "ours", "params_m": None}
        for m, _ in METRICS:
            v = g["metrics"].get(m)
            if v is None:
                e[m] = None
            elif v.get("median") is None:
                e[m] = (v["value"], v["value"], v["value"])
            else:
                e[m] = (v["median"], v["ci_low"], v["ci_high"])
        out.append(e)
    return out


def _save(fig, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def forest_plot(groups: list[dict], paper_rows: list[dict], path: str | Path) -> Path:
    """Figure-6 style: rows = datasets, columns = metrics; each encoder a median dot with its 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = _entries(groups, paper_rows)
    datasets = list(dict.fromkeys(e["dataset"] for e in entries)) or ["(no data)"]
    fig, axes = plt.subplots(len(datasets), len(METRICS), figsize=(3.4 * len(METRICS), 0.35 * 14 * len(datasets)),
                             squeeze=False)
    for i, ds in enumerate(datasets):
        rows = [e for e in entries if e["dataset"] == ds]
        for j, (m, label) in enumerate(METRICS):
            ax = axes[i][j]
            pts = [(e["name"], e[m], e["family"]) for e in rows]
            for y, (name, v, fam) in enumerate(pts):
                if v is None:
                    ax.text(0.02, y, "n/a", va="center", fontsize=7, transform=ax.get_yaxis_transform(),
                            color="grey")
                    continue
                med, lo, hi = v
                c = FAMILY_COLOURS.get(fam, "black")
                ax.plot([lo, hi], [y, y], color=c, lw=1.5)
                ax.plot([med], [y], "o", color=c, ms=4)
            ax.set_yticks(range(len(pts)))
            ax.set_yticklabels([p[0] for p in pts] if j == 0 else [], fontsize=7)
            ax.set_ylim(-0.7, len(pts) - 0.3)
            ax.invert_yaxis()
            ax.grid(axis="x", alpha=0.3)
            ax.set_title(f"{ds} · {label}", fontsize=9)
    fig.suptitle("Report generation: medians with 95% bootstrap CIs (paper and ours)", fontsize=10)
    return _save(fig, Path(path))


def ranking_plot(groups: list[dict], paper_rows: list[dict], path: str | Path) -> Path:
    """Figure-5 style: per dataset and metric, encoders sorted best → worst; marker area ~ log10(params)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = _entries(groups, paper_rows)
    datasets = list(dict.fromkeys(e["dataset"] for e in entries)) or ["(no data)"]
    fig, axes = plt.subplots(len(datasets), len(METRICS), figsize=(3.4 * len(METRICS), 0.3 * 14 * len(datasets)),
                             squeeze=False)
    for i, ds in enumerate(datasets):
        for j, (m, label) in enumerate(METRICS):
            ax = axes[i][j]
            pts = sorted(((e[m][0], e) for e in entries if e["dataset"] == ds and e[m] is not None),
                         key=lambda p: -p[0])
            for y, (v, e) in enumerate(pts):
                size = 20 + 25 * math.log10(e["params_m"]) if e["params_m"] else 40
                ax.scatter([v], [y], s=size, color=FAMILY_COLOURS.get(e["family"], "black"), alpha=0.8,
                           marker="o" if e["params_m"] else "D")
            ax.set_yticks(range(len(pts)))
            ax.set_yticklabels([e["name"] for _, e in pts], fontsize=7)
            ax.invert_yaxis()
            ax.grid(axis="x", alpha=0.3)
            ax.set_title(f"{ds} · {label}", fontsize=9)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=f) for f, c in FAMILY_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("Per-metric ranking (marker area ~ log parameter count; diamonds: size unknown)", fontsize=10)
    return _save(fig, Path(path))


def _probe_name(res: dict) -> str:
    """A short bar label: the run folder's name without 'probe-', else the encoder spec's last path part."""
    folder = Path(res.get("_path", "")).parent.name
    if folder.startswith("probe-"):
        return folder.removeprefix("probe-")
    return Path(str(res["encoder"]).rstrip("/")).name or str(res["encoder"])


def probe_comparison_chart(results: list[dict], path: str | Path, title: str = "") -> Path:
    """One group per finding, one bar per encoder: test AUPRC (mean over seeds, whiskers = ± seed SD), the
    finding's prevalence in the test split as a dashed line (the AUPRC of a random scorer), and the macro mean
    over findings as the last group. `results`: probe results.json dicts (with `_path` for naming, optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(n for r in results for n in r["labels"]))
    groups = labels + ["macro mean"]
    k = max(len(results), 1)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(7.0, 0.75 * len(groups) * max(1, k / 3) + 2), 4.2))
    colours = plt.get_cmap("tab10")
    for i, res in enumerate(results):
        means, stds, prev = [], [], []
        for n in labels:
            c = res["per_class"].get(n)
            first = (res.get("per_seed") or [{}])[0].get("per_class", {}).get(n, {})
            means.append(c["auprc_mean"] if c else np.nan)
            stds.append(c["auprc_std"] if c else 0.0)
            prev.append(first["n_pos"] / first["n"] if c and first.get("n") else np.nan)
        a = res["aggregate"]
        means.append(a["auprc_mean"])
        stds.append(a["auprc_std"] or 0.0)
        finite = [v for v in prev if np.isfinite(v)]
        prev.append(float(np.mean(finite)) if finite else np.nan)  # a random scorer's macro AUPRC
        x = np.arange(len(groups)) - 0.4 + width * (i + 0.5)
        ax.bar(x, means, width * 0.92, yerr=stds, capsize=2, color=colours(i % 10), label=_probe_name(res),
               error_kw={"elinewidth": 0.8})
        ax.hlines(prev, x - width / 2, x + width / 2, colors="black", linestyles="--", linewidth=1.0,
                  label="prevalence (random scorer)" if i == 0 else None)
    ax.axvline(len(labels) - 0.5, color="grey", lw=0.6)
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels(groups, rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test AUPRC (mean ± SD over seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(k + 1, 4), loc="upper left", frameon=False)
    ax.set_title(title or "Linear probe: AUPRC per finding, one bar per encoder", fontsize=10)
    return _save(fig, Path(path))
