"""Which listed images are on disk (one listing per directory) and the grouped summary of the rest."""
from __future__ import annotations

import os

from radjepa_cli.data.presence import DirListings, common_folder, missing_summary, split_present


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


def test_missing_summary_groups_by_the_download_parts(tmp_path):
    paths = [str(tmp_path / f"mimic/files/p{10 + k % 10}/p{k}/s{k}/{k}.jpg") for k in range(200)]
    present = ["/files/p10/" in p for p in paths]
    base = common_folder(paths)
    assert base == str(tmp_path / "mimic/files")
    s = missing_summary(paths, present, base, what="mimic-cxr")
    assert s["missing"] == 180 and s["groups"]["p10"] == [20, 20] and s["groups"]["p19"] == [0, 20]
    assert s["text"].startswith(f"180 of 200 images listed in mimic-cxr are not on disk under {base}")
    assert "only p10 present" in s["text"] and "absent: p11" in s["text"]
    none = missing_summary(paths[:3], [False] * 3, base)
    assert "none of them found (looked in p10, p11, p12)" in none["text"]
    # patient folders directly below the common folder: counted, never named
    many = [str(tmp_path / f"brax/images/id_{k}/s1/a.png") for k in range(40)]
    s = missing_summary(many, [k < 3 for k in range(40)], common_folder(many))
    assert s["groups"] is None and "images found in 3 of its 40 folders" in s["text"] and "id_" not in s["text"]
    one = [str(tmp_path / "iu/NLMCXR_png" / f"{k}.png") for k in range(3)]
    assert missing_summary(one, [True, False, False], common_folder(one))["groups"] == {"NLMCXR_png": [1, 3]}
    assert DirListings().exists(tmp_path) is True
