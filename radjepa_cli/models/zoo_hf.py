"""Hugging Face encoder families for the zoo: IJepaModel, Dinov2Model (DINOv2, RAD-DINO), CLIPVisionModel, the
RadJEPA release (remote code, only behind --trust-remote-code), and official I-JEPA .pth checkpoints.

All loads are offline (`local_files_only=True`): a spec's PATH is a local directory, or a model id that is
already in the Hugging Face cache. Token conventions (what `FrozenEncoder` returns):
  ijepa       no CLS; patch tokens = last_hidden_state (final LayerNorm); pooled = their mean (I-JEPA protocol)
  dinov2      CLS dropped from the patch tokens; pooled = the final-normed CLS token — the embedding DINO's
              objective trains and RAD-DINO's linear probes use; intermediate blocks get the final LayerNorm
  clip        CLS dropped; patch tokens = last_hidden_state[:, 1:] (CLIP has no final token norm);
              pooled = pooler_output (post-LayerNorm CLS, CLIP's image embedding before projection)
Intermediate block b is hidden_states[b + 1] with the same treatment, so block -1 equals the patch tokens.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from radjepa_cli.models.frozen import EncoderOutput, FrozenEncoder, OursEncoder, Preprocess

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
# RAD-DINO's preprocessor_config.json (microsoft/rad-dino): MIMIC-CXR statistics, shorter edge 518, crop 518.
RAD_DINO_MEAN, RAD_DINO_STD = (0.5307,) * 3, (0.2583,) * 3
_PIL_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}


def resolve_local(path_or_id: str, prefix: str) -> Path:
    """A local model directory, or the HF-cache snapshot of a model id. Never downloads."""
    p = Path(path_or_id).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{prefix}:{path_or_id}: {p} has no config.json; expected a Hugging Face model "
                                    "directory (config.json + model.safetensors / pytorch_model.bin)")
        return p
    if p.exists() or path_or_id.startswith((".", "/", "~")) or path_or_id.count("/") != 1:
        raise FileNotFoundError(f"{prefix}:{path_or_id}: no such model directory (expected a local Hugging Face "
                                "model dir or an 'org/name' id already in the HF cache)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    try:
        return Path(snapshot_download(path_or_id, local_files_only=True))
    except LocalEntryNotFoundError:
        cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        raise FileNotFoundError(f"{prefix}:{path_or_id}: not a local directory and not in the Hugging Face cache "
                                f"({cache}); nothing is downloaded — fetch it yourself, e.g. "
                                f"`hf download {path_or_id}`, then rerun") from None


def _read_json(p: Path) -> dict:
    return json.loads(p.read_text()) if p.is_file() else {}


def _check_model_type(model_dir: Path, prefix: str, accepted: tuple[str, ...]) -> dict:
    cfg = _read_json(model_dir / "config.json")
    mt = cfg.get("model_type")
    if mt not in accepted:
        raise ValueError(f"{prefix}:{model_dir}: expected a model_type of {' / '.join(accepted)} in config.json, "
                         f"found {mt!r}; use the matching prefix (ijepa:, dinov2:, rad-dino:, clip:, …)")
    return cfg


def preprocessing_from_dir(model_dir: Path, default: Preprocess, channels: int) -> Preprocess:
    """Mirror the directory's preprocessor_config.json (HF image processor) when there is one."""
    pc = _read_json(model_dir / "preprocessor_config.json")
    if not pc:
        return Preprocess(**{**default.__dict__, "channels": channels})

    def side(v, fallback):
        if v is None:
            return fallback
        if isinstance(v, int):
            return v
        return v.get("shortest_edge") or v.get("height") or fallback

    size_cfg = pc.get("size")
    crop = side(pc.get("crop_size"), None) if pc.get("do_center_crop", False) else None
    shorter = size_cfg.get("shortest_edge") if isinstance(size_cfg, dict) else None
    if crop is not None:
        size, resize_shorter = crop, (shorter or side(size_cfg, crop))
    else:
        size, resize_shorter = side(size_cfg, default.size), None
    mean = tuple(pc.get("image_mean", default.mean)) if pc.get("do_normalize", True) else (0.0,)
    std = tuple(pc.get("image_std", default.std)) if pc.get("do_normalize", True) else (1.0,)
    return Preprocess(size=int(size), mean=mean, std=std, channels=channels,
                      resize_shorter=int(resize_shorter) if resize_shorter else None,
                      interpolation=_PIL_RESAMPLE.get(pc.get("resample", 3), "bicubic"))


