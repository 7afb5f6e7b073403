"""Readers on the layouts of the official downloads (issue 17, items 8-10): VinDr-CXR's per-split label names,
Chest ImaGenome's gold-standard list and resized MIMIC copies, IU-Xray's MeSH, views and Kaggle / R2Gen copies."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fixtures.cxr_files import make_dicom, save_png
from radjepa_cli.data.loader import iter_records
from radjepa_cli.data.phantom import PhantomConfig, generate
from radjepa_cli.data.prepare import PrepareConfig, prepare_data
from radjepa_cli.data.sources import get_source

_PHANTOM = PhantomConfig(size=40, seed=0)
# PhysioNet VinDr-CXR 1.0.0 annotations/image_labels_{train,test}.csv: one row per reader, 0/1 per finding.
VINDR_FINDINGS = ["Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
                  "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
                  "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion",
                  "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD",
                  "Lung tumor", "Pneumonia", "Tuberculosis"]


def image(i):
    return generate(i, _PHANTOM).image


def test_vindr_label_names_agree_across_splits_with_root_one_level_up(tmp_path):
    """Item 8: train says 'Other diseases', test 'Other disease': one key in every shard."""
    from radjepa_cli.data.sources.vindr import canonical
    assert canonical("Other disease") == canonical("Other diseases") == "Other diseases"
    base = tmp_path / "physionet.org/files/vindr-cxr/1.0.0"
    (base / "annotations").mkdir(parents=True)
    for split, other, image_id, rad in (("train", "Other diseases", "a1", "R8"), ("test", "Other disease", "b1", "R1")):
        header = ["image_id", "rad_id" if split == "train" else "rad_ID", *VINDR_FINDINGS, other, "No finding"]
        row = [image_id, rad] + ["0"] * len(VINDR_FINDINGS) + ["1", "0"]
        (base / f"annotations/image_labels_{split}.csv").write_text(",".join(header) + "\n" + ",".join(row) + "\n")
        (base / split).mkdir()
        make_dicom(base / split / f"{image_id}.dicom", (image(0) * 4095).astype(np.int64))
    m = prepare_data(PrepareConfig(dataset="vindr-cxr", root=str(tmp_path / "physionet.org"), out=str(tmp_path / "o"),
                                   size=32, salt="s", contact_sheet=0))
    assert m["counts"]["total"] == 2 and m["missing"] is None
    recs = {r.split: r for r in iter_records(tmp_path / "o")}
    assert set(recs["test"].labels) == set(recs[next(s for s in recs if s != "test")].labels)
    assert recs["test"].labels["Other diseases"] == 1 and "Other disease" not in recs["test"].labels
    assert recs["test"].labels["Pleural Thickening"] == 0  # the paper's names for its six findings


# ------------------------------------------------------------------------------------------------- IU-Xray

def real_reports(n: int) -> list[dict]:
    from radjepa_cli.data.embedded import iu_xray_reports
    from radjepa_cli.data.sources.iuxray import iter_reports
    wanted = {f"CXR{i}" for i in range(1, n + 1)}
    return sorted((r for r in iter_reports(iu_xray_reports()) if r["id"] in wanted), key=lambda r: int(r["id"][3:]))


def test_iu_xray_mesh_maps_pleural_thickening_on_the_real_reports():
    """Item 10: 'Thickening/pleura/…' (47 real reports) → Pleural Thickening."""
    from radjepa_cli.data.embedded import iu_xray_reports
    from radjepa_cli.data.sources.iuxray import iter_reports, mesh_labels
    reps = list(iter_reports(iu_xray_reports()))
    assert sum(mesh_labels(r["mesh_major"]).get("Pleural Thickening") == 1 for r in reps) == 47
    labels = mesh_labels(["Thickening/pleura/apex/bilateral/mild"])
    assert labels["Pleural Thickening"] == 1 and labels["No Finding"] == 0
    assert mesh_labels(["Thickening/bronchovascular"])["Pleural Thickening"] == 0


def kaggle_tree(root, reports):
    """Kaggle's 'Chest X-rays (Indiana University)': indiana_reports.csv (uid, MeSH, Problems, image, indication,
    comparison, findings, impression), indiana_projections.csv (uid, filename, projection), images_normalized/."""
    import csv
    root.mkdir(parents=True)
    with (root / "indiana_reports.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"])
        for r in reports:
            w.writerow([r["id"][3:], ";".join(r["mesh_major"]), ";".join(h.split("/")[0] for h in r["mesh_major"]),
                        r["caption"], r["indication"], r["comparison"], r["findings"], r["impression"]])
    views = {}
    with (root / "indiana_projections.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "filename", "projection"])
        for r in reports:
            for k, image_id in enumerate(r["images"]):
                name = f"{image_id[3:]}.dcm.png"
                views[image_id] = "Frontal" if k == 0 else "Lateral"
                w.writerow([r["id"][3:], name, views[image_id]])
                save_png(root / "images/images_normalized" / name, image(k))
    return views


def test_iu_xray_kaggle_copy_with_views(tmp_path):
    """Item 10: Kaggle's copy is read (ROOT a level up); views come from indiana_projections.csv."""
    reports = real_reports(3)
    kaggle_tree(tmp_path / "archive", reports)
    src = get_source("iu-xray", tmp_path)
    items = {it.key: it for it in src.items()}
    assert sorted(items) == sorted(i.replace(".", "-") for r in reports for i in r["images"])
    cxr1 = items["CXR1_1_IM-0001-3001"]
    assert cxr1.view == "PA" and items["CXR1_1_IM-0001-4001"].view == "LATERAL"  # caption 'Xray Chest PA and Lateral'
    assert cxr1.patient == "CXR1" and cxr1.meta["labels"]["No Finding"] == 1
    assert cxr1.meta["findings"].startswith("The cardiac silhouette")
    m = prepare_data(PrepareConfig(dataset="iu-xray", root=str(tmp_path), out=str(tmp_path / "o"), size=32, salt="s",
                                   contact_sheet=0))
    assert m["counts"]["total"] == len(items) and m["missing"] is None
    assert m["counts"]["view"]["LATERAL"] == len(reports)


