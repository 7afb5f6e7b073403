"""Resuming prepare-data: which shards of an earlier run with the same configuration can be kept.

A finished shard is kept when its planned keys are the same (more images on disk change the plan), its file is
intact (sha256), and none of its rejected inputs changed on disk since (a finished download, a replaced file).
Entries come from manifest.json and from the per-shard journal an interrupted run leaves behind.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

from ..io import read_json
from . import manifest as mf
from .shards import file_sha256
from .sources import SourceItem


def plan_digest(items: list[SourceItem]) -> str:
    return hashlib.sha256("\n".join(it.key for it in items).encode()).hexdigest()[:16]


def file_state(path: str | None) -> list[int] | None:
    """[size, mtime_ns] of a file, None when absent: a rejection is re-examined when this changes."""
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns] if st else None


def still_valid(out: Path, prev: dict | None, items: list[SourceItem]) -> bool:
    """A finished shard can be kept: same planned keys, file intact, and no rejected input changed on disk."""
    if prev is None or prev.get("plan") != plan_digest(items):
        return False
    if any(file_state(r.get("path")) != r.get("state") for r in prev.get("rejected", []) if "state" in r):
        return False
    if prev.get("empty"):
        return not (out / prev["name"]).exists()
    return (out / prev["name"]).is_file() and file_sha256(out / prev["name"]) == prev["sha256"]


def earlier_entries(out: Path, mpath: Path, jpath: Path, fp: str, overwrite: bool,
                    explain: Callable[[dict], list[str]] | None = None) -> dict[str, dict]:
    """Shard entries of earlier runs with this configuration (manifest, then the journal of an interrupted run).
    Another configuration's shards are an error (naming the settings that differ: `explain(manifest config)`), or
    with --overwrite deleted; --overwrite also redoes ours. Never a mix: a rerun that changes e.g. --png-level
    must not leave shards of two encodings under one manifest."""
    old = read_json(mpath) if mpath.exists() else {}
    journal = mf.read_journal(jpath)
    fps = ({old["fingerprint"]} if old.get("fingerprint") else set()) | {f for f, _ in journal}
    if fps - {fp} and not overwrite:
        changes = explain(old.get("config") or {}) if explain is not None and old.get("config") else []
        why = f": {'; '.join(changes)}" if changes else ""
        raise FileExistsError(f"{out} holds shards from a different configuration ({mpath.name} fingerprint "
                              f"{sorted(fps - {fp})[0]} != {fp}){why}; use a new --out, or --overwrite to "
                              f"rewrite them all")
    entries = list(old.get("shards", [])) + list(old.get("empty_shards", [])) + [e for _, e in journal]
    if overwrite:
        for e in entries:
            (out / e["name"]).unlink(missing_ok=True)
        return {}
    done = {e["name"]: e for e in old.get("shards", []) + old.get("empty_shards", [])}
    done.update({e["name"]: e for f, e in journal if f == fp})
    return done
