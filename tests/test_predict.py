"""Saved heads and `radjepa predict`: round trip, encoder checks, unreadable inputs, metrics equal to the run's."""
import io
import json
import shutil

import numpy as np
import pytest
import torch

from _downstream_shards import write_phantom_shards
from radjepa_cli.downstream.predict import PredictConfig, run_predict
from radjepa_cli.downstream.probe import ProbeConfig, run_probe
from radjepa_cli.downstream.saved import ModelDirError, load_model, save_head
from radjepa_cli.downstream.segment import SegmentConfig, run_segment
from radjepa_cli.models.zoo import EncoderMismatchError


def _export_dir(path, seed=0):
    """A tiny ViT of ours in the `radjepa export` layout (encoder_config.json + model.safetensors)."""
    from safetensors.torch import save_file

    from radjepa_cli.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME, encoder_config
    from radjepa_cli.models.vit import build_encoder
    torch.manual_seed(seed)
    vit = build_encoder("vit_tiny", img_size=32, patch_size=16, depth=2).eval()
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_NAME).write_text(json.dumps(encoder_config(vit)))
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path / WEIGHTS_NAME))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A probe on our own (exported) ViT and a UPerNet segmenter on pixels, both on tiny phantom shards."""
    root = tmp_path_factory.mktemp("predict")
    shards = write_phantom_shards(root / "shards", n=32, size=48)
    enc = _export_dir(root / "encoder")
    common = dict(device="cpu", progress=False, cache_dir=str(root / "cache"))
    probe = run_probe(ProbeConfig(shards=str(shards), encoder=str(enc), out=str(root / "probe"), seeds=2, epochs=5,
                                  lr=1e-2, batch_size=16, **common))
    seg = run_segment(SegmentConfig(shards=str(shards), encoder="pixels:16", out=str(root / "seg"), seeds=2,
                                    epochs=2, channels=8, batch_size=8, image_size=32, overlays=0, **common))
    return {"root": root, "shards": shards, "encoder": enc, "probe": probe, "seg": seg, "common": common}


def _predict(t, model, inputs, out, **kw):
    return run_predict(PredictConfig(model=str(t["root"] / model), inputs=tuple(map(str, inputs)),
                                     out=str(t["root"] / out), **{**t["common"], **kw}))


def test_head_save_load_round_trip_is_bit_exact(tmp_path):
    from radjepa_cli.downstream.decoders import build_decoder
    from radjepa_cli.downstream.probe import Standardizer
    torch.manual_seed(0)
    x = torch.randn(20, 12)
    heads = {("probe", "linear"): torch.nn.Sequential(Standardizer(x, 12, True), torch.nn.Linear(12, 3))}
    for kind in ("linear", "vitdet", "upernet"):
        heads[("segment", kind)] = build_decoder(kind, 8, 2, 8)
    for (task, kind), head in heads.items():
        torch.nn.init.normal_(next(head.parameters()))
        entry = save_head(tmp_path / kind, 0, head)
        config = {"in_dim": 12, "n_out": 3} if task == "probe" else {"in_dim": 8, "n_out": 2, "channels": 8}
        (tmp_path / kind / "model.json").write_text(json.dumps({
            "format": "radjepa-downstream-model/1", "task": task, "head": {"kind": kind, "config": config},
            "seeds": [entry], "best_seed": 0}))
        loaded = load_model(tmp_path / kind).heads[0]
        a, b = head.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # buffers (BN, standardiser) too
        head.eval()
        inp = x[:4] if task == "probe" else [torch.randn(2, 8, 4, 4) for _ in range(4 if kind == "upernet" else 1)]
        with torch.no_grad():
            assert torch.equal(head(inp) if task == "probe" else head(inp, (16, 16)),
                               loaded(inp) if task == "probe" else loaded(inp, (16, 16)))
    (tmp_path / "linear" / "heads" / "seed-0.safetensors").write_bytes(b"tampered")
    with pytest.raises(ModelDirError, match="sha256"):
        load_model(tmp_path / "linear")


def test_model_json_is_complete_and_written_last(trained):
    m = json.loads((trained["root"] / "probe" / "model.json").read_text())
    assert m["task"] == "probe" and m["encoder"]["fingerprint"] == trained["probe"]["encoder_info"]["fingerprint"]
    assert m["encoder"]["spec_absolute"] == str(trained["encoder"].resolve())
    assert m["input"]["shard_size"] == 48 and m["input"]["bits"] == 8 and m["input"]["image_size"] == 32
    assert len(m["labels"]) == m["head"]["config"]["n_out"] and set(m["thresholds"]) == set(m["labels"])
    assert [e["seed"] for e in m["seeds"]] == [0, 1] and m["best_seed"] in (0, 1)
    best = max(m["seeds"], key=lambda e: (e["val_score"], -e["seed"]))
    assert m["best_seed"] == best["seed"] and "val" in m["best_seed_by"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in (trained["root"] / "probe").rglob("*") if p.is_file()}
    assert mtimes["model.json"] == max(mtimes.values())
    s = json.loads((trained["root"] / "seg" / "model.json").read_text())
    assert s["task"] == "segment" and s["head"]["kind"] == "upernet" and s["structures"] == ["lung_right", "lung_left"]
    # a folder whose run did not finish (no model.json) is refused with a reason
    half = trained["root"] / "half"
    shutil.copytree(trained["root"] / "probe", half)
    (half / "model.json").unlink()
    with pytest.raises(ModelDirError, match="did not finish"):
        load_model(half)


def test_predict_metrics_equal_probe_and_segment_results(trained):
    p = _predict(trained, "probe", [trained["shards"]], "pred-probe")
    res = trained["probe"]
    (m,) = p["metrics"]
    assert m["n"] == res["n_test"] and m["labels"] == res["labels"]
    assert m["per_class"] == res["per_class"] and m["aggregate"] == res["aggregate"]  # exact, not just printed
    s = _predict(trained, "seg", [trained["shards"]], "pred-seg")
    (d,) = s["metrics"]
    assert d["per_structure"] == trained["seg"]["per_structure"]
    assert d["mean_dice"] == trained["seg"]["mean_dice"]
    rows = [json.loads(x) for x in (trained["root"] / "pred-probe" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == res["n_test"] and all(set(r["probabilities"]) == set(r["labels"]) for r in rows)
    model = json.loads((trained["root"] / "probe" / "model.json").read_text())
    for r in rows:  # thresholded labels follow the saved thresholds
        assert all(r["labels"][n] == int(r["probabilities"][n] >= model["thresholds"][n]["threshold"])
                   for n in r["labels"])
    header = (trained["root"] / "pred-probe" / "predictions.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["id", "source"] and len(header) == 2 + 2 * len(model["labels"])


def _test_pngs(trained, out):
    """The test split's stored PNGs as plain files."""
    from radjepa_cli.data.loader import shard_paths
    from radjepa_cli.data.shards import iter_tar
    out.mkdir()
    for key, files in iter_tar(shard_paths(trained["shards"], "test")[0]):
        (out / f"{key}.png").write_bytes(files["png"])
    return out


