"""Checkpoints and exports: run dirs, official I-JEPA import, and the same features from safetensors/HF/timm."""
import argparse
import json
import os

import numpy as np
import pytest
import torch

from radjepa_cli.io import write_json
from radjepa_cli.models import export as export_mod
from radjepa_cli.models.checkpoint import (build_encoder_from_config, encoder_config, import_ijepa_official,
                                           load_encoder_checkpoint, load_state, strip_module_prefix)
from radjepa_cli.models.predictor import build_predictor
from radjepa_cli.models.vit import build_encoder, sincos_pos_embed

IMG = 112


def _feats(enc, x):
    with torch.no_grad():
        return enc.forward_features(x)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A `radjepa pretrain`-shaped run dir whose encoder and target encoder differ."""
    torch.manual_seed(0)
    target = build_encoder("vit_tiny", img_size=IMG, depth=4).eval()
    online = build_encoder("vit_tiny", img_size=IMG, depth=4).eval()
    run = tmp_path_factory.mktemp("run")
    (run / "checkpoints").mkdir()
    write_json(run / "encoder_config.json", encoder_config(target))
    ckpt = {"encoder": online.state_dict(), "target_encoder": target.state_dict(),
            "predictor": build_predictor(target, depth=1).state_dict(), "opt": {}, "step": 7, "epoch": 1}
    torch.save(ckpt, run / "checkpoints" / "latest.pt")
    torch.save(ckpt, run / "checkpoints" / "step_0000007.pt")
    return run, target, online


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 1, IMG, IMG, generator=torch.Generator().manual_seed(1))


def test_encoder_config_round_trip(run_dir):
    _, target, _ = run_dir
    cfg = encoder_config(target)
    assert json.loads(json.dumps(cfg)) == cfg
    assert (cfg["model"], cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["img_size"], cfg["patch_size"],
            cfg["in_chans"]) == ("vit_tiny", 192, 4, 3, IMG, 14, 1)
    rebuilt = build_encoder_from_config(cfg)
    assert encoder_config(rebuilt) == cfg
    assert rebuilt.load_state_dict(target.state_dict(), strict=True)


def test_run_dir_checkpoint_and_which(run_dir, x):
    run, target, online = run_dir
    enc, info = load_encoder_checkpoint(run)
    assert info["which"] == "target_encoder" and info["step"] == 7 and not enc.training
    torch.testing.assert_close(_feats(enc, x), _feats(target, x))
    enc_online, _ = load_encoder_checkpoint(run / "checkpoints" / "step_0000007.pt", which="encoder")
    torch.testing.assert_close(_feats(enc_online, x), _feats(online, x))
    with pytest.raises(KeyError, match="no 'teacher'"):
        load_encoder_checkpoint(run, which="teacher")


def test_module_prefix_and_safe_loading(tmp_path, run_dir, x):
    _, target, _ = run_dir
    assert strip_module_prefix({"module.a": 1, "_orig_mod.b": 2, "c": 3}) == {"a": 1, "b": 2, "c": 3}
    p = tmp_path / "ddp.pt"
    torch.save({"target_encoder": {f"module.{k}": v for k, v in target.state_dict().items()}}, p)
    write_json(tmp_path / "encoder_config.json", encoder_config(target))
    torch.testing.assert_close(_feats(load_encoder_checkpoint(p)[0], x), _feats(target, x))
    evil = tmp_path / "evil.pt"
    torch.save({"target_encoder": {}, "args": argparse.Namespace(lr=1.0)}, evil)  # needs full unpickling
    with pytest.raises(ValueError, match="evil.pt"):
        load_state(evil)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(ValueError, match="broken.pt"):
        load_encoder_checkpoint(broken)


def _official_checkpoint(path, seed=0):
    """An official-I-JEPA-shaped file: 3 channels, `module.` keys, stored sin-cos tables, opt/scaler/epoch."""
    torch.manual_seed(seed)
    enc = build_encoder("vit_tiny", img_size=IMG, in_chans=3, depth=4).eval()
    pred = build_predictor(enc, depth=2, dim=96)
    grid = enc.grid_size
    pos = sincos_pos_embed(192, grid).unsqueeze(0)
    e_sd = {"module." + k: v for k, v in enc.state_dict().items()} | {"module.pos_embed": pos}
    p_sd = {"module." + k: v for k, v in pred.state_dict().items()}
    p_sd["module.predictor_pos_embed"] = sincos_pos_embed(96, grid).unsqueeze(0)
    torch.save({"encoder": e_sd, "predictor": p_sd, "target_encoder": e_sd, "opt": {"state": {}, "param_groups": []},
                "scaler": None, "epoch": 300, "loss": 0.1, "batch_size": 128, "world_size": 16, "lr": 1e-3}, path)
    return enc, pred


def test_import_official_ijepa(tmp_path):
    path = tmp_path / "IN1K-vit.t.14-300e.pth.tar"
    ref, ref_pred = _official_checkpoint(path)
    enc, info = import_ijepa_official(path)
    assert info["in_chans"] == 3 and info["mean"] == [0.485, 0.456, 0.406] and info["img_size"] == IMG
    x3 = torch.randn(2, 3, IMG, IMG)
    torch.testing.assert_close(_feats(enc, x3), _feats(ref, x3))
    pred = build_predictor(enc, depth=2, dim=96)
    pred.load_state_dict(info["state_dicts"]["predictor"], strict=True)
    assert all(torch.equal(a, b) for a, b in zip(pred.state_dict().values(), ref_pred.state_dict().values()))
    # Also through the generic loader (no encoder_config.json: architecture inferred from the weights).
    torch.testing.assert_close(_feats(load_encoder_checkpoint(path, which="encoder")[0], x3), _feats(ref, x3))


def test_official_with_foreign_positions_is_refused(tmp_path):
    path = tmp_path / "learned.pth.tar"
    _official_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["target_encoder"]["module.pos_embed"] = torch.randn_like(ckpt["target_encoder"]["module.pos_embed"])
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="sin-cos"):
        import_ijepa_official(path)


@pytest.mark.parametrize("fmt", ["safetensors", "hf", "timm"])
def test_export_round_trip_same_features(fmt, run_dir, tmp_path, x):
    run, target, _ = run_dir
    out = tmp_path / fmt
    info = export_mod.export(run, out, fmt)
    assert info["max_abs_diff_vs_ours"] < 1e-4 and info["step"] == 7
    assert {"encoder_config.json", "export_info.json", "model.safetensors", "README.md"} <= set(os.listdir(out))
    channels = 1 if fmt == "safetensors" else 3          # hf / timm default to RGB, as their ecosystems expect
    assert info["channels"] == channels
    x_in = x.expand(-1, channels, -1, -1)                  # grey replicated: must give our grey features exactly
    want = _feats(target, x)
    back, _ = load_encoder_checkpoint(out)  # every export dir reads back into our encoder
    assert (_feats(back, x_in) - want).abs().max() < 1e-4
    if fmt == "hf":
        from transformers import IJepaModel
        model = IJepaModel.from_pretrained(out, local_files_only=True).eval()
        assert model.config.layer_norm_eps == 1e-6 and model.config.num_channels == 3
        assert model.config.image_size == IMG and model.config.patch_size == 14
        with torch.no_grad():
            got = model(pixel_values=x_in).last_hidden_state
        pre = json.loads((out / "preprocessor_config.json").read_text())
        assert pre["image_mean"] == [0.5] * 3 and pre["image_std"] == [0.25] * 3
    elif fmt == "timm":
        import timm
        model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
        with torch.no_grad():
            got = model.forward_features(x_in)
            assert (model(x_in) - target(x)).abs().max() < 1e-4  # pooled features too
        manual = export_mod.build_timm_model(json.loads((out / "encoder_config.json").read_text())).eval()
        from safetensors.torch import load_file
        manual.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
        assert (_feats(manual, x_in) - want).abs().max() < 1e-4
    else:
        got = _feats(back, x)
    assert (got - want).abs().max() < 1e-4


def test_native_one_channel_hf_export(run_dir, tmp_path, x):
    run, target, _ = run_dir
    export_mod.export(run, tmp_path / "hf1", "hf", channels=1)
    from transformers import IJepaModel
    model = IJepaModel.from_pretrained(tmp_path / "hf1", local_files_only=True).eval()
    assert model.config.num_channels == 1
    with torch.no_grad():
        assert (model(pixel_values=x).last_hidden_state - _feats(target, x)).abs().max() < 1e-4


def test_hf_processor_path_for_8_and_16_bit_pngs(run_dir, tmp_path):
    """The model card's recipes: `.convert("RGB")` + processor for 8-bit PNGs; for 16-bit PNGs, scale by 65535 and
    `do_rescale=False`. Both give our encoder's features of the same [0, 1] image (no resize: exact up to fp32)."""
    from PIL import Image
    from transformers import AutoImageProcessor, IJepaModel
    run, target, _ = run_dir
    out = tmp_path / "hf"
    export_mod.export(run, out, "hf")
    card = (out / "README.md").read_text()
    assert "do_rescale=False" in card and "65535" in card
    proc = AutoImageProcessor.from_pretrained(out)
    model = IJepaModel.from_pretrained(out, local_files_only=True).eval()
    rng = np.random.default_rng(0)
    u16 = (rng.random((IMG, IMG)) * 65535).astype(np.uint16)
    Image.fromarray(u16).save(tmp_path / "x16.png")
    img = np.asarray(Image.open(tmp_path / "x16.png"))
    assert img.dtype == np.uint16
    x01 = img.astype(np.float32) / 65535.0
    inputs = proc(images=np.repeat(x01[..., None], 3, -1), do_rescale=False, return_tensors="pt")
    ours = (torch.from_numpy(x01)[None, None] - 0.5) / 0.25
    with torch.no_grad():
        want = _feats(target, ours)
        assert (model(**inputs).last_hidden_state - want).abs().max() < 1e-4
        naive = proc(images=np.repeat(img[..., None].astype(np.float32), 3, -1), return_tensors="pt")  # 1/255
        assert (model(**naive).last_hidden_state - want).abs().max() > 1.0     # why the card warns
    u8 = (rng.random((IMG, IMG)) * 255).astype(np.uint8)
    Image.fromarray(u8).save(tmp_path / "x8.png")
    inputs = proc(images=Image.open(tmp_path / "x8.png").convert("RGB"), return_tensors="pt")
    with torch.no_grad():
        want = _feats(target, (torch.from_numpy(u8.astype(np.float32) / 255)[None, None] - 0.5) / 0.25)
        assert (model(**inputs).last_hidden_state - want).abs().max() < 1e-4


