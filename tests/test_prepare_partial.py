"""prepare-data on downloads as users have them: partial trees, reruns after more files arrive, ROOT one level up,
two official CSV versions side by side (issue 17, items 1-6). Real CSV headers and rows where packages ship them."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fixtures.cxr_files import make_dicom, save_png
from radjepa_cli.cli import app
from radjepa_cli.data.embedded import package_file
from radjepa_cli.data.labels import CHEXPERT_14
from radjepa_cli.data.loader import iter_records, read_manifest
from radjepa_cli.data.phantom import PhantomConfig, generate
from radjepa_cli.data.prepare import PrepareConfig, prepare_data

runner = CliRunner()
_PHANTOM = PhantomConfig(size=40, seed=0)
MIMIC_META = ("dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,"
              "StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
              "PatientOrientationCodeSequence_CodeMeaning")


def xrv_rows(name: str, n: int | None = None) -> list[str]:
    """Header + first n rows (all when None) of a real dataset CSV shipped in torchxrayvision's package data."""
    with gzip.open(package_file("torchxrayvision", "data", name), "rt") as f:
        lines = [ln.rstrip("\n") for ln in f]
    return lines if n is None else lines[:n + 1]


def save_jpg(path, i):
    save_png(path.with_suffix(".png"), generate(i, _PHANTOM).image).rename(path)  # decoder sniffs content


def mimic_tree(root, subjects_per_folder=3, folders=range(10, 20)):
    """MIMIC-CXR-JPG's three CSVs (official headers) for 2 images x `subjects_per_folder` x 10 p-folders."""
    root.mkdir(parents=True, exist_ok=True)
    meta, chex, split, paths = [MIMIC_META], [f"subject_id,study_id,{','.join(CHEXPERT_14)}"], \
        ["dicom_id,study_id,subject_id,split"], []
    for f in folders:
        for s in range(subjects_per_folder):
            sid, study = f"{f}{s:06d}", f"5{f}{s:05d}"
            chex.append(f"{sid},{study},1.0" + "," * 13)
            for v, view in enumerate(("PA", "LATERAL")):
                dicom = f"d{f}-{s}-{v}"
                meta.append(f"{dicom},{sid},{study},CHEST (PA AND LAT),{view},40,40,21800506,213014.531,"
                            "Chest (PA and Lateral),postero-anterior,Erect")
                split.append(f"{dicom},{study},{sid},{'test' if s == 0 else 'train'}")
                paths.append(root / f"files/p{f}/p{sid}/s{study}/{dicom}.jpg")
    for name, rows in (("metadata", meta), ("chexpert", chex), ("split", split)):
        with gzip.open(root / f"mimic-cxr-2.0.0-{name}.csv.gz", "wt") as fh:
            fh.write("\n".join(rows) + "\n")
    return paths


def cli(*args):
    return runner.invoke(app, ["prepare-data", *map(str, args), "--contact-sheet", "0"], terminal_width=250)


def test_partial_mimic_plans_only_present_images_and_summarises_the_rest(tmp_path):
    """Items 1-2: only files/p10 downloaded → no empty shard, one grouped summary, --n counts usable images."""
    paths = mimic_tree(tmp_path / "mimic")
    present = [p for p in paths if "/files/p10/" in str(p)]
    for i, p in enumerate(present):
        save_jpg(p, i)
    res = cli("mimic-cxr", tmp_path / "mimic", "--out", tmp_path / "o", "--size", 32, "--shard-size", 2,
              "--salt", "s")
    assert res.exit_code == 0, res.output
    m = read_manifest(tmp_path / "o")
    assert m["counts"]["total"] == len(present) == 6 and m["rejected"] == []
    assert all(s["samples"] > 0 for s in m["shards"]) and m["empty_shards"] == []
    tars = sorted(p.name for p in (tmp_path / "o").glob("*.tar"))
    assert tars == sorted(s["name"] for s in m["shards"]) and len(tars) == 3  # 4 train + 2 test, 2 a shard
    assert m["missing"]["missing"] == 54 and m["missing"]["groups"]["p10"] == [6, 6]
    assert m["missing"]["groups"]["p19"] == [0, 6] and m["missing"]["base"] == str(tmp_path / "mimic" / "files")
    assert "54 of 60 images" in m["missing"]["text"] and "only p10 present" in m["missing"]["text"]
    assert res.output.count("missing:") == 1 and "only p10 present" in res.output
    # --n counts usable images: 4 of the 6 present, not 4 of 60 rows (which may all be absent)
    m = prepare_data(PrepareConfig(dataset="mimic-cxr", root=str(tmp_path / "mimic"), out=str(tmp_path / "n"),
                                   n=4, size=32, salt="s", contact_sheet=0))
    assert m["counts"]["total"] == 4 and m["excluded"] == {"n_cap": 2}


