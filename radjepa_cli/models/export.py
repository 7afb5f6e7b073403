"""`radjepa export`: the target encoder as safetensors, a Hugging Face `IJepaModel` dir, or a timm model dir.

  safetensors  model.safetensors (our keys) + encoder_config.json
  hf           config.json + model.safetensors written by `IJepaModel.save_pretrained` (layer_norm_eps 1e-6,
               qkv split into q/k/v, our sin-cos table as `position_embeddings`) + preprocessor_config.json.
               Exact at `image_size`; other sizes go through HF's bicubic interpolation of the table
               (`interpolate_pos_encoding=True`, square grids only), which approximates our exact sin-cos.
  timm         config.json (timm hub format) + model.safetensors: `timm.create_model("local-dir:DIR",
               pretrained=True)`, or `VisionTransformer(**timm_model_args(cfg))` + load_state_dict.

hf and timm are 3-channel by default, as other checkpoints in those ecosystems (RAD-DINO, I-JEPA's ImageNet
models) are, so `Image.open(f).convert("RGB")` + the image processor works: the grey patch embedding is divided
across R, G and B (every channel normalised with our mean/std), so a grey image replicated to RGB gives exactly our
features. `channels=1` keeps the native 1-channel layout; safetensors stays native by default. Each dir has a
README.md saying how to feed images, 16-bit PNGs included (the processor's 1/255 rescale is for 8-bit pixels).

Every export dir also holds encoder_config.json and export_info.json (source, step, max feature difference to
our encoder measured at export time); `load_encoder_checkpoint(DIR)` reads any of them back. The dir is built
under a temporary name and renamed into place, so a partial export never looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from radjepa_cli.io import write_json
from radjepa_cli.models.checkpoint import (CONFIG_NAME, WEIGHTS_NAME, build_encoder_from_config, encoder_config,
                                           load_encoder_checkpoint, load_without_init)
from radjepa_cli.models.layouts import replicate_grey_patch_embed, to_hf_state_dict
from radjepa_cli.models.vit import VisionTransformerEncoder, sincos_pos_embed

FORMATS = ("safetensors", "hf", "timm")
_TIMM_ARCH = {"vit_tiny": "vit_tiny_patch16_224", "vit_small": "vit_small_patch16_224",
              "vit_base": "vit_base_patch16_224", "vit_large": "vit_large_patch16_224",
              "vit_huge": "vit_huge_patch14_224"}
# ---------------------------------------------------------------------------------------------- Hugging Face
def hf_config(cfg: dict[str, Any]):
    from transformers import IJepaConfig
    return IJepaConfig(hidden_size=cfg["embed_dim"], num_hidden_layers=cfg["depth"],
                       num_attention_heads=cfg["num_heads"], intermediate_size=int(cfg["embed_dim"] * cfg["mlp_ratio"]),
                       hidden_act="gelu", layer_norm_eps=1e-6, image_size=cfg["img_size"],
                       patch_size=cfg["patch_size"], num_channels=cfg["in_chans"], qkv_bias=True)


def to_hf_model(enc: VisionTransformerEncoder, cfg: dict[str, Any]):
    from transformers import IJepaModel
    try:
        model = load_without_init(lambda: IJepaModel(hf_config(cfg)), to_hf_state_dict(enc.state_dict(), cfg))
    except RuntimeError as e:
        raise RuntimeError(f"IJepaModel's layout differs from ours (transformers version?): {e}") from None
    return model.eval()


def hf_preprocessor_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A ViTImageProcessor config: resize to img_size, scale to [0, 1], normalise with our mean/std."""
    c = cfg["in_chans"]
    per_channel = lambda v: list(v) if isinstance(v, (list, tuple)) else [float(v)] * c  # noqa: E731
    return {"image_processor_type": "ViTImageProcessor", "do_resize": True, "resample": 3,
            "size": {"height": cfg["img_size"], "width": cfg["img_size"]}, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": per_channel(cfg["mean"]),
            "image_std": per_channel(cfg["std"])}


# ---------------------------------------------------------------------------------------------- timm
def timm_model_args(cfg: dict[str, Any]) -> dict[str, Any]:
    """kwargs for timm's VisionTransformer (or `timm.create_model(arch, **args)`) reproducing our encoder:
    no CLS token, learned-slot `pos_embed` holding our sin-cos table, final norm on every token (fc_norm=False)
    then average pooling, no head."""
    return {"img_size": cfg["img_size"], "patch_size": cfg["patch_size"], "in_chans": cfg["in_chans"],
            "embed_dim": cfg["embed_dim"], "depth": cfg["depth"], "num_heads": cfg["num_heads"],
            "mlp_ratio": cfg["mlp_ratio"], "qkv_bias": True, "class_token": False, "global_pool": "avg",
            "fc_norm": False, "num_classes": 0}


