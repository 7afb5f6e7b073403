"""train-report → model dir → generate-report, on tiny phantom shards, with the real RG1 DICOM, PNGs, folders,
and the error paths (missing/incomplete model dir, non-image input, encoder mismatch)."""
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from radjepa_cli.cli import app
from radjepa_cli.data.embedded import rg1_dicom
from radjepa_cli.data.phantom import PhantomConfig, generate
from radjepa_cli.data.shards import ShardWriter, encode_png, encode_record
from radjepa_cli.report.bundle import MANIFEST, ModelDirError, load_report_model
from radjepa_cli.report.generate import GenerateConfig, default_model_dir, generate_reports
from radjepa_cli.report.lm import TinyLMConfig
from radjepa_cli.report.train import ReportTrainConfig, train_report

ENCODER = "random:vit_tiny:56/14"  # 4×4 = 16 patch tokens: fast on CPU
SMALL = TinyLMConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=512)
runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long error lines


def make_shards(root, counts=(("train", 16), ("val", 4), ("test", 4)), size=64):
    i = 0
    for split, n in counts:
        with ShardWriter(root / f"{split}-000000.tar") as w:
            for _ in range(n):
                r = generate(i, PhantomConfig(size=size, seed=3))
                r.masks, r.split = {}, split
                w.write(r.key, encode_record(r, size))
                i += 1
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="module")
def model_dir(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "model"
    cfg = ReportTrainConfig(shards=str(shards), encoder=ENCODER, llm="tiny", out=str(out), stage="both",
                            stage1_epochs=1, epochs=2, batch_size=8, log_every=1, tiny=SMALL)
    train_report(cfg, show_progress=False)
    return out


def test_model_dir_is_complete_and_logged(model_dir):
    for name in (MANIFEST, "config.json", "projector.safetensors", "tokenizer/tokenizer.json", "lm/config.json",
                 "train_log.jsonl", "loss_curves.png", "loss_curves.json"):
        assert (model_dir / name).is_file(), name
    m = json.loads((model_dir / MANIFEST).read_text())
    assert m["encoder"]["spec"] == ENCODER and len(m["encoder"]["fingerprint"]) == 64
    assert m["llm"]["name"] == "tiny" and m["projector"] == {"kind": "mlp2x_gelu", "in_dim": 192, "out_dim": 64,
                                                             "file": "projector.safetensors"}
    assert m["training"]["train_samples"] == 16 and m["training"]["val_samples"] == 4
    rows = [json.loads(line) for line in (model_dir / "train_log.jsonl").read_text().splitlines()]
    stages = [r for r in rows if r["event"] == "stage"]
    assert [s["stage"] for s in stages] == [1, 2] and stages[0]["lr"] == 1e-3 and stages[1]["lr"] == 1e-3
    assert stages[0]["trainable_parameters"] < stages[1]["trainable_parameters"]  # stage 1: projector only
    curves = json.loads((model_dir / "loss_curves.json").read_text())
    assert curves["stage1"]["val"] and curves["stage2"]["val"]
    train2 = [loss for _, loss in curves["stage2"]["train"]]
    assert train2[-1] < rows[next(i for i, r in enumerate(rows) if r["event"] == "train")]["loss"]  # it learns
    assert json.loads((model_dir / "config.json").read_text())["lr_stage2"] == 1e-3


def test_generate_on_shards_png_dicom_and_folder(model_dir, shards, tmp_path):
    png_dir = tmp_path / "pngs" / "nested"
    png_dir.mkdir(parents=True)
    img = np.linspace(0, 1, 80 * 96, dtype=np.float32).reshape(80, 96)
    (png_dir / "a.png").write_bytes(encode_png(img))
    (tmp_path / "pngs" / "notes.txt").write_text("not an image")  # ignored while scanning folders
    out = tmp_path / "pred.jsonl"
    cfg = GenerateConfig(inputs=[str(shards), str(rg1_dicom()), str(tmp_path / "pngs")], model=str(model_dir),
                         out=str(out), max_new_tokens=12, batch_size=3)
    res = generate_reports(cfg, show_progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == res.rows and len(rows) == 4 + 1 + 1  # the test split of the shards, the DICOM, the PNG
    by_id = {r["id"]: r for r in rows}
    assert by_id["RG1_UNCR"]["image"].endswith("RG1_UNCR.dcm") and "reference" not in by_id["RG1_UNCR"]
    assert by_id["nested/a"]["image"].endswith("a.png")
    shard_rows = [r for r in rows if r.get("dataset") == "synthetic"]
    assert len(shard_rows) == 4 and all(r["reference"] and r["reference_labels"] for r in shard_rows)
    for r in rows:
        assert isinstance(r["generated"], str) and r["encoder"] == ENCODER and r["llm"] == "tiny"
        assert set(r["labels"]) >= {"Cardiomegaly", "No Finding"}


def test_cli_prints_findings_and_beam_search(model_dir):
    res = runner.invoke(app, ["generate-report", str(rg1_dicom()), "--model", str(model_dir),
                              "--max-new-tokens", "8", "--beams", "2"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() and not res.stdout.startswith("#")


def test_errors_name_the_problem(model_dir, tmp_path):
    bad = tmp_path / "scan.png"
    bad.write_text("hello")
    res = runner.invoke(app, ["generate-report", str(bad), "--model", str(model_dir)])
    assert res.exit_code == 1 and "scan.png: not a PNG file" in flat(res.output)
    res = runner.invoke(app, ["generate-report", str(tmp_path / "missing.png"), "--model", str(model_dir)])
    assert res.exit_code == 1 and "missing.png does not exist" in flat(res.output)
    res = runner.invoke(app, ["generate-report", str(rg1_dicom()), "--model", str(tmp_path / "nomodel")])
    assert res.exit_code == 1 and "nomodel does not exist" in flat(res.output) and "train-report" in res.output

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "projector.safetensors").unlink()
    with pytest.raises(ModelDirError, match="projector.safetensors is missing"):
        load_report_model(broken)
    (broken / MANIFEST).unlink()
    with pytest.raises(ModelDirError, match=f"{MANIFEST} is missing"):
        load_report_model(broken)

    tampered = tmp_path / "tampered"
    shutil.copytree(model_dir, tampered)
    m = json.loads((tampered / MANIFEST).read_text())
    m["encoder"]["fingerprint"] = "0" * 64
    (tampered / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ModelDirError, match="encoder mismatch"):
        load_report_model(tampered)
    m["encoder"]["spec"] = "random:vit_small:56/14"  # 384-dim tokens into a 192-dim projector
    m["encoder"]["fingerprint"] = __import__("radjepa_cli.models.zoo", fromlist=["x"]).load_encoder(
        "random:vit_small:56/14").fingerprint
    (tampered / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ModelDirError, match="encoder/LM mismatch.*384"):
        load_report_model(tampered)


def test_default_model_dir(monkeypatch, tmp_path, model_dir):
    monkeypatch.delenv("RADJEPA_REPORT_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="radjepa train-report"):
        default_model_dir()
    monkeypatch.setenv("RADJEPA_REPORT_MODEL", str(model_dir))
    assert default_model_dir() == model_dir


def test_lora_stage2_saves_adapter_and_generates(shards, tmp_path):
    out = tmp_path / "lora"
    cfg = ReportTrainConfig(shards=str(shards), encoder=ENCODER, llm="tiny", out=str(out), stage="2", lora=True,
                            lora_r=4, lora_alpha=8, max_steps=2, batch_size=8, tiny=SMALL)
    train_report(cfg, show_progress=False)
    m = json.loads((out / MANIFEST).read_text())
    assert m["llm"]["adapter"] == "lm_adapter" and m["llm"]["weights"] == "lm"  # random tiny base kept
    assert (out / "lm_adapter" / "adapter_config.json").is_file()
    assert json.loads((out / "config.json").read_text())["lr_stage2"] == 2e-4
    rows = generate_reports(GenerateConfig(inputs=[str(rg1_dicom())], model=str(out), max_new_tokens=5),
                            show_progress=False).rows
    assert len(rows) == 1


def test_config_validation():
    with pytest.raises(ValueError, match="--stage"):
        ReportTrainConfig(shards="s", encoder="e", out="o", stage="3").validate()
    with pytest.raises(ValueError, match="--lora applies to stage 2"):
        ReportTrainConfig(shards="s", encoder="e", out="o", stage="1", lora=True).validate()


def test_generate_writes_summary_with_probe_and_diagnose_cli(model_dir, shards, tmp_path):
    out = tmp_path / "pred.jsonl"
    res = runner.invoke(app, ["generate-report", str(shards), "--model", str(model_dir), "--out", str(out),
                              "--max-new-tokens", "12", "--repetition-penalty", "1.3"])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "pred.summary.json").read_text())
    assert s["n"] == 4 and 1 <= s["distinct_reports"] <= 4 and s["scored"] == 4
    assert s["labels"] and set(s["report"]["per_label_f1"]) == set(s["labels"])
    assert {"encoder_mean", "encoder_flat", "projector_mean"} <= set(s["probe"])
    assert 0 <= s["probe_macro_f1"] <= 1 and "label transfer" in flat(res.output)
    diag = tmp_path / "diag.json"
    res = runner.invoke(app, ["diagnose-report", str(shards), "--model", str(model_dir), "--out", str(diag),
                              "--limit", "4", "--max-new-tokens", "12", "--attention-samples", "4"])
    assert res.exit_code == 0, res.output
    d = json.loads(diag.read_text())
    assert d["generated"] == 4 and d["image_loss"]["val_loss_shuffled"] > 0 and d["attention"]["samples"] == 4
    assert "lost at:" in res.stdout and d["verdict"] in res.stdout
    res = runner.invoke(app, ["diagnose-report", str(shards), "--model", str(tmp_path / "nomodel")])
    assert res.exit_code == 1 and "nomodel does not exist" in flat(res.output)


def test_levers_aux_label_loss_and_keep_best(shards, tmp_path):
    out = tmp_path / "levers"
    cfg = ReportTrainConfig(shards=str(shards), encoder=ENCODER, llm="tiny", out=str(out), stage="both",
                            stage1_epochs=1, epochs=3, batch_size=4, eval_every=1, log_every=1, tiny=SMALL,
                            aux_label_loss=0.5, keep_best=True, lr_stage2=3e-2)  # a high LR: val loss bounces
    train_report(cfg, show_progress=False)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    aux = next(r for r in log if r["event"] == "aux_label_loss")
    from radjepa_cli.data.labels import CHEXPERT_14
    assert aux["weight"] == 0.5 and aux["labels"] and set(aux["labels"]) <= set(CHEXPERT_14)
    curves = json.loads((out / "loss_curves.json").read_text())
    for stage in ("stage1", "stage2"):
        vals = [v for _, v in curves[stage]["val"]]
        assert vals[-1] == pytest.approx(min(vals))  # the stage ends on its best weights
        gap = curves[stage]["image_gap"]
        assert gap["val_loss_real"] == pytest.approx(vals[-1], rel=1e-4) and "val_loss_shuffled" in gap
    with pytest.raises(ValueError, match="aux-label-loss"):
        ReportTrainConfig(shards="s", encoder="e", out="o", aux_label_loss=-1).validate()


def test_summary_without_train_split_scores_reports_and_skips_probe(model_dir, shards, tmp_path):
    only_test = tmp_path / "only_test"
    only_test.mkdir()
    shutil.copy(shards / "test-000000.tar", only_test / "test-000000.tar")
    out = tmp_path / "p.jsonl"
    res = generate_reports(GenerateConfig(inputs=[str(only_test)], model=str(model_dir), out=str(out),
                                          max_new_tokens=6), show_progress=False)
    assert "train" in res.summary["probe_skipped"] and res.summary["n"] == 4 and "probe" not in res.summary
    assert json.loads(res.summary_path.read_text())["distinct_reports"] >= 1
