"""`radjepa export`: the target encoder as safetensors, a Hugging Face `IJepaModel` dir, or a timm model dir.

  safetensors  model.safetensors (our keys) + encoder_config.json
  hf           config.json + model.safetensors written by `IJepaModel.save_pretrained` (layer_norm_eps 1e-6,
               qkv split into q/k/v, our sin-cos table as `position_embeddings`) + preprocessor_config.json.
               Exact at `image_size`; other sizes go through HF's bicubic interpolation of the table
               (`interpolate_pos_encoding=True`, square grids only), which approximates our exact sin-cos.
  timm         config.json (timm hub format) + model.safetensors: `timm.create_model("local-dir:DIR",
               pretrained=True)`, or `VisionTransformer(**timm_model_args(cfg))` + load_state_dict.

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
from radjepa_cli.models.checkpoint import (CONFIG_NAME, WEIGHTS_NAME, encoder_config, load_encoder_checkpoint,
                                           load_without_init)
from radjepa_cli.models.vit import VisionTransformerEncoder, sincos_pos_embed

FORMATS = ("safetensors", "hf", "timm")
_TIMM_ARCH = {"vit_tiny": "vit_tiny_patch16_224", "vit_small": "vit_small_patch16_224",
              "vit_base": "vit_base_patch16_224", "vit_large": "vit_large_patch16_224",
              "vit_huge": "vit_huge_patch14_224"}
# Our block keys ↔ IJepaModel's (transformers 5.x names; checked by a strict load at export time).
_HF_BLOCK = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.o_proj",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


# ---------------------------------------------------------------------------------------------- Hugging Face
def hf_config(cfg: dict[str, Any]):
    from transformers import IJepaConfig
    return IJepaConfig(hidden_size=cfg["embed_dim"], num_hidden_layers=cfg["depth"],
                       num_attention_heads=cfg["num_heads"], intermediate_size=int(cfg["embed_dim"] * cfg["mlp_ratio"]),
                       hidden_act="gelu", layer_norm_eps=1e-6, image_size=cfg["img_size"],
                       patch_size=cfg["patch_size"], num_channels=cfg["in_chans"], qkv_bias=True)


def to_hf_state_dict(sd: dict[str, torch.Tensor], cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    grid = (cfg["img_size"] // cfg["patch_size"],) * 2
    out = {"embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
           "embeddings.position_embeddings": sincos_pos_embed(cfg["embed_dim"], grid).unsqueeze(0),
           "layernorm.weight": sd["norm.weight"], "layernorm.bias": sd["norm.bias"]}
    for i in range(cfg["depth"]):
        src, dst = f"blocks.{i}.", f"layers.{i}."
        # timm's fused qkv rows are [q; k; v] (reshape(B, N, 3, H, d) in Attention.forward).
        for part in ("weight", "bias"):
            q, k, v = sd[f"{src}attn.qkv.{part}"].chunk(3, dim=0)
            out.update({f"{dst}attention.q_proj.{part}": q, f"{dst}attention.k_proj.{part}": k,
                        f"{dst}attention.v_proj.{part}": v})
            for ours, theirs in _HF_BLOCK.items():
                out[f"{dst}{theirs}.{part}"] = sd[f"{src}{ours}.{part}"]
    return {k: v.clone() for k, v in out.items()}  # own storage: q/k/v must not alias one qkv tensor


def from_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """IJepaModel keys → ours (position_embeddings kept as `pos_embed`, checked and dropped by the loader).
    Accepts the in-memory names and the legacy ViT names `save_pretrained` writes to disk."""
    sd = {_hf_modern_key(k): v for k, v in sd.items() if not k.startswith("pooler.")}
    out = {"patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
           "pos_embed": sd["embeddings.position_embeddings"],
           "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
    for i in range(depth):
        src, dst = f"layers.{i}.", f"blocks.{i}."
        for part in ("weight", "bias"):
            out[f"{dst}attn.qkv.{part}"] = torch.cat([sd[f"{src}attention.{p}_proj.{part}"] for p in "qkv"])
            for ours, theirs in _HF_BLOCK.items():
                out[f"{dst}{ours}.{part}"] = sd[f"{src}{theirs}.{part}"]
    return out


_HF_LEGACY = (("encoder.layer.", "layers."), ("attention.attention.query", "attention.q_proj"),
              ("attention.attention.key", "attention.k_proj"), ("attention.attention.value", "attention.v_proj"),
              ("attention.output.dense", "attention.o_proj"), ("intermediate.dense", "mlp.fc1"),
              ("output.dense", "mlp.fc2"))


def _hf_modern_key(k: str) -> str:
    for old, new in _HF_LEGACY:  # order matters: attention.output.dense before output.dense
        k = k.replace(old, new)
    return k


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
@torch.no_grad()
def export(run_or_ckpt: str | Path, out_dir: str | Path, fmt: str = "safetensors", which: str = "target_encoder",
           overwrite: bool = False, img_size: int | None = None) -> dict[str, Any]:
    """Write the encoder of a run dir / checkpoint in `fmt`; returns export_info (also saved in the dir).

    `img_size` re-targets the fixed-size formats (hf, timm) to another resolution with the EXACT sin-cos table
    of the new grid (HF's bicubic interpolation of the table changes features: max |Δ| ≈ 3.8 at 2× on vit_tiny)."""
    from safetensors.torch import save_file
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, not {fmt!r}")
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose a new --out or pass overwrite")
    enc, info = load_encoder_checkpoint(run_or_ckpt, which=which)
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
                       "step": info.get("step"), "epoch": info.get("epoch"),
                       "max_abs_diff_vs_ours": feature_difference(enc, twin, fmt, cfg)}
        write_json(tmp / "export_info.json", export_info)
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
    """Max |our tokens − twin tokens| on a fixed random batch (recorded at export, asserted by the tests)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, cfg["in_chans"], cfg["img_size"], cfg["img_size"], generator=g)
    diff = (enc.forward_features(x) - exported_features(twin, fmt, x)).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f"export {fmt}: features differ from ours by {diff:.2e} (> 1e-3); the export is wrong")
    return diff


def read_export_info(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / "export_info.json").read_text())
