"""Encoder zoo: every family loads offline from a tiny random model and reproduces the model's own outputs."""
import importlib.util
import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from radjepa_cli.models.vit import build_encoder
from radjepa_cli.models.zoo import Preprocess, load_encoder

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, image_size=32,
            patch_size=8)


def _images(b=2, s=32, seed=0):
    return torch.rand(b, 1, s, s, generator=torch.Generator().manual_seed(seed))


def _check_interface(enc, x, n_tokens, dim):
    out = enc(x)
    assert out.patch_tokens.shape == (x.shape[0], n_tokens, dim)
    assert out.grid[0] * out.grid[1] == n_tokens
    last = enc.intermediate(x, [-1])[0]
    assert last.shape == (x.shape[0], dim, *out.grid)
    torch.testing.assert_close(last.flatten(2).transpose(1, 2), out.patch_tokens, atol=1e-5, rtol=1e-5)
    assert not any(p.requires_grad for p in enc.parameters())
    return out


def test_random_twin_is_seeded_and_consistent():
    a, b, c = (load_encoder(s) for s in ("random:vit_tiny@1:64/16", "random:vit_tiny@1:64/16", "random:vit_tiny@2:64/16"))
    assert a.fingerprint == b.fingerprint != c.fingerprint
    x = _images(s=80)  # resized to the encoder's 64 px
    out = _check_interface(a, x, 16, 192)
    torch.testing.assert_close(out.pooled, out.patch_tokens.mean(1))
    torch.testing.assert_close(out.pooled, b(x).pooled)
    assert [t.shape[1] for t in a.intermediate(x, [3, 5, 7, 11])] == [192] * 4
    with pytest.raises(IndexError):
        a.intermediate(x, [12])


def test_pixels_baseline():
    enc = load_encoder("pixels:32")
    x = _images(s=64)
    out = enc(x)
    small = (F.interpolate(x, size=(32, 32), mode="area") - 0.5) / 0.25
    torch.testing.assert_close(out.pooled, small.flatten(1))
    assert out.patch_tokens.shape == (2, 16, 64) and out.grid == (4, 4)
    torch.testing.assert_close(out.patch_tokens[0, 1], small[0, 0, :8, 8:16].reshape(-1))  # row-major 8×8 blocks
    with pytest.raises(ValueError, match="multiple of 8"):
        load_encoder("pixels:30")


def test_preprocess_resize_crop_normalise():
    x = torch.zeros(1, 1, 40, 60)
    x[..., :, 20:40] = 1.0  # a bright centre band survives the centre crop
    p = Preprocess(size=20, resize_shorter=20, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), channels=3,
                   interpolation="bilinear")
    y = p(x)
    assert y.shape == (1, 3, 20, 20)
    assert y[0, :, 10, 10].allclose(torch.ones(3)) and y.min() < 0


def _write_run(tmp_path, vit, cfg):
    (tmp_path / "checkpoints").mkdir(parents=True)
    (tmp_path / "encoder_config.json").write_text(json.dumps(cfg))
    torch.save({"target_encoder": vit.state_dict(), "encoder": vit.state_dict(), "step": 1},
               tmp_path / "checkpoints" / "latest.pt")


def test_our_run_dir_loads_target_encoder(tmp_path):
    torch.manual_seed(0)
    vit = build_encoder("vit_tiny", img_size=32, patch_size=8, depth=2).eval()
    ckpt_mod = importlib.util.find_spec("radjepa_cli.models.checkpoint")
    if ckpt_mod is not None:
        from radjepa_cli.models import checkpoint
        cfg = checkpoint.encoder_config(vit)
    else:
        cfg = {"model": "vit_tiny", "img_size": 32, "patch_size": 8, "in_chans": 1, "depth": 2}
    _write_run(tmp_path, vit, cfg)
    enc = load_encoder(str(tmp_path))
    x = _images()
    out = _check_interface(enc, x, 16, 192)
    with torch.no_grad():
        ref = vit.forward_features((x - 0.5) / 0.25)
    torch.testing.assert_close(out.patch_tokens, ref)
    with pytest.raises(FileNotFoundError, match="no such"):
        load_encoder(str(tmp_path / "nope"))
    twin = load_encoder(f"random:{tmp_path}@3")  # the run's architecture, fresh weights
    assert twin.embed_dim == enc.embed_dim and twin.num_layers == 2 and twin.image_size == 32
    assert twin.fingerprint != enc.fingerprint and twin.fingerprint == load_encoder(f"random:{tmp_path}@3").fingerprint