def test_iu_xray_open_i_views_from_projections_and_r2gen_copy(tmp_path):
    """Item 10: Open-i's tgz + PNGs take views from indiana_projections.csv beside them; R2Gen's iu_xray/
    (annotation.json + images/CXR…/0.png) is read with its own split, labels joined from the Open-i XML."""
    import tarfile
    from radjepa_cli.data.embedded import iu_xray_reports
    reports = real_reports(3)
    root = tmp_path / "openi"
    root.mkdir()
    with tarfile.open(iu_xray_reports()) as src, tarfile.open(root / "NLMCXR_reports.tgz", "w:gz") as dst:
        for n in ("1", "2", "3"):
            m = src.getmember(f"ecgen-radiology/{n}.xml")
            dst.addfile(m, src.extractfile(m))
    kaggle = kaggle_tree(tmp_path / "kaggle", reports)
    (tmp_path / "kaggle/indiana_reports.csv").unlink()
    (tmp_path / "kaggle/indiana_projections.csv").rename(root / "indiana_projections.csv")
    for r in reports:
        for k, image_id in enumerate(r["images"]):
            save_png(root / "NLMCXR_png" / f"{image_id}.png", image(k))
    items = {it.key: it for it in get_source("iu-xray", root).items()}
    assert {k: it.view != "LATERAL" for k, it in items.items()} == {k: v == "Frontal" for k, v in kaggle.items()}
    assert items["CXR1_1_IM-0001-3001"].view == "PA"  # frontal + the study caption 'Xray Chest PA and Lateral'
    # R2Gen: annotation.json + images/{id}/{i}.png, split train / val / test
    r2 = tmp_path / "r2gen" / "iu_xray"
    studies = {split: [] for split in ("train", "val", "test")}
    for split, r in zip(studies, reports):
        sid = r["images"][0].rsplit("-", 1)[0]  # R2Gen's study id: CXR1_1_IM-0001
        paths = [f"{sid}/{k}.png" for k in range(len(r["images"]))]
        studies[split].append({"id": sid, "report": r["findings"], "image_path": paths, "split": split})
        for k, rel in enumerate(paths):
            save_png(r2 / "images" / rel, image(k))
    r2.mkdir(exist_ok=True)
    (r2 / "annotation.json").write_text(json.dumps(studies))
    items = list(get_source("iu-xray", tmp_path / "r2gen").items())
    assert [it.split for it in items] == ["train"] * 2 + ["val"] * 2 + ["test"] * 2
    assert all(it.path.is_file() for it in items) and items[0].meta["findings"].startswith("The cardiac")
    assert items[0].meta["labels"] == {}  # no Open-i XML under this ROOT: no MeSH labels
    import shutil
    shutil.copy(root / "NLMCXR_reports.tgz", tmp_path / "r2gen" / "NLMCXR_reports.tgz")
    items = list(get_source("iu-xray", tmp_path / "r2gen").items())
    assert items[0].meta["labels"]["No Finding"] == 1 and items[0].key == "CXR1_1_IM-0001-3001"
    m = prepare_data(PrepareConfig(dataset="iu-xray", root=str(tmp_path / "r2gen"), out=str(tmp_path / "o"), size=32,
                                   salt="s", contact_sheet=0))
    assert m["counts"]["split"] == {"train": 2, "val": 2, "test": 2}


