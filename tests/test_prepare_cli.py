"""`radjepa prepare-data`: the issue's bad-input folder, exit codes, resume, parts, filters, no identifiers."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from fixtures.cxr_files import bad_input_folder, gradient, make_dicom, save_png
from radjepa_cli.cli import app
from radjepa_cli.data.loader import iter_records, read_manifest
from radjepa_cli.data.prepare import PrepareConfig, prepare_data

runner = CliRunner()


def run(*args, sheet=0):
    return runner.invoke(app, ["prepare-data", *map(str, args), "--contact-sheet", str(sheet)])


def test_bad_input_folder_gives_shards_of_exactly_the_good_images(tmp_path):
    files = bad_input_folder(tmp_path / "in", n_good=3)
    res = run("folder", tmp_path / "in", "--out", tmp_path / "out", "--size", 32, sheet=6)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out/contact_sheet.png").stat().st_size > 1000
    assert "5 input(s) rejected" in res.output
    m = read_manifest(tmp_path / "out")
    assert m["complete"] and m["counts"]["total"] == 3
    reasons = {r["path"]: r["reason"] for r in m["rejected"]}
    assert sorted(reasons) == sorted(files["bad"])
    assert "empty file" in reasons[str(tmp_path / "in/empty.png")]
    assert "not a PNG" in reasons[str(tmp_path / "in/notes.png")]
    assert "40000x40000" in reasons[str(tmp_path / "in/bomb.png")]
    assert "Modality CT" in reasons[str(tmp_path / "in/ct.dcm")]
    assert "truncated" in reasons[str(tmp_path / "in/truncated.dcm")]
    recs = list(iter_records(tmp_path / "out"))
    assert len(recs) == 3 and all(min(r.image.shape) == 32 for r in recs)
    # strict: the first bad input stops the run, non-zero, and the manifest does not claim completeness
    res = run("folder", tmp_path / "in", "--out", tmp_path / "strict", "--strict")
    assert res.exit_code == 1 and "--strict" in res.output
    assert not json.loads((tmp_path / "strict/manifest.json").read_text())["complete"]


def test_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.png").write_text("nope")
    res = run("folder", tmp_path / "in", "--out", tmp_path / "out")
    assert res.exit_code == 1 and "no usable images" in res.output


def test_rg1_dicom_in_a_folder_keeps_polarity_and_no_identifiers(tmp_path):
    from radjepa_cli.data.embedded import rg1_dicom
    (tmp_path / "in").mkdir()
    shutil.copy(rg1_dicom(), tmp_path / "in/rg1.dcm")
    make_dicom(tmp_path / "in/other.dcm", (gradient(64, 64) * 4095).astype(np.int64))  # carries fake identifiers
    res = run("folder", tmp_path / "in", "--out", tmp_path / "out", "--size", 128, "--bits", "16")
    assert res.exit_code == 0, res.output
    rg1 = [r for r in iter_records(tmp_path / "out") if r.image.shape[0] > 128][0]
    h, w = rg1.image.shape  # 1955x1841 → 135x128
    assert w == 128 and rg1.view == "PA"
    rows = slice(int(0.25 * h), int(0.55 * h))
    lungs = rg1.image[rows, int(0.2 * w):int(0.35 * w)].mean()
    spine = rg1.image[rows, int(0.46 * w):int(0.54 * w)].mean()
    assert lungs + 0.15 < spine
    blob = b"".join(p.read_bytes() for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    for secret in (b"Doe^Jane", b"PAT-SECRET-42", b"19500101", b"ACC-SECRET", b"Secret Hospital", b"other.dcm"):
        assert secret not in blob


def _phantom_folder(root, n=12, per_patient=3):
    """PNG tree + labels.csv with several images per patient, views and a report column."""
    from radjepa_cli.data.phantom import PhantomConfig, generate
    rows = ["path,patient,view,findings,Cardiomegaly,Pleural Effusion"]
    cfg = PhantomConfig(size=48, seed=0)
    for i in range(n):
        rec = generate(i, cfg)
        save_png(root / f"img{i}.png", rec.image)
        view = "LATERAL" if i % 3 == 2 else "PA"
        lab = rec.labels
        rows.append(f"img{i}.png,P{i // per_patient},{view},\"{rec.findings.replace(chr(34), '')}\","
                    f"{lab.get('Cardiomegaly') if lab.get('Cardiomegaly') is not None else ''},"
                    f"{lab.get('Pleural Effusion') if lab.get('Pleural Effusion') is not None else ''}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def test_splits_are_patient_level_and_filters_apply(tmp_path):
    (tmp_path / "in").mkdir()
    _phantom_folder(tmp_path / "in", n=30, per_patient=3)
    cfg = PrepareConfig(dataset="folder", root=str(tmp_path / "in"), out=str(tmp_path / "o"), size=32, salt="s", contact_sheet=0,
                        val_frac=0.3, test_frac=0.3, shard_size=4)
    m = prepare_data(cfg)
    recs = list(iter_records(tmp_path / "o"))
    by_patient = {}
    for r in recs:
        by_patient.setdefault(r.patient, set()).add(r.split)
    assert len(by_patient) == 10 and all(len(s) == 1 for s in by_patient.values())
    assert set(m["counts"]["split"]) == {"train", "val", "test"}
    assert all(r.patient not in {f"P{i}" for i in range(10)} and len(r.patient) == 16 for r in recs)
    assert "Cardiomegaly" in m["labels"]["train"]
    # filters: views, lateral ratio, excluded subjects, split
    (tmp_path / "excl.txt").write_text("P0\nP1\n")
    m = prepare_data(PrepareConfig(dataset="folder", root=str(tmp_path / "in"), out=str(tmp_path / "f"), size=32,
                                   salt="s", contact_sheet=0, lateral_ratio=4, exclude_subjects=str(tmp_path / "excl.txt")))
    views = m["counts"]["view"]
    assert m["counts"]["total"] == 24 - 24 // 3 + views["LATERAL"] and views["PA"] == 16
    assert views["LATERAL"] == 4 and m["excluded"] == {"exclude_subjects": 6, "lateral_ratio": 4}
    m = prepare_data(PrepareConfig(dataset="folder", root=str(tmp_path / "in"), out=str(tmp_path / "v"), size=32,
                                   salt="s", contact_sheet=0, views="LATERAL", split="train"))
    assert set(m["counts"]["view"]) == {"LATERAL"} and set(m["counts"]["split"]) == {"train"}


def test_resume_skips_finished_and_rewrites_partial_shards(tmp_path):
    (tmp_path / "in").mkdir()
    _phantom_folder(tmp_path / "in", n=10, per_patient=1)
    out = tmp_path / "o"
    cfg = dict(dataset="folder", root=str(tmp_path / "in"), out=str(out), size=32, shard_size=2, split="all",
               contact_sheet=0)
    m1 = prepare_data(PrepareConfig(**cfg))
    shas = {s["name"]: s["sha256"] for s in m1["shards"]}
    victim = sorted(shas)[0]
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    (out / victim).write_bytes(b"partial")                      # a damaged shard
    (out / f".{victim}.123.tmp").write_bytes(b"junk")           # a crashed writer's temp file
    m2 = prepare_data(PrepareConfig(**cfg))                     # salt comes from OUT/.salt: same hashes
    assert {s["name"]: s["sha256"] for s in m2["shards"]} == shas and m2["complete"]
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert [n for n in after if after[n] != mtimes[n]] == [victim]  # only the damaged one was rewritten
    assert not list(out.glob(".*.tmp"))
    with pytest.raises(FileExistsError, match="different configuration"):
        prepare_data(PrepareConfig(**{**cfg, "size": 40}))


def test_parts_merge_into_the_full_run_and_dry_run_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("radjepa_cli.data.prepare.MIN_PARALLEL_ITEMS", 0)  # exercise the worker pool on 12 items
    (tmp_path / "in").mkdir()
    _phantom_folder(tmp_path / "in", n=12, per_patient=2)
    base = ["folder", tmp_path / "in", "--size", 32, "--shard-size", 2, "--salt", "k"]
    res = run(*base, "--out", tmp_path / "dry", "--dry-run")
    assert res.exit_code == 0 and "dry run" in res.output and not (tmp_path / "dry").exists()
    assert run(*base, "--out", tmp_path / "full", "--workers", 1).exit_code == 0  # serial vs parallel parts
    assert run(*base, "--out", tmp_path / "parts", "--part", "0/2").exit_code == 0
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "parts")
    with pytest.raises(ValueError, match="merge-manifests"):
        list(iter_records(tmp_path / "parts"))
    res = run(*base, "--out", tmp_path / "parts", "--part", "1/2", "--workers", 2)
    assert res.exit_code == 0, res.output
    full, parts = read_manifest(tmp_path / "full"), read_manifest(tmp_path / "parts")
    assert {s["name"]: s["sha256"] for s in full["shards"]} == {s["name"]: s["sha256"] for s in parts["shards"]}
    assert full["counts"] == parts["counts"] and full["labels"] == parts["labels"]
    assert run(*base, "--out", tmp_path / "x", "--part", "0/2", "--salt", "k", "--bits", "12").exit_code == 1
    res = runner.invoke(app, ["merge-manifests", str(tmp_path / "parts")])
    assert res.exit_code == 0, res.output


def test_help_documents_every_dataset_layout():
    res = runner.invoke(app, ["prepare-data", "--help"], terminal_width=200)
    assert res.exit_code == 0
    for name in ("folder", "mimic-cxr", "chexpert", "nih14", "padchest", "brax", "vindr-cxr", "rsna", "iu-xray",
                 "vindr-ribcxr", "imagenome", "synthetic"):
        assert f"{name}:" in res.output
    assert "not available" not in res.output and "ROOT = MIMIC-CXR-JPG" in res.output


def test_synthetic_shards_carry_labels_masks_and_reports(tmp_path):
    from radjepa_cli.data.labels import LUNG_ZONES, RIBS
    from radjepa_cli.data.loader import make_loader
    res = run("synthetic", "--n", 16, "--size", 64, "--out", tmp_path / "o", "--shard-size", 8, "--workers", 2)
    assert res.exit_code == 0, res.output
    m = read_manifest(tmp_path / "o")
    assert m["counts"]["total"] == 16 and {"lung_left", "heart", *RIBS, *LUNG_ZONES} <= set(m["mask_names"])
    assert "Cardiomegaly" in m["labels"]["train"] and m["config"]["salt"] is None
    recs = list(iter_records(tmp_path / "o"))
    assert all(r.findings and r.image.shape == (64, 64) and r.masks["lung_left"].any() for r in recs)
    b = next(iter(make_loader(tmp_path / "o", split="train", batch_size=4, image_size=48, train=True,
                              label_names=["Cardiomegaly"], mask_names=["lung_left", "R3"])))
    assert b["masks"].shape == (4, 2, 48, 48) and b["mask_known"].all()


def test_png_level_0_same_pixels_larger_files_and_a_rerun_at_another_level_is_refused(tmp_path):
    """--png-level 0 (stored deflate: ~3x faster decode) must change only the bytes, never the pixels; a rerun
    into a folder written at another level is refused (naming the setting) rather than mixing two encodings."""
    from radjepa_cli.data.shards import PNG_LEVEL, decode_png_raw, iter_tar
    (tmp_path / "in").mkdir()
    _phantom_folder(tmp_path / "in", n=6, per_patient=1)
    base = ["folder", tmp_path / "in", "--size", 96, "--shard-size", 3, "--salt", "k"]
    assert run(*base, "--out", tmp_path / "l0", "--png-level", 0).exit_code == 0
    res = run(*base, "--out", tmp_path / "dflt")
    assert res.exit_code == 0, res.output
    m0, md = read_manifest(tmp_path / "l0"), read_manifest(tmp_path / "dflt")
    assert m0["config"]["png_level"] == 0 and md["config"]["png_level"] == PNG_LEVEL == 2
    assert [s["name"] for s in m0["shards"]] == [s["name"] for s in md["shards"]] and len(m0["shards"]) >= 2
    for s0, sd in zip(m0["shards"], md["shards"]):
        a, b = list(iter_tar(tmp_path / "l0" / s0["name"])), list(iter_tar(tmp_path / "dflt" / sd["name"]))
        assert [k for k, _ in a] == [k for k, _ in b]
        for (_, fa), (_, fb) in zip(a, b):
            assert fa["json"] == fb["json"]
            ra, rb = decode_png_raw(fa["png"]), decode_png_raw(fb["png"])
            assert ra.dtype == rb.dtype and (ra == rb).all()            # identical stored grey levels
            assert len(fa["png"]) > len(fb["png"]) and len(fa["png"]) >= ra.numel()  # level 0: stored, larger
        assert s0["bytes"] >= sd["bytes"]  # tars pad to 10 KiB records: one small image may not show
    tars = {d: sum(p.stat().st_size for p in (tmp_path / d).glob("*.tar")) for d in ("l0", "dflt")}
    assert tars["l0"] > tars["dflt"] and sum(s["bytes"] for s in m0["shards"]) == tars["l0"]
    # rerun into the default-level folder at level 0: refused, says which setting, touches nothing
    shas = {s["name"]: s["sha256"] for s in md["shards"]}
    res = run(*base, "--out", tmp_path / "dflt", "--png-level", 0)
    assert res.exit_code == 1 and "png-level: 2 → 0" in res.output and "--overwrite" in res.output, res.output
    assert read_manifest(tmp_path / "dflt")["shards"] == md["shards"]
    # --overwrite rewrites every shard at level 0: byte-identical to the folder written at level 0 from scratch
    assert run(*base, "--out", tmp_path / "dflt", "--png-level", 0, "--overwrite").exit_code == 0
    mo = read_manifest(tmp_path / "dflt")
    assert {s["name"]: s["sha256"] for s in mo["shards"]} == {s["name"]: s["sha256"] for s in m0["shards"]} != shas
    # the same level again resumes (nothing rewritten); out-of-range levels are refused
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "dflt").glob("*.tar")}
    assert run(*base, "--out", tmp_path / "dflt", "--png-level", 0).exit_code == 0
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "dflt").glob("*.tar")} == mtimes
    assert run(*base, "--out", tmp_path / "bad", "--png-level", 10).exit_code != 0
    with pytest.raises(ValueError, match="png-level"):
        PrepareConfig(dataset="synthetic", out=str(tmp_path / "x"), png_level=-1).validate()


def test_png_level_default_keeps_the_fingerprint_of_folders_written_before_the_option():
    """Shard folders written before --png-level existed must still resume: at the default level the fingerprint is
    the one the earlier code computed (value pinned from it), and an old manifest's config reads as level 2."""
    from radjepa_cli.data.prepare import config_changes, fingerprint, public_config
    cfg = PrepareConfig(dataset="synthetic", out="x", n=4, salt="k")
    before = "b8277cef931c41c9"  # fingerprint(cfg, "k") at 6a028e4, before png_level was a setting
    assert fingerprint(cfg, "k") == before
    assert fingerprint(dataclasses.replace(cfg, png_level=0), "k") != before
    old = {k: v for k, v in public_config(cfg, "k").items() if k != "png_level"}
    assert config_changes(old, public_config(cfg, "k")) == []
    assert config_changes(old, {**old, "png_level": 0, "workers": 3}) == ["png-level: 2 → 0"]
