"""Encoder configs and checkpoints: our run dirs, checkpoint files, export dirs and official I-JEPA checkpoints.

Our encoder's state-dict keys are timm's (`patch_embed.proj`, `blocks.N.attn.qkv`, `blocks.N.mlp.fc1`, `norm`) and
equal official I-JEPA's after stripping DDP's `module.`; the only difference is that I-JEPA (and a timm export)
store the fixed sin-cos table as `pos_embed` (`predictor_pos_embed` in the predictor), which we recompute instead.
Loading checks such a stored table against ours, so a model trained with other positions is refused, not
silently changed. Only safetensors and `torch.load(weights_only=True)` are ever used to read weights.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from radjepa_cli.models.layouts import from_hf_state_dict
from radjepa_cli.models.vit import (DEFAULT_MEAN, DEFAULT_STD, ENCODER_PRESETS, VisionTransformerEncoder,
                                    build_encoder, sincos_pos_embed)

CONFIG_NAME = "encoder_config.json"
WEIGHTS_NAME = "model.safetensors"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# Heads are not visible in the weights: the published head count per width (I-JEPA's ViT-g/16 is 1408 wide).
_HEADS_BY_WIDTH = {p.embed_dim: p.num_heads for p in ENCODER_PRESETS.values()} | {1408: 16}
_ARCH_KEYS = ("model", "embed_dim", "depth", "num_heads", "mlp_ratio", "img_size", "patch_size", "in_chans")


# ---------------------------------------------------------------------------------------------- configs
def encoder_config(enc: VisionTransformerEncoder) -> dict[str, Any]:
    """Everything needed to rebuild `enc` and feed it: architecture, input size and normalisation."""
    img = enc.patch_embed.img_size
    mean = getattr(enc, "norm_mean", None)
    std = getattr(enc, "norm_std", None)
    return {
        "format": "radjepa-encoder", "version": 1,
        "model": getattr(enc, "preset", None) or _nearest_preset(enc.embed_dim),
        "embed_dim": int(enc.embed_dim), "depth": len(enc.blocks), "num_heads": int(enc.num_heads),
        "mlp_ratio": float(enc.blocks[0].mlp.fc1.out_features / enc.embed_dim),
        "img_size": int(img[0]), "patch_size": int(enc.patch_size), "in_chans": int(enc.in_chans),
        "mean": mean if mean is not None else DEFAULT_MEAN, "std": std if std is not None else DEFAULT_STD,
        "layer_norm_eps": float(enc.norm.eps), "class_token": False, "pos_embed": "sincos-2d", "pool": "avg",
    }


def build_encoder_from_config(cfg: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None
                              ) -> VisionTransformerEncoder:
    """Inverse of `encoder_config` (explicit widths override the preset named in `model`). With `state_dict`
    (our layout), the weights are loaded strictly without paying for a random init first."""
    missing = [k for k in ("model", "img_size", "patch_size", "in_chans") if k not in cfg]
    if missing:
        raise KeyError(f"encoder config lacks {missing}; has {sorted(cfg)}")
    kw = {k: cfg[k] for k in ("embed_dim", "depth", "num_heads", "mlp_ratio") if k in cfg}
    build = lambda: build_encoder(cfg["model"], img_size=int(cfg["img_size"]),  # noqa: E731
                                  patch_size=int(cfg["patch_size"]), in_chans=int(cfg["in_chans"]), **kw)
    enc = build() if state_dict is None else load_without_init(build, state_dict)
    enc.norm_mean, enc.norm_std = cfg.get("mean", DEFAULT_MEAN), cfg.get("std", DEFAULT_STD)
    return enc


def load_without_init(build, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """`build()` on the meta device, then adopt `state_dict` (strict): a ViT-H loads without initialising 630M
    random weights first. Non-persistent buffers are recomputed by each submodule's `rebuild_buffers()`."""
    with torch.device("meta"):
        module = build()
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()},
                           strict=True, assign=True)
    for sub in module.modules():
        if callable(getattr(sub, "rebuild_buffers", None)):
            sub.rebuild_buffers()
    leftover = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    if leftover:
        raise RuntimeError(f"{type(module).__name__}: {leftover[:3]} not in the state dict")
    return module