def _save_hf(tmp_path, name, model_cls, cfg):
    torch.manual_seed(0)
    model = model_cls(cfg).eval()
    model.save_pretrained(tmp_path / name)
    return model


@pytest.mark.parametrize("family", ["ijepa", "dinov2", "rad-dino", "clip"])
def test_hf_family_matches_model(tmp_path, family):
    import transformers as T
    cls, cfg_cls, n_prefix = {"ijepa": (T.IJepaModel, T.IJepaConfig, 0), "dinov2": (T.Dinov2Model, T.Dinov2Config, 1),
                              "rad-dino": (T.Dinov2Model, T.Dinov2Config, 1),
                              "clip": (T.CLIPVisionModel, T.CLIPVisionConfig, 1)}[family]
    model = _save_hf(tmp_path, "m", cls, cfg_cls(**TINY))
    if family in ("dinov2", "rad-dino"):  # keep the tiny model at its native size
        (tmp_path / "m" / "preprocessor_config.json").write_text(json.dumps({
            "do_resize": True, "size": {"shortest_edge": 32}, "do_center_crop": True,
            "crop_size": {"height": 32, "width": 32}, "do_normalize": True,
            "image_mean": [0.5307] * 3, "image_std": [0.2583] * 3, "resample": 3}))
    enc = load_encoder(f"{family}:{tmp_path / 'm'}")
    x = _images()
    out = _check_interface(enc, x, 16, 32)
    px = enc.preprocess(x)
    assert px.shape == (2, 3, 32, 32)
    with torch.no_grad():
        ref = model(pixel_values=px, output_hidden_states=True)
    torch.testing.assert_close(out.patch_tokens, ref.last_hidden_state[:, n_prefix:])
    pooled_ref = {"ijepa": ref.last_hidden_state.mean(1), "dinov2": ref.last_hidden_state[:, 0],
                  "rad-dino": ref.last_hidden_state[:, 0], "clip": ref.pooler_output}[family]
    torch.testing.assert_close(out.pooled, pooled_ref)
    mid = enc.intermediate(x, [1])[0].flatten(2).transpose(1, 2)
    hs = ref.hidden_states[2][:, n_prefix:]
    torch.testing.assert_close(mid, model.layernorm(hs) if family != "clip" else hs)


def test_hf_preprocessing_matches_image_processor(tmp_path):
    """Our tensor preprocessing equals the HF image processor's on an image that needs no resize."""
    import transformers as T
    _save_hf(tmp_path, "rd", T.Dinov2Model, T.Dinov2Config(**TINY))
    proc = T.BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                               image_mean=[0.5307] * 3, image_std=[0.2583] * 3, do_convert_rgb=True)
    proc.save_pretrained(tmp_path / "rd")
    enc = load_encoder(f"rad-dino:{tmp_path / 'rd'}")
    img = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    ref = proc(images=np.stack([img] * 3, -1), return_tensors="pt")["pixel_values"]
    ours = enc.preprocess(torch.from_numpy(img).float()[None, None] / 255.0)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_full_clip_checkpoint_uses_vision_tower(tmp_path):
    import transformers as T
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    model = _save_hf(tmp_path, "c", T.CLIPModel, T.CLIPConfig(vision_config=TINY, text_config=text))
    enc = load_encoder(f"clip:{tmp_path / 'c'}")
    x = _images()
    with torch.no_grad():
        ref = model.vision_model(pixel_values=enc.preprocess(x))
    torch.testing.assert_close(enc(x).pooled, ref.pooler_output)