def test_export_is_atomic(run_dir, tmp_path, monkeypatch):
    run, _, _ = run_dir
    out = tmp_path / "exp"
    export_mod.export(run, out, "safetensors")
    with pytest.raises(FileExistsError):
        export_mod.export(run, out, "safetensors")
    with pytest.raises(ValueError, match="format"):
        export_mod.export(run, tmp_path / "x", "onnx")

    def broken(*a, **k):
        raise RuntimeError("simulated failure while verifying")
    monkeypatch.setattr(export_mod, "feature_difference", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        export_mod.export(run, tmp_path / "partial", "timm")
    assert sorted(os.listdir(tmp_path)) == ["exp"]  # no partial dir, no temp leftovers
    with pytest.raises(RuntimeError, match="simulated"):
        export_mod.export(run, out, "timm", overwrite=True)
    assert json.loads((out / "export_info.json").read_text())["format"] == "safetensors"  # old export intact


def test_hf_twin_at_another_resolution_is_exact(run_dir):
    """HF interpolates its position table bicubically; re-targeting writes our exact table for the new grid."""
    _, target, _ = run_dir
    cfg = {**encoder_config(target), "img_size": 56}
    model = export_mod.to_hf_model(target, cfg)
    x56 = torch.randn(1, 1, 56, 56)
    with torch.no_grad():
        assert (model(pixel_values=x56).last_hidden_state - _feats(target, x56)).abs().max() < 1e-4
        model112 = export_mod.to_hf_model(target, encoder_config(target))
        interp = model112(pixel_values=x56, interpolate_pos_encoding=True).last_hidden_state
    assert (interp - _feats(target, x56)).abs().max() > 1e-2  # why the re-targeting option exists


def test_meta_build_recomputes_the_position_buffer(run_dir, x):
    """Loading builds on the meta device; the non-persistent sin-cos table must be rebuilt, not left on meta."""
    _, target, _ = run_dir
    cfg = {**encoder_config(target), "img_size": 2 * IMG}   # a grid whose table is not cached yet
    rebuilt = build_encoder_from_config(cfg, state_dict=target.state_dict())
    assert not rebuilt.pos_table.is_meta and rebuilt.pos_table.shape[0] == 4 * target.pos_table.shape[0]
    rebuilt = build_encoder_from_config(encoder_config(target), state_dict=target.state_dict()).eval()
    assert not rebuilt.pos_table.is_meta
    torch.testing.assert_close(rebuilt.pos_table, target.pos_table, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.forward_features(x), target.eval().forward_features(x), rtol=0, atol=0)