def test_rerun_after_more_folders_arrive_and_after_a_bad_file_is_replaced(tmp_path):
    """Item 3: a rerun re-examines what was missing or unreadable; --overwrite redoes everything."""
    paths = mimic_tree(tmp_path / "mimic", subjects_per_folder=2, folders=(10, 11))
    for i, p in enumerate(paths[:4]):  # files/p10 only
        save_jpg(p, i)
    cfg = dict(dataset="mimic-cxr", root=str(tmp_path / "mimic"), out=str(tmp_path / "o"), size=32, shard_size=3,
               contact_sheet=0)
    assert prepare_data(PrepareConfig(**cfg))["counts"]["total"] == 4
    for i, p in enumerate(paths[4:]):  # files/p11 arrives; one of its files is still a partial download
        save_jpg(p, 4 + i)
    paths[-1].write_bytes(paths[-1].read_bytes()[:100])
    m = prepare_data(PrepareConfig(**cfg))
    assert m["counts"]["total"] == 7 and m["missing"] is None and m["complete"]
    assert [r["path"] for r in m["rejected"]] == [str(paths[-1])]
    assert not list((tmp_path / "o").glob("*.jsonl"))  # the journal is folded into the final manifest
    save_jpg(paths[-1], 7)  # the download finishes: the rejection is re-examined without --overwrite
    m = prepare_data(PrepareConfig(**cfg))
    assert m["counts"]["total"] == 8 and m["rejected"] == []
    assert sorted(r.key for r in iter_records(tmp_path / "o")) == sorted(p.stem for p in paths)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "o").glob("*.tar")}
    m = prepare_data(PrepareConfig(**cfg))  # nothing changed: nothing rewritten
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "o").glob("*.tar")} == before
    m = prepare_data(PrepareConfig(**cfg, overwrite=True))
    assert all(p.stat().st_mtime_ns != before[p.name] for p in (tmp_path / "o").glob("*.tar"))
    assert m["counts"]["total"] == 8


def test_interrupted_run_resumes_from_the_journal(tmp_path, monkeypatch):
    """The manifest is not rewritten per shard: finished shards are journal lines, and a resumed run keeps them."""
    paths = mimic_tree(tmp_path / "mimic", subjects_per_folder=2, folders=(10, 11))
    for i, p in enumerate(paths):
        save_jpg(p, i)
    cfg = dict(dataset="mimic-cxr", root=str(tmp_path / "mimic"), out=str(tmp_path / "o"), size=32, shard_size=2,
               contact_sheet=0, salt="k")
    import radjepa_cli.data.prepare as prep
    real, calls = prep.ShardWriter.close, []

    def close_then_crash(self):
        calls.append(self.path.name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user presses Ctrl-C while the third shard is finishing
        return real(self)
    monkeypatch.setattr(prep.ShardWriter, "close", close_then_crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(PrepareConfig(**cfg))
    stub = json.loads((tmp_path / "o/manifest.json").read_text())
    assert not stub["complete"] and len(stub["shards"]) == 2
    journal = (tmp_path / "o/manifest.shards.jsonl").read_text().splitlines()
    assert len(journal) == 2
    done = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "o").glob("*.tar")}
    monkeypatch.setattr(prep.ShardWriter, "close", real)
    m = prepare_data(PrepareConfig(**cfg))
    assert m["complete"] and m["counts"]["total"] == 8 and len(m["shards"]) == 4
    assert all((tmp_path / "o" / n).stat().st_mtime_ns == t for n, t in done.items())


