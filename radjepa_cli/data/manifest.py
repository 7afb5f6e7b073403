"""manifest.json of a shard folder: per-shard entries (sha256, counts, label tallies, rejections) and the totals.

The per-shard entries are the source of truth; totals are recomputed from them by `summarize`, which is what makes
resuming and merging the manifests of `--part i/N` runs exact.
"""
from __future__ import annotations

import json
import os
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


def shard_entry(name: str, split: str, samples: int, sha256: str | None, nbytes: int, stats: dict[str, Any],
                plan: str | None = None) -> dict:
    """plan: a digest of the keys planned into the shard (a rerun whose plan differs rewrites it). A shard whose
    inputs were all rejected has no file: it is recorded with `empty: true`."""
    extra = {"plan": plan} if plan else {}
    if samples == 0:
        extra["empty"] = True
    return {"name": name, "split": split, "samples": samples, "sha256": sha256, "bytes": nbytes, **extra,
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
                   plan_rejected: list[dict] | None = None, missing: dict | None = None,
                   source: dict | None = None) -> dict:
    """plan_rejected: inputs rejected while planning (e.g. duplicate keys), which belong to no shard. Entries
    marked `empty` (every input of a planned shard rejected: no tar written) count in the totals and rejections
    but are listed under `empty_shards`, so `shards` names only files that exist. missing: presence's summary of
    listed-but-absent images; source: {'notes': [...], 'warnings': [...]} from the dataset reader."""
    shards = sorted(shards, key=lambda s: s["name"])
    m = {"format": FORMAT, "complete": complete, "fingerprint": fingerprint, "config": config,
         "part": list(part) if part else None, "planned_shards": planned,
         **summarize(shards), "excluded": dict(excluded), "plan_rejected": list(plan_rejected or []),
         "missing": missing, "source": source or {"notes": [], "warnings": []},
         "shards": [s for s in shards if not s.get("empty")],
         "empty_shards": [s for s in shards if s.get("empty")]}
    m["rejected"] = m["plan_rejected"] + m["rejected"]
    return m


# ------------------------------------------------------------------------ per-shard journal (resumable runs)

def journal_name(manifest_name: str) -> str:
    """`manifest.json` → `manifest.shards.jsonl`: one line per finished shard while a run is in progress."""
    return manifest_name.removesuffix(".json") + ".shards.jsonl"


def read_journal(path: str | Path) -> list[tuple[str, dict]]:
    """[(fingerprint, shard entry)] in write order; a torn last line (a crash mid-write) is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            out.append((rec["fingerprint"], rec["shard"]))
        except (ValueError, KeyError, TypeError):
            continue
    return out


class Journal:
    """Append-only record of finished shards: O(one shard) per write, flushed to disk before the next shard, so an
    interrupted run resumes from it. The run's final manifest.json is the index of these records."""

    def __init__(self, path: str | Path, fingerprint: str, entries: Iterable[dict] = ()):
        self.path, self.fingerprint = Path(path), fingerprint
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w") as f:  # start from the entries still valid (an earlier run's, checked by the caller)
            for e in entries:
                f.write(self._line(e))
        os.replace(tmp, self.path)
        self._f = self.path.open("a")

    def _line(self, entry: dict) -> str:
        return json.dumps({"fingerprint": self.fingerprint, "shard": entry}, sort_keys=True) + "\n"

    def append(self, entry: dict) -> None:
        self._f.write(self._line(entry))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self, remove: bool = False) -> None:
        self._f.close()
        if remove:
            self.path.unlink(missing_ok=True)


def merge_manifests(manifests: list[dict]) -> dict:
    """Merge the manifests of `--part i/N` runs of one dataset into one. Complete only when every part is complete
    and present; raises ValueError when the parts come from different configurations or overlap."""
    if not manifests:
        raise ValueError("no manifests to merge")
    fps = {m["fingerprint"] for m in manifests}
    if len(fps) != 1:
        raise ValueError(f"manifests come from different prepare-data configurations (fingerprints {sorted(fps)})")
    names = Counter(s["name"] for m in manifests for s in m["shards"] + m.get("empty_shards", []))
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
    shards = [s for m in manifests for s in m["shards"] + m.get("empty_shards", [])]
    cfg = dict(manifests[0]["config"])
    cfg["part"] = None
    return build_manifest(cfg, fps.pop(), shards, excluded, complete, None,
                          sum(m.get("planned_shards") or 0 for m in manifests),
                          plan_rejected=manifests[0].get("plan_rejected"), missing=manifests[0].get("missing"),
                          source=manifests[0].get("source"))


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
