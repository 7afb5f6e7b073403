"""`--init-from` an official I-JEPA checkpoint: the one the official code saved in benchmarks/ijepa_golden.py (after
3 steps; `module.` keys, stored sin-cos tables, 4 AdamW groups), and RGB variants of it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from pretrain_helpers import make_tiny_shards
from radjepa_cli.models.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from radjepa_cli.models.official_ijepa import fold_rgb_patch_embed, official_optimizer_names
from radjepa_cli.models.vit import build_encoder
from radjepa_cli.pretrain import run_state
from radjepa_cli.pretrain.masks import MaskConfig
from radjepa_cli.pretrain.train import PretrainConfig, build_model, train

FIX = Path(__file__).parent / "fixtures" / "ijepa_golden"
CKPT = FIX / "official_checkpoint.pth.tar"
META = json.loads((FIX / "train_nenc1.json").read_text())
ARCH = dict(model="vit_tiny", depth=META["depth"], embed_dim=META["embed_dim"], num_heads=META["num_heads"],
            image_size=META["img_size"], patch_size=META["patch_size"], pred_depth=META["pred_depth"],
            pred_dim=META["pred_dim"])


def _model_and_opt(**over):
    cfg = PretrainConfig(shards="-", out="-", steps=1, **{**ARCH, **over})
    model = build_model(cfg)
    return model, torch.optim.AdamW(model.param_groups(), lr=cfg.start_lr, weight_decay=cfg.wd, foreach=True)


def test_official_checkpoint_weights_and_adamw_state_map_by_name():
    model, opt = _model_and_opt()
    info = run_state.init_from_official(model, opt, CKPT)
    assert info["optimizer"] == "loaded" and info["fresh_moments"] == [] and info["adamw_step"] == 3
    t = load_file(str(FIX / "train_nenc1.safetensors"))
    ours = dict(model.named_parameters())
    for key, v in t.items():                       # the official run's parameters after its 3rd step (fp64)
        for prefix in ("step2/param/", "step2/target/"):
            if key.startswith(prefix):
                torch.testing.assert_close(ours[key.removeprefix(prefix)], v.float(), rtol=0, atol=0)
    # AdamW moments rebuilt from the official gradients: a wrong name mapping cannot pass this.
    b1, b2 = 0.9, 0.999
    for name, p in model.trainable_parameters():
        g = [t[f"step{s}/grad/{name}"] for s in range(3)]
        m = (1 - b1) * (b1 ** 2 * g[0] + b1 * g[1] + g[2])
        v = (1 - b2) * (b2 ** 2 * g[0] ** 2 + b2 * g[1] ** 2 + g[2] ** 2)
        st = opt.state[p]
        torch.testing.assert_close(st["exp_avg"].double(), m, rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(st["exp_avg_sq"].double(), v, rtol=1e-5, atol=1e-16)
        assert float(st["step"]) == 3


def test_rgb_patch_embedding_folds_exactly_for_grey_images():
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(8, 3, 14, 14, generator=g).double() * 0.02, torch.randn(8, generator=g).double() * 0.02
    grey = torch.rand(2, 1, 28, 28, generator=g).double()
    rgb = (grey.expand(-1, 3, -1, -1) - torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / \
        torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    w1, b1 = fold_rgb_patch_embed(w, b)
    assert w1.shape == (8, 1, 14, 14)
    torch.testing.assert_close(F.conv2d((grey - 0.5) / 0.25, w1, b1, stride=14), F.conv2d(rgb, w, b, stride=14),
                               rtol=1e-12, atol=1e-14)


def _rgb_checkpoint(tmp_path) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """The fixture with 3-channel patch embeddings (as released ImageNet checkpoints have)."""
    ck = torch.load(CKPT, map_location="cpu", weights_only=True)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(META["embed_dim"], 3, 14, 14, generator=g) * 0.02
    b = ck["target_encoder"]["module.patch_embed.proj.bias"]
    for part in ("encoder", "target_encoder"):
        ck[part]["module.patch_embed.proj.weight"] = w.clone()
    pos = official_optimizer_names(ck)[0].index(("encoder", "patch_embed.proj.weight"))
    idx = ck["opt"]["param_groups"][0]["params"][pos]
    st = ck["opt"]["state"][idx]
    st["exp_avg"], st["exp_avg_sq"] = torch.zeros_like(w), torch.zeros_like(w)
    path = tmp_path / "rgb.pth.tar"
    torch.save(ck, path)
    return path, w, b


def test_rgb_checkpoint_sees_grey_images_as_the_rgb_model_does(tmp_path):
    path, w, b = _rgb_checkpoint(tmp_path)
    model, opt = _model_and_opt()
    info = run_state.init_from_official(model, opt, path)
    assert info["fresh_moments"] == ["encoder.patch_embed.proj.weight"]   # 3-channel moments cannot fold
    rgb = build_encoder("vit_tiny", img_size=112, patch_size=14, in_chans=3, depth=META["depth"],
                        embed_dim=META["embed_dim"], num_heads=META["num_heads"])
    sd = {**model.target_encoder.state_dict(), "patch_embed.proj.weight": w, "patch_embed.proj.bias": b}
    rgb.load_state_dict(sd)
    grey = torch.rand(2, 1, 112, 112, generator=torch.Generator().manual_seed(2))
    x_rgb = (grey.expand(-1, 3, -1, -1) - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / \
        torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.target_encoder.forward_features((grey - 0.5) / 0.25),
                                   rgb.forward_features(x_rgb), rtol=1e-4, atol=1e-5)


def test_mismatched_parts_are_named():
    model, opt = _model_and_opt(pred_depth=1)
    with pytest.raises(ValueError, match=r"\[predictor\].*1 blocks.*--pred-depth"):
        run_state.init_from_official(model, opt, CKPT)
    model, opt = _model_and_opt(depth=3)
    with pytest.raises(ValueError, match=r"\[encoder\].*2 blocks of width 12 in the checkpoint, 3 blocks"):
        run_state.init_from_official(model, opt, CKPT)


def test_missing_parts_and_optimizer_groups_are_named(tmp_path):
    ck = torch.load(CKPT, map_location="cpu", weights_only=True)
    no_pred = {k: v for k, v in ck.items() if k != "predictor"}
    torch.save(no_pred, tmp_path / "a.pth.tar")
    model, opt = _model_and_opt()
    with pytest.raises(KeyError, match=r"\['predictor'\] missing"):
        run_state.init_from_official(model, opt, tmp_path / "a.pth.tar")
    ck["opt"]["param_groups"] = ck["opt"]["param_groups"][:2]
    torch.save(ck, tmp_path / "b.pth.tar")
    with pytest.raises(ValueError, match=r"\[opt\]: 2 param groups"):
        run_state.init_from_official(model, opt, tmp_path / "b.pth.tar")


def test_pretrain_init_from_continues_the_official_state(tmp_path):
    shards = make_tiny_shards(tmp_path / "shards", n=8, size=112)
    cfg = PretrainConfig(shards=str(shards), out=str(tmp_path / "run"), steps=1, batch_size=4, num_workers=0,
                         masks=MaskConfig(min_keep=4), tensorboard=False, threads=1, init_from=str(CKPT), **ARCH)
    train(cfg)
    ck = run_state.load_checkpoint(run_state.latest_path(tmp_path / "run"))
    assert {float(s["step"]) for s in ck["opt"]["state"].values()} == {4.0}    # 3 official AdamW steps + ours