# ---------------------------------------------------------------------------------------------- ImaGenome

MIMIC_META = ("dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,"
              "StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
              "PatientOrientationCodeSequence_CodeMeaning")


def imagenome_tree(root, dicoms, original=(80, 80), stored=(40, 40)):
    """Scene graphs whose boxes are in the original DICOM's pixels, over a MIMIC-JPG copy stored at `stored`."""
    from PIL import Image
    sid, study = "10000032", "50414267"
    for k, dicom in enumerate(dicoms):
        p = root / f"mimic/files/p10/p{sid}/s{study}/{dicom}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image(k) * 255).astype(np.uint8)).resize(stored[::-1]).save(p, format="PNG")
        objects = [{"bbox_name": f"{side} {level} lung zone", "original_x1": x, "original_y1": y,
                    "original_x2": x + 20, "original_y2": y + 16}
                   for side, x in (("right", 8), ("left", 50)) for level, y in (("upper", 8), ("mid", 30), ("lower", 52))]
        g = root / "imagenome/silver_dataset/scene_graph" / f"{dicom}_SceneGraph.json"
        g.parent.mkdir(parents=True, exist_ok=True)
        g.write_text(json.dumps({"image_id": dicom, "patient_id": int(sid), "study_id": int(study),
                                 "viewpoint": "PA", "objects": objects}))
    return sid, study