def test_image_files_match_the_shard_route_and_unreadable_are_listed(trained):
    from PIL import Image
    folder = _test_pngs(trained, trained["root"] / "pngs")
    bad = trained["root"] / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.dcm").write_text("not a dicom")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(buf, format="PNG")
    (bad / "truncated.png").write_bytes(buf.getvalue()[:30])
    r = _predict(trained, "probe", [folder, bad, trained["root"] / "missing.png"], "pred-files")
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in r["skipped"]}
    assert set(reasons) == {"empty.png", "notes.dcm", "truncated.png", "missing.png"}
    assert "empty" in reasons["empty.png"] and "no such file" in reasons["missing.png"]
    assert json.loads((trained["root"] / "pred-files" / "skipped.json").read_text()) == r["skipped"]
    from_files = {json.loads(x)["id"]: json.loads(x)["probabilities"]
                  for x in (trained["root"] / "pred-files" / "predictions.jsonl").read_text().splitlines()}
    from_shards = {json.loads(x)["id"]: json.loads(x)["probabilities"]
                   for x in (trained["root"] / "pred-probe" / "predictions.jsonl").read_text().splitlines()}
    assert from_files.keys() == from_shards.keys() and r["n_predicted"] == len(from_files)
    for k in from_files:  # same pixels, same decode → same probabilities
        assert from_files[k] == pytest.approx(from_shards[k], abs=1e-6)
    with pytest.raises(ValueError, match="no readable input"):
        _predict(trained, "probe", [bad], "pred-none")


