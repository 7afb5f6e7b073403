"""manifest.json of a shard folder: per-shard entries (sha256, counts, label tallies, rejections) and the totals.

The per-shard entries are the source of truth; totals are recomputed from them by `summarize`, which is what makes
resuming and merging the manifests of `--part i/N` runs exact.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from ..io import read_json, write_json

FORMAT = "radjepa-shards/1"
MANIFEST = "manifest.json"


def part_manifest_name(index: int, total: int) -> str:
    return f"manifest.part-{index}-of-{total}.json"


def new_shard_stats() -> dict[str, Any]:
    return {"views": Counter(), "datasets": defaultdict(Counter), "labels": defaultdict(lambda: [0, 0, 0, 0]),
            "masks": set(), "rejected": []}


def add_sample(stats: dict[str, Any], meta: dict[str, Any], mask_names: Iterable[str]) -> None:
    """Tally one written sample: view, dataset, labels as [positive, negative, uncertain, unknown]."""
    stats["views"][meta.get("view", "UNKNOWN")] += 1
    stats["datasets"][meta.get("dataset", "")][meta.get("view", "UNKNOWN")] += 1
    for name, v in (meta.get("labels") or {}).items():
        stats["labels"][name][{1: 0, 0: 1, -1: 2}.get(v, 3)] += 1
    stats["masks"].update(mask_names)


def shard_entry(name: str, split: str, samples: int, sha256: str, nbytes: int, stats: dict[str, Any]) -> dict:
    return {"name": name, "split": split, "samples": samples, "sha256": sha256, "bytes": nbytes,
            "views": dict(stats["views"]), "datasets": {k: dict(v) for k, v in stats["datasets"].items()},
            "labels": {k: list(v) for k, v in sorted(stats["labels"].items())},
            "masks": sorted(stats["masks"]), "rejected": list(stats["rejected"])}


def summarize(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over shard entries: counts per split / view / dataset×split×view, label prevalences per split."""
    by_split, by_view = Counter(), Counter()
    by_dataset: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    labels: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0, 0]))
    masks: set[str] = set()
    rejected: list[dict] = []
    for s in sorted(shards, key=lambda s: s["name"]):
        by_split[s["split"]] += s["samples"]
        by_view.update(s["views"])
        for ds, views in s["datasets"].items():  # {dataset: {view: n}}
            by_dataset[ds][s["split"]].update(views)
        for name, tally in s["labels"].items():
            acc = labels[s["split"]][name]
            for i in range(4):
                acc[i] += tally[i]
        masks.update(s.get("masks", []))
        rejected.extend(s.get("rejected", []))
    prevalence = {
        split: {name: {"positive": t[0], "negative": t[1], "uncertain": t[2], "unknown": t[3],
                       "prevalence": round(t[0] / (t[0] + t[1]), 6) if t[0] + t[1] else None}
                for name, t in sorted(per.items())}
        for split, per in sorted(labels.items())}
    return {
        "counts": {"total": sum(by_split.values()), "split": dict(sorted(by_split.items())),
                   "view": dict(sorted(by_view.items())),
                   "dataset": {ds: {sp: dict(sorted(v.items())) for sp, v in sorted(d.items())}
                               for ds, d in sorted(by_dataset.items())}},
        "labels": prevalence, "mask_names": sorted(masks), "rejected": rejected,
    }


def build_manifest(config: dict, fingerprint: str, shards: list[dict], excluded: dict[str, int],
                   complete: bool, part: tuple[int, int] | None = None, planned: int | None = None,
                   plan_rejected: list[dict] | None = None) -> dict:
    """plan_rejected: inputs rejected while planning (e.g. duplicate keys), which belong to no shard."""
    shards = sorted(shards, key=lambda s: s["name"])
    m = {"format": FORMAT, "complete": complete, "fingerprint": fingerprint, "config": config,
         "part": list(part) if part else None, "planned_shards": planned,
         **summarize(shards), "excluded": dict(excluded), "plan_rejected": list(plan_rejected or []),
         "shards": shards}
    m["rejected"] = m["plan_rejected"] + m["rejected"]
    return m


def merge_manifests(manifests: list[dict]) -> dict:
    """Merge the manifests of `--part i/N` runs of one dataset into one. Complete only when every part is complete
    and present; raises ValueError when the parts come from different configurations or overlap."""
    if not manifests:
        raise ValueError("no manifests to merge")
    fps = {m["fingerprint"] for m in manifests}
    if len(fps) != 1:
        raise ValueError(f"manifests come from different prepare-data configurations (fingerprints {sorted(fps)})")
    names = Counter(s["name"] for m in manifests for s in m["shards"])
    dup = sorted(n for n, c in names.items() if c > 1)
    if dup:
        raise ValueError(f"parts overlap: shard(s) {dup[:5]} appear in several manifests")
    totals = {m["part"][1] for m in manifests if m.get("part")}
    got = {m["part"][0] for m in manifests if m.get("part")}
    expected = totals.pop() if len(totals) == 1 else None
    if expected is None:  # not part manifests: merging whole runs of the same configuration is not meaningful
        all_parts = len(manifests) == 1
    else:
        all_parts = got == set(range(expected)) and len(got) == len(manifests)
    complete = all(m.get("complete") for m in manifests) and all_parts
    excluded = Counter()
    for m in manifests[:1]:  # filters are applied before the part split: identical in every part
        excluded.update(m.get("excluded", {}))
    shards = [s for m in manifests for s in m["shards"]]
    cfg = dict(manifests[0]["config"])
    cfg["part"] = None
    return build_manifest(cfg, fps.pop(), shards, excluded, complete, None,
                          sum(m.get("planned_shards") or 0 for m in manifests),
                          plan_rejected=manifests[0].get("plan_rejected"))


def merge_part_manifests(out: str | Path) -> dict:
    """Merge every `manifest.part-*-of-*.json` in a shard folder into its manifest.json (atomic)."""
    out = Path(out)
    parts = sorted(out.glob("manifest.part-*-of-*.json"))
    if not parts:
        raise FileNotFoundError(f"no manifest.part-*-of-*.json in {out}")
    merged = merge_manifests([read_json(p) for p in parts])
    write_json(out / MANIFEST, merged)
    return merged


def dumps_summary(m: dict) -> str:
    return json.dumps({k: m[k] for k in ("complete", "counts")}, indent=2)
