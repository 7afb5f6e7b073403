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
        path = os.fspath(path)
        if not os.path.isabs(path) or "/." in path:  # normalise only when needed: 377K abspath calls cost seconds
            path = os.path.abspath(path)
        folder, name = os.path.split(path)
        listing = self.names(folder)
        return listing is not None and name in listing


def split_present(paths: Iterable[str | os.PathLike | None]) -> list[bool]:
    """For each path: is it on disk? (None — an item rendered in memory — counts as present.)"""
    listings = DirListings()
    return [p is None or listings.exists(p) for p in paths]


def _group(rel: str, depth: int) -> str:
    folders = rel.split(os.sep, depth)[:-1]
    return "/".join(folders[:depth]) if folders else "."


def missing_summary(paths: list[str], present: list[bool], base: str | os.PathLike, what: str = "") -> dict:
    """{'listed', 'missing', 'groups': {folder: [present, listed]}, 'base', 'what', 'text'}.

    Folders are the paths' first one or two directories below `base` (two when that gives at most MAX_GROUPS
    folders: 'files/p10' for MIMIC, 'images_001/images' for NIH), so the text can say e.g. "only files/p10 present".
    No example file paths: the summary goes into manifest.json, and file names can embed patient ids.
    """
    base = os.path.abspath(base)
    prefix = base.rstrip(os.sep) + os.sep
    rels = [_relative(os.fspath(p), prefix) for p in paths]
    depth = 2
    if len({_group(r, 2) for r in rels}) > MAX_GROUPS:
        depth = 1
    groups: dict[str, list[int]] = {}
    for r, ok in zip(rels, present):
        g = groups.setdefault(_group(r, depth), [0, 0])
        g[0] += ok
        g[1] += 1
    out = {"listed": len(paths), "missing": len(paths) - sum(present), "base": base, "what": what,
           "groups": dict(sorted(groups.items()))}
    out["text"] = describe_missing(out)
    return out


def _relative(path: str, prefix: str) -> str:
    if not path.startswith(prefix):  # rare (relative or outside ROOT): the exact but slower way
        path = os.path.abspath(path)
        if not path.startswith(prefix):
            return "(outside ROOT)" + os.sep + os.path.basename(path)
    return path[len(prefix):]


def describe_missing(s: dict) -> str:
    """One paragraph: how many are absent, which folders are there, which are not."""
    if not s["missing"]:
        return ""
    head = f"{s['missing']:,} of {s['listed']:,} images{' listed in ' + s['what'] if s['what'] else ''} are " \
           f"not on disk under {s['base']}"
    groups = s["groups"]
    full = [g for g, (ok, n) in groups.items() if ok == n]
    none = [g for g, (ok, n) in groups.items() if ok == 0]
    part = [f"{g} ({ok:,} of {n:,})" for g, (ok, n) in groups.items() if 0 < ok < n]
    if not full and not part:
        lines = [f"{head}: none of them found (looked under {_abbrev(list(groups))})"]
    elif len(groups) > 1 and len(full) + len(part) <= len(groups) // 2 + 1:
        lines = [f"{head}: only {', '.join(full + part)} present"]
    else:
        lines = [head]
        if full:
            lines.append(f"complete: {', '.join(full)}")
        if part:
            lines.append(f"partly present: {', '.join(part)}")
    if none and (full or part):
        lines.append(f"absent: {_abbrev(none)}")
    return "; ".join(lines) + ". Is the download complete, and is ROOT the dataset's folder?"


def _abbrev(names: list[str], keep: int = 6) -> str:
    return ", ".join(names) if len(names) <= keep else f"{', '.join(names[:keep])} … ({len(names)} folders)"
