"""Dataset sources on tiny trees that mimic each official layout (real CSV headers/rows where the packages carry
them), plus the real IU-Xray reports for the report parser."""
from __future__ import annotations

import gzip
import json
import tarfile

import numpy as np
import pytest

from fixtures.cxr_files import make_dicom, save_png
from radjepa_cli.data.embedded import iu_xray_reports, package_file
from radjepa_cli.data.labels import CHEXPERT_14, LUNG_ZONES, RIBS, VINDR_6
from radjepa_cli.data.phantom import PhantomConfig, generate
from radjepa_cli.data.prepare import PrepareConfig, prepare_data
from radjepa_cli.data.sources import SOURCES, get_source, source_class
from radjepa_cli.data.sources.iuxray import iter_reports, mesh_labels, parse_report
from radjepa_cli.data.sources.reports import report_sections

_PHANTOM = PhantomConfig(size=48, seed=0)


def phantom(i: int) -> np.ndarray:
    return generate(i, _PHANTOM).image


def xrv_csv(name: str, n: int) -> list[str]:
    """Header + first n rows of a real dataset CSV shipped in torchxrayvision's package data."""
    with gzip.open(package_file("torchxrayvision", "data", name), "rt") as f:
        return [next(f).rstrip("\n") for _ in range(n + 1)]


def load_all(name, root, **kw):
    src = get_source(name, root, **kw)
    items = list(src.items())
    return src, items, [src.load(it) for it in items]


def test_registry_imports_every_source():
    for name in SOURCES:
        assert source_class(name).name == name
    with pytest.raises(KeyError, match="known: synthetic"):
        get_source("nope", "/tmp")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_source("chexpert", "/definitely/missing")


def test_mimic_cxr(tmp_path):
    labels = ",".join(CHEXPERT_14)
    (tmp_path / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns\n"
        "d1,10000032,50414267,CHEST (PA AND LAT),PA,48,48\nd2,10000032,50414267,CHEST (PA AND LAT),LATERAL,48,48\n"
        "d3,10000764,57375967,CHEST (PORTABLE AP),AP,48,48\n")
    (tmp_path / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        f"subject_id,study_id,{labels}\n10000032,50414267,1.0{',' * 13}\n"
        f"10000764,57375967,,,1.0,,,,,,-1.0,,0.0,,,\n")
    with gzip.open(tmp_path / "mimic-cxr-2.0.0-split.csv.gz", "wt") as f:
        f.write("dicom_id,study_id,subject_id,split\nd1,50414267,10000032,train\nd2,50414267,10000032,validate\n"
                "d3,57375967,10000764,test\n")
    for i, (sid, study, dicom) in enumerate([("10000032", "50414267", "d1"), ("10000032", "50414267", "d2"),
                                             ("10000764", "57375967", "d3")]):
        save_png(tmp_path / f"files/p{sid[:2]}/p{sid}/s{study}/{dicom}.png", phantom(i))
        (tmp_path / f"files/p{sid[:2]}/p{sid}/s{study}/{dicom}.png").rename(
            tmp_path / f"files/p{sid[:2]}/p{sid}/s{study}/{dicom}.jpg")  # decoder sniffs content, not suffix
    rep = tmp_path / "mimic-cxr-reports/files/p10/p10000032/s50414267.txt"
    rep.parent.mkdir(parents=True)
    rep.write_text("                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n"
                   " INDICATION:  ___F with cough\n\n FINDINGS: \n\n There is no focal consolidation, pleural\n"
                   " effusion or pneumothorax.\n\n IMPRESSION: \n\n No acute cardiopulmonary process.\n")
    _, items, recs = load_all("mimic-cxr", tmp_path)
    assert [(it.key, it.split, it.view, it.patient) for it in items] == [
        ("d1", "train", "PA", "10000032"), ("d2", "val", "LATERAL", "10000032"), ("d3", "test", "AP", "10000764")]
    assert recs[0].labels["No Finding"] == 1 and recs[2].labels["Cardiomegaly"] == 1
    assert recs[2].labels["Atelectasis"] == -1 and recs[2].labels["Pleural Effusion"] == 0
    assert recs[2].labels["Fracture"] is None
    assert recs[0].findings == "There is no focal consolidation, pleural effusion or pneumothorax."
    assert recs[1].impression == "No acute cardiopulmonary process." and recs[2].findings == ""
    assert recs[0].image.shape == (48, 48) and recs[0].study == "50414267"


def test_report_sections_handles_missing_and_ordering():
    s = report_sections("IMPRESSION: Small left effusion.\nFINDINGS: Blunted left angle.\nRECOMMENDATION(S): none")
    assert s == {"findings": "Blunted left angle.", "impression": "Small left effusion."}
    assert report_sections("no headers at all") == {"findings": "", "impression": ""}