def test_all_rejected_shard_is_recorded_but_not_written(tmp_path):
    (tmp_path / "in").mkdir()
    save_png(tmp_path / "in/a.png", generate(0, _PHANTOM).image)
    for name in ("b", "c"):
        (tmp_path / f"in/{name}.png").write_text("not an image")
    (tmp_path / "in/labels.csv").write_text("path,split\na.png,train\nb.png,val\nc.png,val\n")
    m = prepare_data(PrepareConfig(dataset="folder", root=str(tmp_path / "in"), out=str(tmp_path / "o"), size=32,
                                   contact_sheet=0))
    assert [s["name"] for s in m["shards"]] == ["train-000000.tar"]
    assert [s["name"] for s in m["empty_shards"]] == ["val-000000.tar"] and len(m["rejected"]) == 2
    assert not (tmp_path / "o/val-000000.tar").exists()


def nih_tree(root, n=6, lists=True):
    rows = xrv_rows("Data_Entry_2017_v2020.csv.gz", n)
    root.mkdir(parents=True)
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(rows) + "\n")
    names = [r.split(",")[0] for r in rows[1:]]
    if lists:
        (root / "test_list.txt").write_text("\n".join(names[-2:]) + "\n")
        (root / "train_val_list.txt").write_text("\n".join(names[:-2]) + "\n")
    for i, name in enumerate(names):
        save_png(root / "images_001" / "images" / name, generate(i, _PHANTOM).image)
    return rows, names


def test_nih_root_one_level_up_keeps_the_official_test_split(tmp_path):
    """Item 4: lists are found next to the CSV; absent lists give a loud warning."""
    _, names = nih_tree(tmp_path / "downloads" / "ChestX-ray14")
    m = prepare_data(PrepareConfig(dataset="nih14", root=str(tmp_path / "downloads"), out=str(tmp_path / "o"),
                                   size=32, salt="x", contact_sheet=0, test_frac=0.0))
    test = {r.key for r in iter_records(tmp_path / "o", split="test")}
    assert test == {n[:-4] for n in names[-2:]} and m["source"]["warnings"] == []
    (tmp_path / "downloads/ChestX-ray14/test_list.txt").unlink()
    (tmp_path / "downloads/ChestX-ray14/train_val_list.txt").unlink()
    res = cli("nih14", tmp_path / "downloads", "--out", tmp_path / "o2", "--size", 32)
    assert res.exit_code == 0, res.output
    assert "WARNING:" in res.output and "no test_list.txt" in " ".join(res.output.split())
    assert "hashed" in read_manifest(tmp_path / "o2")["source"]["warnings"][0]


def test_nih_prefers_the_v2020_entry_list_and_says_which_file_it_read(tmp_path):
    """Item 6: with Data_Entry_2017.csv beside Data_Entry_2017_v2020.csv, v2020 is read (and named)."""
    rows, names = nih_tree(tmp_path / "nih", n=3)
    old = [rows[0]] + [r.replace(",PA,", ",AP,") for r in rows[1:]]  # a view the 2020 revision corrected
    (tmp_path / "nih/Data_Entry_2017.csv").write_text("\n".join(old) + "\n")
    res = cli("nih14", tmp_path / "nih", "--out", tmp_path / "o", "--size", 32)
    assert res.exit_code == 0, res.output
    m = read_manifest(tmp_path / "o")
    assert m["counts"]["view"] == {"PA": 3}
    assert any("Data_Entry_2017_v2020.csv" in n and "Data_Entry_2017.csv" in n for n in m["source"]["notes"])
    assert "Data_Entry_2017_v2020.csv" in res.output


def test_nih_real_csv_with_a_handful_of_images(tmp_path):
    """The real 112,120-row entry list, 5 images on disk: 5 samples, no empty shard, one summary."""
    rows = xrv_rows("Data_Entry_2017_v2020.csv.gz")
    assert len(rows) == 112_121
    (tmp_path / "nih").mkdir()
    (tmp_path / "nih/Data_Entry_2017_v2020.csv").write_text("\n".join(rows) + "\n")
    for i, r in enumerate(rows[1:6]):
        save_png(tmp_path / "nih/images_001/images" / r.split(",")[0], generate(i, _PHANTOM).image)
    m = prepare_data(PrepareConfig(dataset="nih14", root=str(tmp_path / "nih"), out=str(tmp_path / "o"), size=32,
                                   salt="x", contact_sheet=0))
    assert m["counts"]["total"] == 5 and len(list((tmp_path / "o").glob("*.tar"))) == len(m["shards"]) <= 3
    assert m["missing"]["missing"] == 112_115 and m["rejected"] == []
    assert (tmp_path / "o/manifest.json").stat().st_size < 200_000