def to_timm_state_dict(sd: dict[str, torch.Tensor], cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    grid = (cfg["img_size"] // cfg["patch_size"],) * 2
    return {**{k: v.contiguous() for k, v in sd.items()},
            "pos_embed": sincos_pos_embed(cfg["embed_dim"], grid).unsqueeze(0)}


def build_timm_model(cfg: dict[str, Any]):
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(**timm_model_args(cfg))


def timm_hub_config(cfg: dict[str, Any]) -> dict[str, Any]:
    c = cfg["in_chans"]
    per_channel = lambda v: list(v) if isinstance(v, (list, tuple)) else [float(v)] * c  # noqa: E731
    return {"architecture": _TIMM_ARCH.get(cfg["model"], "vit_base_patch16_224"), "num_classes": 0,
            "num_features": cfg["embed_dim"], "global_pool": "avg", "model_args": timm_model_args(cfg),
            "pretrained_cfg": {"input_size": [c, cfg["img_size"], cfg["img_size"]], "fixed_input_size": True,
                               "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center",
                               "mean": per_channel(cfg["mean"]), "std": per_channel(cfg["std"]),
                               "num_classes": 0, "pool_size": None, "first_conv": "patch_embed.proj",
                               "classifier": "head", "license": "apache-2.0"}}


# ---------------------------------------------------------------------------------------------- export
def with_channels(enc: VisionTransformerEncoder, channels: int) -> VisionTransformerEncoder:
    """`enc` taking `channels` input channels: a 1-channel encoder becomes a 3-channel one whose output on a grey
    image replicated to every channel equals `enc`'s on the grey image."""
    if channels == enc.in_chans:
        return enc
    if enc.in_chans != 1 or channels != 3:
        raise ValueError(f"can export a 1-channel encoder as 3 channels, not {enc.in_chans} as {channels}")
    cfg = encoder_config(enc)
    per_channel = lambda v: [float(v)] * 3  # noqa: E731  (1-channel configs hold one mean / std)
    cfg.update(in_chans=3, mean=per_channel(_one(cfg["mean"])), std=per_channel(_one(cfg["std"])))
    sd = dict(enc.state_dict())
    sd["patch_embed.proj.weight"] = replicate_grey_patch_embed(sd["patch_embed.proj.weight"], 3)
    out = build_encoder_from_config(cfg, sd).eval()
    out.preset = enc.preset
    return out


def _one(v):
    return v[0] if isinstance(v, (list, tuple)) else v


@torch.no_grad()
def export(run_or_ckpt: str | Path, out_dir: str | Path, fmt: str = "safetensors", which: str = "target_encoder",
           overwrite: bool = False, img_size: int | None = None, channels: int | None = None) -> dict[str, Any]:
    """Write the encoder of a run dir / checkpoint in `fmt`; returns export_info (also saved in the dir).

    `img_size` re-targets the fixed-size formats (hf, timm) to another resolution with the EXACT sin-cos table
    of the new grid (HF's bicubic interpolation of the table changes features: max |Δ| ≈ 3.8 at 2× on vit_tiny).
    `channels`: input channels of the export (default 3 for hf / timm, the encoder's own for safetensors)."""
    from safetensors.torch import save_file
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, not {fmt!r}")
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose a new --out or pass overwrite")
    ours, info = load_encoder_checkpoint(run_or_ckpt, which=which)
    enc = with_channels(ours, channels or (3 if fmt in ("hf", "timm") else int(ours.in_chans)))
    cfg = encoder_config(enc)  # complete and current, whatever the source carried
    if img_size is not None:
        if img_size % cfg["patch_size"]:
            raise ValueError(f"img_size {img_size} is not a multiple of the patch size {cfg['patch_size']}")
        cfg["img_size"] = int(img_size)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        if fmt == "safetensors":
            save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(tmp / WEIGHTS_NAME),
                      metadata={"format": "pt"})
            twin = enc
        elif fmt == "hf":
            twin = to_hf_model(enc, cfg)
            twin.save_pretrained(tmp)
            write_json(tmp / "preprocessor_config.json", hf_preprocessor_config(cfg))
        else:
            sd = to_timm_state_dict(enc.state_dict(), cfg)
            twin = load_without_init(lambda: build_timm_model(cfg), sd).eval()
            save_file(sd, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            write_json(tmp / "config.json", timm_hub_config(cfg))
        write_json(tmp / CONFIG_NAME, cfg)
        export_info = {"format": fmt, "source": str(run_or_ckpt), "which": info.get("which"),
                       "step": info.get("step"), "epoch": info.get("epoch"), "channels": cfg["in_chans"],
                       "max_abs_diff_vs_ours": feature_difference(ours, twin, fmt, cfg)}
        write_json(tmp / "export_info.json", export_info)
        (tmp / "README.md").write_text(model_card(fmt, cfg, export_info))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return export_info


def exported_features(model, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """Normed patch tokens [B, N, D] of an exported twin (our encoder, IJepaModel or timm ViT)."""
    if fmt == "hf":
        return model(pixel_values=x).last_hidden_state
    return model.forward_features(x)


@torch.no_grad()
def feature_difference(enc: VisionTransformerEncoder, twin, fmt: str, cfg: dict[str, Any], n: int = 2) -> float:
    """Max |our tokens − twin tokens| on a fixed random batch (recorded at export, asserted by the tests); a
    3-channel twin of a 1-channel encoder gets the same (normalised) grey batch replicated to 3 channels."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, int(enc.in_chans), cfg["img_size"], cfg["img_size"], generator=g)
    x_twin = x.expand(-1, cfg["in_chans"], -1, -1) if enc.in_chans == 1 else x
    diff = (enc.forward_features(x) - exported_features(twin, fmt, x_twin)).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f"export {fmt}: features differ from ours by {diff:.2e} (> 1e-3); the export is wrong")
    return diff


def model_card(fmt: str, cfg: dict[str, Any], info: dict[str, Any]) -> str:
    """README.md of an export dir: what it is and how to feed it chest X-rays, 16-bit PNGs included."""
    c, size = cfg["in_chans"], cfg["img_size"]
    mean, std = _one(cfg["mean"]), _one(cfg["std"])
    load = {"hf": "from transformers import AutoImageProcessor, IJepaModel\n"
                  "processor = AutoImageProcessor.from_pretrained(DIR)\nmodel = IJepaModel.from_pretrained(DIR).eval()",
            "timm": "import timm\nmodel = timm.create_model(f\"local-dir:{DIR}\", pretrained=True).eval()",
            "safetensors": "from radjepa_cli.models.checkpoint import load_encoder_checkpoint\n"
                           "model, info = load_encoder_checkpoint(DIR)"}[fmt]
    grey_rgb = (f"{c} identical channels: replicate the grey image (the patch embedding is split evenly across the "
                "channels, so this gives exactly the grey encoder's features)") if c == 3 else "1 grey channel"
    return f"""# RadJEPA encoder ({fmt} export)

I-JEPA-pretrained ViT ({cfg['embed_dim']} wide, {cfg['depth']} blocks, patch {cfg['patch_size']}) exported by
`radjepa export` from {info['source']} (step {info.get('step')}, {info.get('which') or 'target_encoder'}).
Max feature difference to the radjepa encoder, measured at export: {info['max_abs_diff_vs_ours']:.1e}.

Input: {size}x{size} pixels, {grey_rgb}; pixel values scaled to [0, 1], then (x - {mean}) / {std}.
Output: layer-normed patch tokens (no CLS token); mean-pool them for an image embedding.

```python
{load}
```

## 8-bit images

{"`processor(images=Image.open(f).convert('RGB'), return_tensors='pt')` does all of the above." if fmt == "hf"
 else "`Image.open(f).convert('L')`, scale by 1/255, resize, normalise as above."}

## 16-bit images (most DICOM-derived PNGs)

Do not `.convert("RGB")` a 16-bit PNG (PIL clips it to 8 bits) and do not let a processor rescale it by 1/255 (that
is for 8-bit pixels; 16-bit values end up far outside [0, 1]). Scale by the bit depth yourself:

```python
import numpy as np
from PIL import Image
img = np.asarray(Image.open(f))                          # uint16 for 16-bit PNGs
x = img.astype(np.float32) / (65535.0 if img.dtype == np.uint16 else 255.0)   # [0, 1]
{"inputs = processor(images=np.repeat(x[..., None], " + str(c) + ", -1), do_rescale=False, return_tensors='pt')"
 if fmt == "hf" else "# resize to " + str(size) + "x" + str(size) + ", normalise, replicate to " + str(c)
 + " channel(s)"}
```
(A 12-bit image stored in 16 bits may need / 4095 instead; check the PNG's value range.)
"""


def read_export_info(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / "export_info.json").read_text())