def test_imagenome_leaves_out_gold_images_and_scales_boxes_of_a_resized_copy(tmp_path):
    """Item 9: images_to_avoid.csv honoured; a half-size MIMIC-JPG copy gets boxes scaled by metadata Rows/Columns."""
    dicoms = ["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962"]
    sid, study = imagenome_tree(tmp_path, dicoms)
    splits = tmp_path / "imagenome/silver_dataset/splits"
    splits.mkdir()
    (splits / "train.csv").write_text(",subject_id,study_id,dicom_id,path,ViewPosition\n" + "".join(
        f"{i},{sid},{study},{d},files/p10/p{sid}/s{study}/{d}.dcm,PA\n" for i, d in enumerate(dicoms)))
    (splits / "images_to_avoid.csv").write_text("subject_id,study_id,dicom_id,path,ViewPosition\n"
                                                f"{sid},{study},{dicoms[1]},files/p10/p{sid}/s{study}/{dicoms[1]}.dcm,PA\n")
    (tmp_path / "mimic/mimic-cxr-2.0.0-metadata.csv").write_text(MIMIC_META + "\n" + "".join(
        f"{d},{sid},{study},CHEST (PA AND LAT),PA,80,80,21800506,213014.531,Chest (PA and Lateral),"
        "postero-anterior,Erect\n" for d in dicoms))
    m = prepare_data(PrepareConfig(dataset="imagenome", root=str(tmp_path), out=str(tmp_path / "o"), size=40,
                                   salt="s", contact_sheet=0))
    assert m["counts"]["total"] == 1 and m["rejected"] == []
    assert any("1 gold-standard image" in n for n in m["source"]["notes"])
    rec = next(iter_records(tmp_path / "o"))
    assert rec.key == dicoms[0] and rec.split == "train"
    ru = rec.masks["right_upper"]  # original [8, 8, 28, 24] → half size [4, 4, 14, 12]
    assert ru.sum() == 10 * 8 and ru[4:12, 4:14].all()
    assert rec.masks["left_lower"][26:34, 25:35].all() and rec.masks["left_lower"].sum() == 80


def test_imagenome_resized_copy_without_metadata_is_refused_with_a_reason(tmp_path):
    imagenome_tree(tmp_path, ["d1"])
    m = prepare_data(PrepareConfig(dataset="imagenome", root=str(tmp_path), out=str(tmp_path / "o"), size=40,
                                   salt="s", contact_sheet=0))
    assert m["counts"]["total"] == 0 and len(m["rejected"]) == 1
    assert "resized MIMIC-CXR-JPG copy" in m["rejected"][0]["reason"]
    assert any("images_to_avoid.csv" in w for w in m["source"]["warnings"])
    assert any("metadata" in w for w in m["source"]["warnings"])


# ------------------------------------------------------------------------------------------- ROOT one level up

def test_mimic_padchest_brax_read_with_root_one_level_up(tmp_path):
    """Every reader finds its parts relative to the anchor file, so ROOT may be the folder above the dataset."""
    import csv
    import gzip
    from PIL import Image
    from radjepa_cli.data.embedded import package_file
    from radjepa_cli.data.labels import CHEXPERT_14
    from test_prepare_partial import mimic_tree, save_jpg
    for i, p in enumerate(mimic_tree(tmp_path / "mimic" / "physionet.org" / "mimic-cxr-jpg" / "2.1.0",
                                     subjects_per_folder=1, folders=(10,))):
        save_jpg(p, i)
    with gzip.open(package_file("torchxrayvision", "data",
                                "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"), "rt") as f:
        rows = [next(f).rstrip("\n") for _ in range(3)]
    pad = tmp_path / "padchest" / "BIMCV-PadChest-FULL"
    pad.mkdir(parents=True)
    (pad / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv").write_text("\n".join(rows) + "\n")
    for i, r in enumerate(csv.DictReader(rows)):
        (pad / r["ImageDir"]).mkdir(exist_ok=True)
        Image.fromarray((image(i) * 4095).astype(np.uint16)).save(pad / r["ImageDir"] / r["ImageID"])
    brax = tmp_path / "brax" / "brax-1.1.0"
    brax.mkdir(parents=True)
    (brax / "master_spreadsheet_update.csv").write_text(
        f"DicomPath,PngPath,PatientID,AccessionNumber,ViewPosition,{','.join(CHEXPERT_14)}\n"
        f"images/id_1/s1/a.dcm,images/id_1/s1/a.png,id_1,ACC123,PA,,1,,,,,,,,,,,,\n")
    save_png(brax / "images/id_1/s1/a.png", image(0))
    for name, folder, n in (("mimic-cxr", "mimic", 2), ("padchest", "padchest", 2), ("brax", "brax", 1)):
        items = list(get_source(name, tmp_path / folder).items())
        assert len(items) == n and all(it.path.is_file() for it in items), name
