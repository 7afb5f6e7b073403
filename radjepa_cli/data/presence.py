"""Which of a dataset's listed images are on disk, and a short account of the ones that are not.

Partial downloads are the common case (MIMIC-CXR-JPG fetched one `files/p1x` folder at a time, NIH's twelve
`images_0xx` archives): 377K CSV rows may point at 4K files. Asking the file system about each path costs one
stat per row; instead each directory on the way is listed once, so a missing `files/p11` answers for its 40K rows
with one listing of `files/`, and a present tree costs one walk of what exists.
"""
from __future__ import annotations

import os
from typing import Iterable

MAX_GROUPS = 24  # a missing-files summary names at most this many folders


def absolute(path: str | os.PathLike) -> str:
    """os.path.abspath only where needed (relative or '..' paths): 377K abspath calls cost seconds."""
    path = os.fspath(path)
    return path if os.path.isabs(path) and "/." not in path else os.path.abspath(path)


class DirListings:
    """`exists(path)` from cached directory listings: each directory is listed at most once."""

    def __init__(self):
        self._names: dict[str, frozenset | None] = {}

    def names(self, folder: str) -> frozenset | None:
        """Entries of `folder` (absolute), or None when it is not a readable directory."""
        if folder in self._names:
            return self._names[folder]
        parent, name = os.path.split(folder)
        if parent != folder and name:
            above = self.names(parent)
            if above is None or name not in above:  # known missing without asking the file system
                self._names[folder] = None
                return None
        try:
            listing: frozenset | None = frozenset(os.listdir(folder))
        except OSError:  # missing, not a directory, or unreadable: the file is then reported absent
            listing = None
        self._names[folder] = listing
        return listing

    def exists(self, path: str | os.PathLike) -> bool:
        folder, name = os.path.split(absolute(path))
        listing = self.names(folder)
        return listing is not None and name in listing


def split_present(paths: Iterable[str | os.PathLike | None]) -> list[bool]:
    """For each path: is it on disk? (None — an item rendered in memory — counts as present.)"""
    listings = DirListings()
    return [p is None or listings.exists(p) for p in paths]


def missing_summary(paths: list[str], present: list[bool], base: str | os.PathLike, what: str = "") -> dict:
    """{'listed', 'missing', 'base', 'what', 'folders', 'groups': {folder: [present, listed]} | None, 'text'}.

    Folders are the first level below `base` (common_folder: MIMIC's p10 … p19, NIH's images_001 …, CheXpert's
    AIMI batches), so the text can say "only p10 present". With more than MAX_GROUPS folders (patient folders)
    none is named, and no file path is ever given: the summary goes into manifest.json, and names below the
    download's own parts can be patient ids.
    """
    base = os.path.abspath(base)
    prefix = base.rstrip(os.sep) + os.sep
    counts: dict[str, list[int]] = {}
    for p, ok in zip(paths, present):
        rel = _relative(os.fspath(p), prefix)
        g = counts.setdefault(rel.split(os.sep, 1)[0] if os.sep in rel else ".", [0, 0])
        g[0] += ok
        g[1] += 1
    out = {"listed": len(paths), "missing": len(paths) - sum(present), "base": base, "what": what,
           "folders": [len(counts), sum(1 for ok, _ in counts.values() if ok)],
           "groups": dict(sorted(counts.items())) if len(counts) <= MAX_GROUPS else None}
    out["text"] = describe_missing(out)
    return out


def common_folder(paths: list[str]) -> str:
    """The deepest folder above every path (absolute paths): where the summary's folder names start, e.g.
    MIMIC's files/ (so its groups are p10 … p19) whatever ROOT was. min/max keep it linear on 377K paths."""
    if not paths:
        return os.sep
    lo, hi = min(paths), max(paths)
    prefix = os.path.commonprefix([lo, hi])
    folder = prefix if prefix.endswith(os.sep) else os.path.dirname(prefix)
    if os.path.dirname(lo) == os.path.dirname(hi) == folder.rstrip(os.sep):
        folder = os.path.dirname(folder.rstrip(os.sep))  # all in one folder: name that folder, not '.'
    return folder.rstrip(os.sep) or os.sep


def _relative(path: str, prefix: str) -> str:
    if not path.startswith(prefix):  # rare (relative or outside ROOT): the exact but slower way
        path = os.path.abspath(path)
        if not path.startswith(prefix):
            return "(outside " + prefix.rstrip(os.sep) + ")" + os.sep + os.path.basename(path)
    return path[len(prefix):]


def describe_missing(s: dict) -> str:
    """One paragraph: how many are absent, which folders are there, which are not."""
    if not s["missing"]:
        return ""
    head = f"{s['missing']:,} of {s['listed']:,} images{' listed in ' + s['what'] if s['what'] else ''} are " \
           f"not on disk under {s['base']}"
    groups = s["groups"]
    if groups is None:
        lines = [f"{head}: images found in {s['folders'][1]:,} of its {s['folders'][0]:,} folders"]
    else:
        full = [g for g, (ok, n) in groups.items() if ok == n]
        none = [g for g, (ok, n) in groups.items() if ok == 0]
        part = [f"{g} ({ok:,} of {n:,})" for g, (ok, n) in groups.items() if 0 < ok < n]
        if not full and not part:
            lines = [f"{head}: none of them found (looked in {_abbrev(list(groups))})"]
        elif len(groups) > 1 and len(full) + len(part) <= len(groups) // 2 + 1:
            lines = [f"{head}: only {', '.join(full + part)} present"]
        else:
            lines = [head] + ([f"complete: {', '.join(full)}"] if full else []) + \
                ([f"partly present: {', '.join(part)}"] if part else [])
        if none and (full or part):
            lines.append(f"absent: {_abbrev(none)}")
    return "; ".join(lines) + ". Is the download complete, and is ROOT the dataset's folder?"


def _abbrev(names: list[str], keep: int = 6) -> str:
    return ", ".join(names) if len(names) <= keep else f"{', '.join(names[:keep])} … ({len(names)} folders)"