def _from_pretrained(cls, model_dir: Path, prefix: str, allowed_missing: tuple[str, ...] = (), **kw):
    from transformers.utils import logging as hf_logging
    # Missing / mismatched weights are checked below and raised as errors; the load report would only repeat
    # that (or list the unused text tower of a full CLIP checkpoint), so keep it quiet.
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = cls.from_pretrained(model_dir, local_files_only=True, output_loading_info=True, **kw)
    except OSError as e:
        raise FileNotFoundError(f"{prefix}:{model_dir}: could not load weights ({e})") from None
    except RuntimeError as e:  # transformers raises this for weights whose shapes disagree with config.json
        raise ValueError(f"{prefix}:{model_dir}: the weights do not match the {cls.__name__} that config.json "
                         f"describes (shape mismatch: {str(e)[:200]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(allowed_missing)]
    mism = info.get("mismatched_keys", [])
    if missing or mism:
        raise ValueError(f"{prefix}:{model_dir}: the checkpoint does not match {cls.__name__}: "
                         f"missing {missing[:8]}{'…' if len(missing) > 8 else ''}, mismatched {mism[:4]}")
    return model.float().eval()


class HFViTEncoder(FrozenEncoder):
    """A transformers ViT with `n_prefix` leading tokens (CLS / registers) to drop from the patch tokens."""

    def __init__(self, name, model: nn.Module, prep: Preprocess, *, n_prefix: int, pooling: str,
                 token_norm: nn.Module | None, interpolate_flag: bool = True):
        cfg = model.config
        super().__init__(name, model, prep, embed_dim=int(cfg.hidden_size), num_layers=int(cfg.num_hidden_layers),
                         pooling=pooling)
        self.n_prefix = n_prefix
        self.token_norm = token_norm  # applied to intermediate blocks (the final LayerNorm), or None
        self.interpolate_flag = interpolate_flag  # IJepa/CLIP take interpolate_pos_encoding; Dinov2 always does it
        self.patch_size = int(cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[0])
        self.native_size = int(cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0])

    def _run(self, x: torch.Tensor, hidden: bool):
        kw = {"output_hidden_states": True} if hidden else {}
        if self.interpolate_flag:
            kw["interpolate_pos_encoding"] = tuple(x.shape[-2:]) != (self.native_size, self.native_size)
        return self.backbone(pixel_values=x, **kw)

    def _encode(self, x):
        out = self._run(x, hidden=False)
        tokens = out.last_hidden_state[:, self.n_prefix:]
        if self.pooling == "mean":
            pooled = tokens.mean(dim=1)
        elif self.pooling == "cls":
            pooled = out.last_hidden_state[:, 0]
        else:  # "pooler"
            pooled = out.pooler_output
        return EncoderOutput(tokens, pooled, (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size))

    def _blocks(self, x, layers):
        hs = self._run(x, hidden=True).hidden_states  # [embeddings, block 0, …, block L-1]
        outs = []
        for i in layers:
            t = hs[i + 1][:, self.n_prefix:]
            outs.append(self.token_norm(t) if self.token_norm is not None else t)
        return outs, (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)


def load_ijepa(arg: str, trust_remote_code: bool = False) -> FrozenEncoder:
    from transformers import IJepaModel
    d = resolve_local(arg, "ijepa")
    cfg = _check_model_type(d, "ijepa", ("ijepa",))
    size = int(cfg.get("image_size", 224))
    prep = preprocessing_from_dir(d, Preprocess(size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD),
                                  int(cfg.get("num_channels", 3)))
    model = _from_pretrained(IJepaModel, d, "ijepa", allowed_missing=("pooler.",))
    return HFViTEncoder(f"ijepa:{arg}", model, prep, n_prefix=0, pooling="mean", token_norm=model.layernorm)


def _load_dinov2(arg: str, prefix: str, default: Preprocess) -> FrozenEncoder:
    from transformers import Dinov2Model
    d = resolve_local(arg, prefix)
    cfg = _check_model_type(d, prefix, ("dinov2",))
    prep = preprocessing_from_dir(d, default, int(cfg.get("num_channels", 3)))
    model = _from_pretrained(Dinov2Model, d, prefix, allowed_missing=("mask_token",))
    return HFViTEncoder(f"{prefix}:{arg}", model, prep, n_prefix=1, pooling="cls", token_norm=model.layernorm,
                         interpolate_flag=False)


def load_dinov2(arg: str, trust_remote_code: bool = False) -> FrozenEncoder:
    # HF's DINOv2 image processor: shorter edge 256 → centre crop 224, ImageNet statistics
    return _load_dinov2(arg, "dinov2", Preprocess(size=224, resize_shorter=256, mean=IMAGENET_MEAN,
                                                   std=IMAGENET_STD))


def load_rad_dino(arg: str, trust_remote_code: bool = False) -> FrozenEncoder:
    # RAD-DINO: shorter edge 518 → centre crop 518, MIMIC-CXR statistics (its preprocessor config wins if present)
    return _load_dinov2(arg, "rad-dino", Preprocess(size=518, resize_shorter=518, mean=RAD_DINO_MEAN,
                                                     std=RAD_DINO_STD))