def infer_encoder_config(sd: dict[str, torch.Tensor], img_size: int | None = None) -> dict[str, Any]:
    """Architecture from the weights alone (official I-JEPA files carry no config). Heads follow the width."""
    try:
        w = sd["patch_embed.proj.weight"]
    except KeyError:
        raise KeyError(f"not a ViT encoder state dict (no patch_embed.proj.weight); keys start {sorted(sd)[:5]}")
    dim, in_chans, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[-1])
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    if img_size is None:
        n = sd["pos_embed"].shape[1] if "pos_embed" in sd else 256
        img_size = int(round(n ** 0.5)) * patch
    if dim not in _HEADS_BY_WIDTH:
        raise ValueError(f"cannot infer the number of heads for width {dim}; write an {CONFIG_NAME}")
    in3 = in_chans == 3
    return {"format": "radjepa-encoder", "version": 1, "model": _nearest_preset(dim), "embed_dim": dim,
            "depth": depth, "num_heads": _HEADS_BY_WIDTH[dim],
            "mlp_ratio": float(sd["blocks.0.mlp.fc1.weight"].shape[0] / dim), "img_size": img_size,
            "patch_size": patch, "in_chans": in_chans,
            "mean": IMAGENET_MEAN if in3 else DEFAULT_MEAN, "std": IMAGENET_STD if in3 else DEFAULT_STD,
            "layer_norm_eps": 1e-6, "class_token": False, "pos_embed": "sincos-2d", "pool": "avg"}


def _nearest_preset(dim: int) -> str:
    return min(ENCODER_PRESETS, key=lambda n: abs(ENCODER_PRESETS[n].embed_dim - dim))


# ---------------------------------------------------------------------------------------------- state dicts
def strip_module_prefix(sd: dict[str, Any]) -> dict[str, Any]:
    """Drop DDP/FSDP wrappers' `module.` (and torch.compile's `_orig_mod.`) key prefixes."""
    out = {}
    for k, v in sd.items():
        for p in ("module.", "_orig_mod."):
            k = k.removeprefix(p)
        out[k] = v
    return out


