"""Which listed images are on disk (one listing per directory) and the grouped summary of the rest."""
from __future__ import annotations

import os

from radjepa_cli.data.presence import DirListings, missing_summary, split_present


def test_presence_by_listings_matches_the_file_system(tmp_path, monkeypatch):
    for rel in ("files/p10/p1/s1/a.jpg", "files/p10/p1/s1/b.jpg", "files/p10/p2/s5/c.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    paths = [tmp_path / r for r in ("files/p10/p1/s1/a.jpg", "files/p10/p1/s1/zzz.jpg", "files/p10/p2/s5/c.jpg",
                                    "files/p11/p3/s2/d.jpg", "files/p10/p1/s1/../s1/b.jpg")] + [None]
    monkeypatch.chdir(tmp_path)
    paths.append("files/p10/p2/s5/c.jpg")  # relative to the working directory
    calls = []
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p: calls.append(p) or real(p))
    assert split_present(paths) == [True, False, True, False, True, True, True]
    assert not any("p11" in str(c) for c in calls)  # a missing folder answers for its files without a syscall
    assert len(calls) == len(set(calls))  # each directory listed once


def test_missing_summary_groups_by_top_folders(tmp_path):
    paths = [str(tmp_path / f"files/p{10 + k % 10}/p{k}/s{k}/{k}.jpg") for k in range(200)]
    present = [p.startswith(str(tmp_path / "files/p10/")) for p in paths]
    s = missing_summary(paths, present, tmp_path, what="mimic-cxr")
    assert s["missing"] == 180 and s["groups"]["files/p10"] == [20, 20] and s["groups"]["files/p19"] == [0, 20]
    assert s["text"].startswith("180 of 200 images listed in mimic-cxr are not on disk")
    assert "only files/p10 present" in s["text"] and "absent: files/p11" in s["text"]
    assert "/p0/" not in s["text"]  # folders below the top two (patients) are never named
    none = missing_summary(paths[:3], [False] * 3, tmp_path)
    assert "none of them found (looked under files/p10, files/p11, files/p12)" in none["text"]
    assert DirListings().exists(tmp_path) is True