def test_chexpert_with_real_rows(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    rows = xrv_csv("chexpert_train.csv.gz", 3)
    root.mkdir()
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    (root / "valid.csv").write_text(rows[0] + "\n" + rows[1].replace("/train/patient00001/", "/valid/patient64541/")
                                    + "\n")
    for i, line in enumerate(rows[1:] + [rows[1].replace("/train/patient00001/", "/valid/patient64541/")]):
        save_png(tmp_path / line.split(",")[0], phantom(i))
    _, items, recs = load_all("chexpert", root)
    assert [it.split for it in items] == ["train"] * 3 + ["val"]
    assert items[0].patient == "patient00001" and items[0].view == "AP"
    assert items[0].key == "train_patient00001_study1_view1_frontal"
    # row 2 of the real CSV: Cardiomegaly -1, Lung Opacity 1, Pleural Effusion -1, blank No Finding
    assert recs[1].labels["Cardiomegaly"] == -1 and recs[1].labels["Lung Opacity"] == 1
    assert recs[1].labels["No Finding"] is None and recs[0].labels["Support Devices"] == 1
    assert all(r.image.shape == (48, 48) for r in recs)


def test_nih14_with_real_rows(tmp_path):
    rows = xrv_csv("Data_Entry_2017_v2020.csv.gz", 4)
    (tmp_path / "Data_Entry_2017_v2020.csv").write_text("\n".join(rows) + "\n")
    names = [r.split(",")[0] for r in rows[1:]]
    (tmp_path / "test_list.txt").write_text(names[3] + "\n")
    (tmp_path / "train_val_list.txt").write_text("\n".join(names[:3]) + "\n")
    for i, n in enumerate(names):
        save_png(tmp_path / "images_001" / "images" / n, phantom(i))
    _, items, recs = load_all("nih14", tmp_path)
    assert [it.split for it in items] == ["trainval"] * 3 + ["test"]
    assert items[0].patient == "1" and items[0].view == "PA"
    assert recs[1].labels["Cardiomegaly"] == 1 and recs[1].labels["Emphysema"] == 1 and recs[1].labels["Mass"] == 0
    m = prepare_data(PrepareConfig(dataset="nih14", root=str(tmp_path), out=str(tmp_path / "o"), size=32, salt="x", contact_sheet=0))
    assert m["counts"]["split"].get("test") == 1 and sum(m["counts"]["split"].values()) == 4


def test_padchest_with_real_rows_and_12_bit_pngs(tmp_path):
    rows = xrv_csv("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", 2)
    (tmp_path / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv").write_text("\n".join(rows) + "\n")
    import csv
    parsed = list(csv.DictReader(rows))
    for i, r in enumerate(parsed):  # 12-bit values in a 16-bit PNG (BitsStored_DICOM = 12)
        img = (phantom(i) * 4095).astype(np.uint16)
        p = tmp_path / r["ImageDir"] / r["ImageID"]
        p.parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image
        Image.fromarray(img).save(p)
    _, items, recs = load_all("padchest", tmp_path)
    assert [it.view for it in items] == ["PA", "LATERAL"]
    assert recs[0].labels["No Finding"] == 1 and recs[0].labels["Cardiomegaly"] == 0
    assert recs[1].labels["Pulmonary Fibrosis"] == 1 and recs[1].labels["Lung Opacity"] == 1
    assert "kyphosis" in recs[1].extra["padchest_terms"]
    assert recs[0].image.max() > 0.9  # stretched by BitsStored, not left at 4095/65535


def test_brax(tmp_path):
    labels = ",".join(CHEXPERT_14)
    (tmp_path / "master_spreadsheet_update.csv").write_text(
        f"DicomPath,PngPath,PatientID,AccessionNumber,ViewPosition,{labels}\n"
        f"images/id_1/s1/a.dcm,images/id_1/s1/a.png,id_1,ACC123,PA,,1,,,,,,,,,,,,\n"
        f"images/id_2/s2/b.dcm,images/id_2/s2/b.png,id_2,ACC456,L,1,,,,,,,,,,,,,\n")
    save_png(tmp_path / "images/id_1/s1/a.png", phantom(0))
    save_png(tmp_path / "images/id_2/s2/b.png", phantom(1))
    _, items, recs = load_all("brax", tmp_path)
    assert [it.view for it in items] == ["PA", "LATERAL"] and items[0].patient == "id_1"
    assert recs[0].labels["Enlarged Cardiomediastinum"] == 1 and recs[1].labels["No Finding"] == 1
    m = prepare_data(PrepareConfig(dataset="brax", root=str(tmp_path), out=str(tmp_path / "o"), size=32, salt="s",
                                   contact_sheet=0))
    assert m["counts"]["total"] == 2
    blob = b"".join(p.read_bytes() for p in (tmp_path / "o").iterdir())
    assert b"ACC123" not in blob and b"id_1" not in blob  # paths embed patient ids: keys are hashes


def test_vindr_cxr_kaggle_and_physionet_layouts(tmp_path):
    ids = ["9a5094b2563a1ef3ff50dc5c7ff71345", "50a418190bc3fb1ef1633bf9678929b3"]
    (tmp_path / "train.csv").write_text(
        "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
        f"{ids[0]},Cardiomegaly,3,R10,1,1,5,5\n{ids[0]},No finding,14,R9,,,,\n{ids[0]},Pleural thickening,11,R8,1,1,2,2\n"
        f"{ids[1]},No finding,14,R11,,,,\n")
    for i, image_id in enumerate(ids):
        (tmp_path / "train").mkdir(exist_ok=True)
        make_dicom(tmp_path / "train" / f"{image_id}.dicom", (phantom(i) * 4095).astype(np.int64),
                   photometric="MONOCHROME1")
    _, items, recs = load_all("vindr-cxr", tmp_path)
    assert [it.split for it in items] == ["trainval", "trainval"]
    a = {r.key: r for r in recs}
    assert a[ids[0]].labels["Cardiomegaly"] == 1 and a[ids[0]].labels["Pleural Thickening"] == 1  # union of readers
    assert a[ids[0]].labels["Pleural Effusion"] == 0 and a[ids[1]].labels["No Finding"] == 1
    assert set(VINDR_6) <= set(a[ids[1]].labels)
    # MONOCHROME1 stored → inverted back (stored values = phantom, displayed = 1 - phantom, min-max scaled)
    assert np.corrcoef(a[ids[0]].image.ravel(), 1 - phantom(0).ravel())[0, 1] > 0.999
    # PhysioNet: annotations/image_labels_test.csv, one row per reader with 0/1 columns
    phys = tmp_path / "phys"
    (phys / "annotations").mkdir(parents=True)
    (phys / "annotations/image_labels_test.csv").write_text(
        "image_id,rad_ID,Aortic enlargement,Lung Opacity,Pleural effusion,No finding\n"
        "t1,R1,0,1,0,0\nt1,R2,1,0,0,0\n")
    items = list(get_source("vindr-cxr", phys).items())
    assert items[0].split == "test" and items[0].meta["labels"]["Aortic Enlargement"] == 1
    assert items[0].meta["labels"]["Lung Opacity"] == 1 and items[0].meta["labels"]["Pleural Effusion"] == 0


def test_rsna(tmp_path):
    (tmp_path / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\n"
        "0004cfab-14fd-4e49-80ba-63a80b6bddd6,,,,,0\n"
        "00436515-870c-4b36-a041-de91049b9ab4,4.0,8.0,12.0,16.0,1\n"
        "00436515-870c-4b36-a041-de91049b9ab4,24.0,8.0,12.0,16.0,1\n")
    (tmp_path / "stage_2_train_images").mkdir()
    for i, pid in enumerate(["0004cfab-14fd-4e49-80ba-63a80b6bddd6", "00436515-870c-4b36-a041-de91049b9ab4"]):
        make_dicom(tmp_path / "stage_2_train_images" / f"{pid}.dcm", (phantom(i) * 255).astype(np.int64),
                   bits_stored=8, view="AP", modality="CR")
    _, items, recs = load_all("rsna", tmp_path)
    assert len(items) == 2 and [it.view for it in items] == ["AP", "AP"]
    assert recs[0].labels == {"Pneumonia": 0} and recs[1].labels == {"Pneumonia": 1}
    np.testing.assert_allclose(recs[1].extra["boxes"], [[4 / 48, 8 / 48, 0.25, 1 / 3], [0.5, 8 / 48, 0.25, 1 / 3]],
                               atol=1e-4)  # fractions of the image size
    assert "boxes" not in recs[0].extra


def test_real_iu_xray_reports():
    reports = list(iter_reports(iu_xray_reports()))
    assert len(reports) == 3955
    assert sum(bool(r["findings"]) for r in reports) == 3425
    assert sum(len(r["images"]) for r in reports) == 7470
    cxr1 = next(r for r in reports if r["id"] == "CXR1")
    assert cxr1["findings"].startswith("The cardiac silhouette and mediastinum size are within normal limits.")
    assert cxr1["impression"] == "Normal chest x-XXXX." and cxr1["mesh_major"] == ["normal"]
    assert cxr1["images"] == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
    assert mesh_labels(["Cardiomegaly/mild", "Pleural Effusion/right"])["Cardiomegaly"] == 1
    assert mesh_labels(["normal"])["No Finding"] == 1 and mesh_labels(["No Indexing"]) == {}


def test_iu_xray_source_from_a_tgz_and_pngs(tmp_path):
    with tarfile.open(iu_xray_reports()) as src, tarfile.open(tmp_path / "NLMCXR_reports.tgz", "w:gz") as dst:
        for name in ("ecgen-radiology/1.xml", "ecgen-radiology/2.xml"):
            m = src.getmember(name)
            dst.addfile(m, src.extractfile(m))
    ids = [i for n in ("1", "2") for i in parse_report(
        tarfile.open(iu_xray_reports()).extractfile(f"ecgen-radiology/{n}.xml").read())["images"]]
    for i, image_id in enumerate(ids[:-1]):  # the last image is missing: summarised, not fatal
        save_png(tmp_path / "NLMCXR_png" / f"{image_id}.png", phantom(i))
    src = get_source("iu-xray", tmp_path)
    items = list(src.items())
    assert [it.key for it in items] == [i.replace(".", "-") for i in ids] and items[0].patient == "CXR1"
    rec = src.load(items[0])
    assert rec.findings.startswith("The cardiac silhouette") and rec.labels["No Finding"] == 1
    m = prepare_data(PrepareConfig(dataset="iu-xray", root=str(tmp_path), out=str(tmp_path / "o"), size=32, salt="s", contact_sheet=0))
    assert m["counts"]["total"] == len(ids) - 1 and m["rejected"] == []
    assert m["missing"]["missing"] == 1 and m["missing"]["groups"] == {"NLMCXR_png": [len(ids) - 1, len(ids)]}


def test_vindr_ribcxr_polygons_to_20_masks(tmp_path):
    (tmp_path / "train/img").mkdir(parents=True)
    save_png(tmp_path / "train/img/VinDr_RibCXR_train_000.png", phantom(0))
    square = [{"x": 10, "y": 10}, {"x": 20, "y": 10}, {"x": 20, "y": 20}, {"x": 10, "y": 20}]
    data = {"img": {"0": "data/train/img/VinDr_RibCXR_train_000.png"}}
    for k, name in enumerate(RIBS):
        data[name] = {"0": [{"x": p["x"] + k, "y": p["y"]} for p in square]}
    (tmp_path / "train/Vindr_RibCXR_train_mask.json").write_text(json.dumps(data))
    _, items, recs = load_all("vindr-ribcxr", tmp_path)
    assert items[0].split == "trainval" and set(recs[0].masks) == set(RIBS)
    m = recs[0].masks["R1"]
    assert m.shape == (48, 48) and m[15, 15] and not m[5, 5] and 100 <= m.sum() <= 121
    assert recs[0].masks["L10"][15, 15 + 19] and not recs[0].masks["L10"][15, 12]


def test_imagenome_boxes_to_lung_zone_masks(tmp_path):
    sid, study, dicom = "10000032", "50414267", "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"
    save_png(tmp_path / f"mimic/files/p10/p{sid}/s{study}/{dicom}.png", phantom(0))
    (tmp_path / f"mimic/files/p10/p{sid}/s{study}/{dicom}.png").rename(
        tmp_path / f"mimic/files/p10/p{sid}/s{study}/{dicom}.jpg")
    objects = [{"bbox_name": f"{side} {level} lung zone", "original_x1": x, "original_y1": y,
                "original_x2": x + 10, "original_y2": y + 8}
               for side, x in (("right", 4), ("left", 30)) for level, y in (("upper", 4), ("mid", 16), ("lower", 28))]
    objects.append({"bbox_name": "cardiac silhouette", "original_x1": 0, "original_y1": 0, "original_x2": 5,
                     "original_y2": 5})
    g = tmp_path / "imagenome/silver_dataset/scene_graph" / f"{dicom}_SceneGraph.json"
    g.parent.mkdir(parents=True)
    g.write_text(json.dumps({"image_id": dicom, "patient_id": int(sid), "study_id": int(study),
                             "viewpoint": "PA", "objects": objects}))
    (tmp_path / "imagenome/silver_dataset/splits").mkdir()
    (tmp_path / "imagenome/silver_dataset/splits/test.csv").write_text(f"dicom_id,study_id\n{dicom},{study}\n")
    _, items, recs = load_all("imagenome", tmp_path)
    assert items[0].split == "test" and items[0].view == "PA" and items[0].patient == sid
    assert set(recs[0].masks) == set(LUNG_ZONES)
    ru = recs[0].masks["right_upper"]
    assert ru.sum() == 80 and ru[4:12, 4:14].all()
    assert recs[0].masks["left_lower"][28:36, 30:40].all()