def test_mismatched_or_missing_checkpoints_fail_clearly(tmp_path):
    import transformers as T
    _save_hf(tmp_path, "clip", T.CLIPVisionModel, T.CLIPVisionConfig(**TINY))
    with pytest.raises(ValueError, match="expected a model_type of dinov2"):
        load_encoder(f"dinov2:{tmp_path / 'clip'}")
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        load_encoder("dinov2:nobody/no-such-model-xyz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_encoder(f"ijepa:{tmp_path / 'empty'}")
    # right config, weights of another shape
    _save_hf(tmp_path, "ij", T.IJepaModel, T.IJepaConfig(**TINY))
    cfg = json.loads((tmp_path / "ij" / "config.json").read_text())
    cfg["hidden_size"], cfg["intermediate_size"] = 64, 128
    (tmp_path / "ij" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not match the IJepaModel"):
        load_encoder(f"ijepa:{tmp_path / 'ij'}")
    with pytest.raises(ValueError, match="unknown encoder prefix"):
        load_encoder("vgg:whatever")


REMOTE_CONFIG = textwrap.dedent('''
    from transformers import PretrainedConfig
    class TinyReleaseConfig(PretrainedConfig):
        model_type = "tiny_release"
        def __init__(self, hidden_size=16, image_size=32, patch_size=8, num_channels=3, num_hidden_layers=2, **kw):
            self.hidden_size, self.image_size, self.patch_size = hidden_size, image_size, patch_size
            self.num_channels, self.num_hidden_layers = num_channels, num_hidden_layers
            super().__init__(**kw)
''')
REMOTE_MODEL = textwrap.dedent('''
    import torch
    from transformers import PreTrainedModel
    from transformers.modeling_outputs import BaseModelOutput
    from .configuration_tiny import TinyReleaseConfig
    class TinyReleaseModel(PreTrainedModel):
        config_class = TinyReleaseConfig
        def __init__(self, config):
            super().__init__(config)
            d = config.hidden_size
            self.patch = torch.nn.Conv2d(config.num_channels, d, config.patch_size, config.patch_size)
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(d, d) for _ in range(config.num_hidden_layers))
            self.post_init()
        def forward(self, pixel_values, output_hidden_states=False):
            x = self.patch(pixel_values).flatten(2).transpose(1, 2)
            hs = [x]
            for b in self.blocks:
                x = x + torch.tanh(b(x))
                hs.append(x)
            return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(hs) if output_hidden_states else None)
''')


def test_radjepa_release_needs_trust_flag(tmp_path):
    import importlib.util as iu
    import sys
    d = tmp_path / "release"
    d.mkdir()
    (d / "configuration_tiny.py").write_text(REMOTE_CONFIG)
    (d / "modeling_tiny.py").write_text(REMOTE_MODEL)
    (d / "__init__.py").write_text("")
    spec = iu.spec_from_file_location("tinyrelease", d / "__init__.py", submodule_search_locations=[str(d)])
    pkg = iu.module_from_spec(spec)
    sys.modules["tinyrelease"] = pkg
    try:
        from tinyrelease.modeling_tiny import TinyReleaseModel  # noqa: F401  (import through the package)
        from tinyrelease.configuration_tiny import TinyReleaseConfig
        torch.manual_seed(0)
        model = TinyReleaseModel(TinyReleaseConfig()).eval()
        from safetensors.torch import save_file
        save_file(model.state_dict(), str(d / "model.safetensors"))
    finally:
        for k in [k for k in sys.modules if k.startswith("tinyrelease")]:
            del sys.modules[k]
    cfg = TinyReleaseConfig().to_dict()
    cfg.update(architectures=["TinyReleaseModel"], auto_map={"AutoConfig": "configuration_tiny.TinyReleaseConfig",
                                                             "AutoModel": "modeling_tiny.TinyReleaseModel"})
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "__init__.py").unlink()
    with pytest.raises(PermissionError, match="--trust-remote-code"):
        load_encoder(f"radjepa-release:{d}")
    enc = load_encoder(f"radjepa-release:{d}", trust_remote_code=True)
    x = _images()
    out = _check_interface(enc, x, 16, 16)
    with torch.no_grad():
        ref = model(enc.preprocess(x)).last_hidden_state
    torch.testing.assert_close(out.patch_tokens, ref)


def test_official_ijepa_checkpoint(tmp_path):
    ckpt = pytest.importorskip("radjepa_cli.models.checkpoint")
    if not hasattr(ckpt, "import_ijepa_official"):
        pytest.skip("checkpoint.import_ijepa_official not available")
    torch.manual_seed(0)
    vit = build_encoder("vit_tiny", img_size=28, patch_size=14, in_chans=3, depth=2).eval()
    from radjepa_cli.models.vit import sincos_pos_embed
    sd = {f"module.{k}": v for k, v in vit.state_dict().items()}
    sd["module.pos_embed"] = sincos_pos_embed(192, (2, 2))[None]  # official files store the fixed table
    torch.save({"encoder": sd, "target_encoder": sd, "epoch": 300}, tmp_path / "IN1K-vit.t.14-300e.pth.tar")
    enc = load_encoder(f"ijepa-official:{tmp_path / 'IN1K-vit.t.14-300e.pth.tar'}")
    x = _images(s=28)
    out = _check_interface(enc, x, 4, 192)
    with torch.no_grad():
        ref = vit.forward_features(enc.preprocess(x))
    torch.testing.assert_close(out.patch_tokens, ref)
    assert enc.preprocess(x).shape[1] == 3