def load_clip(arg: str, trust_remote_code: bool = False) -> FrozenEncoder:
    from transformers import CLIPVisionConfig, CLIPVisionModel
    d = resolve_local(arg, "clip")
    cfg = _check_model_type(d, "clip", ("clip", "clip_vision_model"))
    vcfg = CLIPVisionConfig.from_pretrained(d, local_files_only=True)
    prep = preprocessing_from_dir(d, Preprocess(size=vcfg.image_size, resize_shorter=vcfg.image_size,
                                                mean=CLIP_MEAN, std=CLIP_STD), int(vcfg.num_channels))
    model = _from_pretrained(CLIPVisionModel, d, "clip", config=vcfg)
    del cfg
    return HFViTEncoder(f"clip:{arg}", model, prep, n_prefix=1, pooling="pooler", token_norm=None)


def load_ijepa_official(arg: str, trust_remote_code: bool = False) -> FrozenEncoder:
    """An official I-JEPA checkpoint (.pth with 'encoder' / 'target_encoder', `module.`-prefixed, 3 channels).
    Its ViT layout equals ours (fused qkv, sin-cos positions, LayerNorm eps 1e-6); ImageNet normalisation."""
    from radjepa_cli.models import checkpoint
    p = Path(arg).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"ijepa-official:{arg}: no such file (expected an official I-JEPA .pth, e.g. "
                                "IN1K-vit.h.14-300e.pth.tar)")
    vit, info = checkpoint.import_ijepa_official(p)
    return OursEncoder(f"ijepa-official:{arg}", vit, info.get("mean", IMAGENET_MEAN), info.get("std", IMAGENET_STD))


class RemoteCodeEncoder(FrozenEncoder):
    """A trust_remote_code model (the RadJEPA release). Accepts the usual output shapes: a ModelOutput with
    last_hidden_state / hidden_states, or a [B, N, D] tensor; CLS tokens are detected from the patch grid."""

    def __init__(self, name, model: nn.Module, prep: Preprocess, patch_size: int, embed_dim: int, num_layers: int):
        super().__init__(name, model, prep, embed_dim=embed_dim, num_layers=num_layers, pooling="mean")
        self.patch_size = patch_size

    def _call(self, x, hidden):
        try:
            out = self.backbone(pixel_values=x, output_hidden_states=hidden)
        except TypeError:
            out = self.backbone(x)
        return out

    def _split(self, t: torch.Tensor, x: torch.Tensor):
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        extra = t.shape[1] - h * w
        if t.ndim != 3 or extra < 0:
            raise ValueError(f"{self.name}: cannot read patch tokens from an output of shape {tuple(t.shape)} "
                             f"for a {h}×{w} patch grid")
        return t[:, extra:], (h, w)

    def _encode(self, x):
        out = self._call(x, hidden=False)
        t = out if torch.is_tensor(out) else (out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0])
        tokens, grid = self._split(t, x)
        return EncoderOutput(tokens, tokens.mean(dim=1), grid)

    def _blocks(self, x, layers):
        out = self._call(x, hidden=True)
        hs = getattr(out, "hidden_states", None)
        if hs is None:
            raise ValueError(f"{self.name}: the remote model returns no hidden_states; only the last block is "
                             "available (use the linear decoder)")
        res = [self._split(hs[i + 1], x) for i in layers]
        return [r[0] for r in res], res[0][1]


def load_radjepa_release(arg: str, trust_remote_code: bool = False) -> FrozenEncoder:
    d = resolve_local(arg, "radjepa-release")
    if not trust_remote_code:
        raise PermissionError(f"radjepa-release:{arg} runs Python code shipped in {d} (AutoModel with "
                              "trust_remote_code). Read that code, then pass --trust-remote-code to allow it.")
    from transformers import AutoModel
    model = AutoModel.from_pretrained(d, trust_remote_code=trust_remote_code, local_files_only=True).float().eval()
    cfg = model.config
    size = int(getattr(cfg, "image_size", getattr(cfg, "img_size", 224)))
    patch = int(getattr(cfg, "patch_size", 14))
    chans = int(getattr(cfg, "num_channels", getattr(cfg, "in_chans", 3)))
    prep = preprocessing_from_dir(d, Preprocess(size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD), chans)
    dim = int(getattr(cfg, "hidden_size", getattr(cfg, "embed_dim", 768)))
    depth = int(getattr(cfg, "num_hidden_layers", getattr(cfg, "depth", 12)))
    return RemoteCodeEncoder(f"radjepa-release:{arg}", model, prep, patch, dim, depth)


LOADERS = {
    "ijepa": load_ijepa,
    "ijepa-official": load_ijepa_official,
    "dinov2": load_dinov2,
    "rad-dino": load_rad_dino,
    "clip": load_clip,
    "radjepa-release": load_radjepa_release,
}