def load_state(path: str | Path) -> dict[str, Any]:
    """A .safetensors file, or anything torch.load reads with weights_only=True (never arbitrary pickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def drop_fixed_positions(sd: dict[str, torch.Tensor], grid: tuple[int, int], key: str = "pos_embed",
                         where: str = "state dict") -> dict[str, torch.Tensor]:
    """Remove a stored sin-cos table (`pos_embed`, `predictor_pos_embed`) after checking it equals ours."""
    if key not in sd:
        return sd
    sd = dict(sd)
    stored = sd.pop(key).float()
    stored = stored.reshape(-1, stored.shape[-1])
    ours = sincos_pos_embed(stored.shape[-1], grid)
    if stored.shape != ours.shape or (stored - ours).abs().max() > 1e-4:
        raise ValueError(f"{where}: `{key}` {tuple(stored.shape)} is not the fixed 2-D sin-cos table of a "
                         f"{grid[0]}x{grid[1]} patch grid; learned or interpolated positions are not supported")
    return sd


def to_our_state_dict(sd: dict[str, torch.Tensor], cfg: dict[str, Any], where: str) -> dict[str, torch.Tensor]:
    """Any supported encoder layout → our keys: ours, DDP-prefixed, official I-JEPA, our timm or HF exports."""
    sd = strip_module_prefix(sd)
    if any(k.startswith(("embeddings.", "layers.", "encoder.layer.")) for k in sd):
        sd = from_hf_state_dict(sd)
    grid = (cfg["img_size"] // cfg["patch_size"],) * 2
    return drop_fixed_positions(sd, grid, "pos_embed", where)


# ---------------------------------------------------------------------------------------------- loading
def load_encoder_checkpoint(path: str | Path, which: str = "target_encoder"
                            ) -> tuple[VisionTransformerEncoder, dict[str, Any]]:
    """An encoder (eval mode) and its info (the encoder config plus source, which, step, epoch).

    `path`: a `radjepa pretrain` run dir (encoder_config.json + checkpoints/latest.pt), a checkpoint file of ours
    or official I-JEPA's (`which` picks encoder / target_encoder), a bare state dict (.pt / .safetensors), or a
    `radjepa export` dir of any format. The architecture comes from encoder_config.json next to the weights (or
    one level up, for RUN/checkpoints/*.pt), else it is inferred from the weights.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run dir, checkpoint or export dir")
    cfg_dir = path if path.is_dir() else path.parent
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            weights = path / "checkpoints" / "latest.pt"
        if not weights.is_file():
            raise FileNotFoundError(f"{path}: neither {WEIGHTS_NAME} (an export dir) nor checkpoints/latest.pt "
                                    "(a run dir) is there")
    else:
        weights = path
    obj = load_state(weights)
    sd, meta = _pick_state_dict(obj, which, weights)

    cfg_file = next((d / CONFIG_NAME for d in (cfg_dir, cfg_dir.parent) if (d / CONFIG_NAME).is_file()), None)
    if cfg_file is not None:
        cfg = json.loads(cfg_file.read_text())
    else:
        cfg = infer_encoder_config(strip_module_prefix(sd))
    try:
        enc = build_encoder_from_config(cfg, to_our_state_dict(sd, cfg, str(weights)))
    except (RuntimeError, KeyError, ValueError) as e:
        raise ValueError(f"{weights}: weights do not fit the encoder described by "
                         f"{cfg_file or 'the inferred config'}: {str(e).splitlines()[0]}") from None
    info = {**cfg, "source": str(path), "weights": str(weights), "which": meta.get("which"),
            "step": meta.get("step"), "epoch": meta.get("epoch")}
    return enc.eval(), info


def _pick_state_dict(obj: Any, which: str, where: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{where}: expected a checkpoint dict or a state dict, got {type(obj).__name__}")
    if all(torch.is_tensor(v) for v in obj.values()):
        return obj, {"which": None}  # a bare state dict (exports, .safetensors)
    if which not in obj:
        parts = [k for k in ("encoder", "target_encoder", "predictor") if k in obj]
        raise KeyError(f"{where}: no {which!r} in this checkpoint (it has {parts or sorted(obj)[:8]})")
    return obj[which], {"which": which, "step": obj.get("step"), "epoch": obj.get("epoch")}


def ijepa_official_state_dicts(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """An official I-JEPA checkpoint (`module.`-prefixed encoder / predictor / target_encoder, stored sin-cos
    tables) as state dicts in our layout: load them into `build_encoder_from_config(infer_encoder_config(…))` and
    `Predictor(grid, embed_dim, predictor_dim, depth, num_heads)`."""
    return convert_official(load_state(path), path)[0]


def convert_official(obj: Any, path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """(state dicts in our layout per part, {"epoch", "grid"}): `module.` stripped, sin-cos tables checked and
    dropped. The grid is read off the stored `pos_embed` (square, as official I-JEPA's)."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected an I-JEPA checkpoint dict, got {type(obj).__name__}")
    parts = {k: strip_module_prefix(obj[k]) for k in ("encoder", "target_encoder", "predictor") if k in obj}
    if "encoder" not in parts and "target_encoder" not in parts:
        raise KeyError(f"{path}: not an I-JEPA checkpoint (no 'encoder' / 'target_encoder'; has {sorted(obj)[:8]})")
    enc = parts.get("target_encoder", parts.get("encoder"))
    side = int(round(enc["pos_embed"].shape[1] ** 0.5)) if "pos_embed" in enc else 16
    out = {}
    for name, sd in parts.items():
        key = "predictor_pos_embed" if name == "predictor" else "pos_embed"
        out[name] = drop_fixed_positions(sd, (side, side), key, f"{path} [{name}]")
    return out, {"epoch": obj.get("epoch"), "grid": (side, side)}


def import_ijepa_official(path: str | Path, which: str = "target_encoder"
                          ) -> tuple[VisionTransformerEncoder, dict[str, Any]]:
    """An official I-JEPA checkpoint as our encoder (3 channels, ImageNet normalisation) and its info; all
    converted state dicts (encoder, target_encoder, predictor) are in `info["state_dicts"]`."""
    obj = load_state(path)
    sds, meta = convert_official(obj, path)
    if which not in sds:
        raise KeyError(f"{path}: no {which!r} part (has {sorted(sds)})")
    cfg = {**infer_encoder_config(strip_module_prefix(obj[which])), "epoch": meta["epoch"]}
    enc = build_encoder_from_config(cfg, sds[which])
    return enc.eval(), {**cfg, "source": str(path), "which": which, "state_dicts": sds}