def test_segment_predict_writes_masks_and_overlays_on_the_image_grid(trained):
    from PIL import Image

    from radjepa_cli.data.embedded import rg1_dicom
    r = _predict(trained, "seg", [rg1_dicom()], "pred-rg1", overlays=True)
    assert r["n_predicted"] == 1 and r["n_skipped"] == 0 and not r["metrics"]
    (row,) = [json.loads(x) for x in (trained["root"] / "pred-rg1" / "predictions.jsonl").read_text().splitlines()]
    assert row["size"] == [1955, 1841]  # RG1_UNCR: 1955 rows × 1841 columns
    for name, rel in row["masks"].items():
        with Image.open(trained["root"] / "pred-rg1" / rel) as m:
            assert m.size == (1841, 1955) and set(np.unique(np.asarray(m))) <= {0, 255}
    assert (trained["root"] / "pred-rg1" / row["overlay"]).stat().st_size > 10_000


def test_changed_or_moved_encoder_is_refused_by_checksum(trained, tmp_path):
    from safetensors.torch import load_file, save_file
    moved = tmp_path / "moved-encoder"
    shutil.copytree(trained["encoder"], moved)
    model = trained["root"] / "probe"
    original = trained["encoder"].with_name("encoder-away")
    trained["encoder"].rename(original)
    try:
        with pytest.raises(FileNotFoundError, match="--encoder NEW_LOCATION"):
            _predict(trained, "probe", [trained["shards"]], "pred-moved")
        ok = _predict(trained, "probe", [trained["shards"]], "pred-moved", encoder=str(moved))
        assert ok["encoder_fingerprint"] == trained["probe"]["encoder_info"]["fingerprint"]
        sd = load_file(str(moved / "model.safetensors"))
        sd["norm.weight"] = sd["norm.weight"] * 1.01
        save_file(sd, str(moved / "model.safetensors"))
        with pytest.raises(EncoderMismatchError, match=f"{moved}.*checksum"):
            _predict(trained, "probe", [trained["shards"]], "pred-changed", encoder=str(moved))
    finally:
        original.rename(trained["encoder"])
    assert model.is_dir()


def test_predict_cli(trained):
    from typer.testing import CliRunner

    from radjepa_cli.cli import app
    out = trained["root"] / "pred-cli"
    res = CliRunner().invoke(app, ["predict", str(trained["root"] / "probe"), str(trained["shards"]), "nope.png",
                                   "--out", str(out), "--cache-dir", trained["common"]["cache_dir"],
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    agg = trained["probe"]["aggregate"]
    assert f"{100 * agg['auprc_mean']:.1f} ± {100 * agg['auprc_std']:.1f}" in res.output  # as `probe` prints it
    assert "skipped" in res.output and "nope.png" in res.output and (out / "predict.json").is_file()


def test_probe_comparison_chart_in_summary_and_table6(trained, tmp_path):
    from typer.testing import CliRunner

    from radjepa_cli.cli import app
    from radjepa_cli.summary import write_summary
    for name in ("ours", "baseline"):
        shutil.copytree(trained["root"] / "probe", tmp_path / f"probe-{name}")
    page = write_summary(tmp_path, {"steps": {}})
    chart = tmp_path / "probe_auprc_comparison.png"
    assert chart.stat().st_size > 20_000 and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = page.read_text()
    assert html.index("probe_auprc_comparison.png") < html.index("probe-baseline/pr_curves.png")  # chart first
    res = CliRunner().invoke(app, ["evaluate", "table", "6", "--runs", str(tmp_path), "--out", str(tmp_path / "t6")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "t6" / "probe_auprc.png").stat().st_size > 20_000


def test_absolute_spec_keeps_prefix_seed_and_non_paths(tmp_path, monkeypatch):
    from radjepa_cli.models.zoo import absolute_spec
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    run = (tmp_path / "run").resolve()
    assert absolute_spec("run") == str(run)
    assert absolute_spec("random:run@3") == f"random:{run}@3"
    assert absolute_spec("dinov2:run") == f"dinov2:{run}"
    for spec in ("pixels:32", "random:vit_tiny@0:32/16", "rad-dino:microsoft/rad-dino"):
        assert absolute_spec(spec) == spec