def test_rsna_root_one_level_up_finds_images_next_to_the_csv(tmp_path):
    """Item 5: the images folder is looked for next to the labels CSV; when absent the error names both."""
    import zipfile
    with zipfile.ZipFile(package_file("torchxrayvision", "data", "kaggle_stage_2_train_labels.csv.zip")) as z:
        lines = z.read(z.namelist()[0]).decode().splitlines()[:4]
    comp = tmp_path / "kaggle" / "rsna-pneumonia-detection-challenge"
    (comp / "stage_2_train_images").mkdir(parents=True)
    (comp / "stage_2_train_labels.csv").write_text("\n".join(lines) + "\n")
    pids = sorted({ln.split(",")[0] for ln in lines[1:]})
    for i, pid in enumerate(pids):
        make_dicom(comp / "stage_2_train_images" / f"{pid}.dcm",
                   (generate(i, _PHANTOM).image * 255).astype(np.int64), bits_stored=8, view="PA", modality="CR")
    m = prepare_data(PrepareConfig(dataset="rsna", root=str(tmp_path / "kaggle"), out=str(tmp_path / "o"), size=32,
                                   salt="x", contact_sheet=0))
    assert m["counts"]["total"] == len(pids) and m["missing"] is None
    (comp / "stage_2_train_images").rename(comp / "elsewhere")
    with pytest.raises(FileNotFoundError, match="stage_2_train_labels.csv") as e:
        prepare_data(PrepareConfig(dataset="rsna", root=str(tmp_path / "kaggle"), out=str(tmp_path / "o3")))
    assert "stage_2_train_images" in str(e.value)


AIMI = "chexpertchestxrays-u20210408"
BATCH1 = "CheXpert-v1.0 batch 1 (validate & csv)"


def aimi_tree(root):
    """Stanford AIMI's current CheXpert download with real train.csv rows: CSVs and valid/ in batch 1, train
    patients spread over the 'train N' batches."""
    rows = xrv_rows("chexpert_train.csv.gz", 4)
    rows = [rows[0]] + [r.replace("CheXpert-v1.0-small/", "CheXpert-v1.0/") for r in rows[1:]]
    b1 = root / AIMI / BATCH1
    b1.mkdir(parents=True)
    (b1 / "train.csv").write_text("\n".join(rows) + "\n")
    valid = rows[1].replace("/train/patient00001/", "/valid/patient64541/")
    (b1 / "valid.csv").write_text(rows[0] + "\n" + valid + "\n")
    save_jpg(b1 / "valid/patient64541/study1/view1_frontal.jpg", 0)
    for i, r in enumerate(rows[1:]):
        patient_study_file = r.split(",")[0].split("/")[2:]
        batch = "CheXpert-v1.0 batch 2 (train 1)" if "patient00001" in r else "CheXpert-v1.0 batch 3 (train 2)"
        save_jpg(root / AIMI / batch / "/".join(patient_study_file), i + 1)
    return rows


@pytest.mark.parametrize("where", ["top", "batch1", "above"])
def test_chexpert_stanford_aimi_batches(tmp_path, where):
    """Item 7: ROOT at the download's top, at batch 1 (the CSVs' folder) or one level above: all 5 images."""
    rows = aimi_tree(tmp_path)
    root = {"top": tmp_path / AIMI, "batch1": tmp_path / AIMI / BATCH1, "above": tmp_path}[where]
    m = prepare_data(PrepareConfig(dataset="chexpert", root=str(root), out=str(tmp_path / "o"), size=32, salt="s",
                                   contact_sheet=0))
    assert m["missing"] is None and m["rejected"] == []
    assert m["counts"]["total"] == 5 and m["counts"]["split"]["val"] == 1
    recs = {r.key: r for r in iter_records(tmp_path / "o")}
    assert recs["train_patient00001_study1_view1_frontal"].labels["Support Devices"] == 1
    assert len(rows) == 5 and any("train.csv" in n for n in m["source"]["notes"])
