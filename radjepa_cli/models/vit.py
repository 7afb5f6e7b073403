"""The RadJEPA / I-JEPA encoder: timm's VisionTransformer without a CLS token, with fixed 2-D sin-cos positions.

Attention goes through `radjepa_kernels.attention` so `--kernels` can switch the fused Triton path on; the
masked token selection of I-JEPA goes through `radjepa_kernels.gather_tokens`.
"""
from __future__ import annotations

import dataclasses
import math
from functools import lru_cache
from typing import Sequence

import torch
import torch.nn as nn
from timm.layers import Attention
from timm.models.vision_transformer import VisionTransformer

import radjepa_kernels as K


@dataclasses.dataclass(frozen=True)
class ViTPreset:
    embed_dim: int
    depth: int
    num_heads: int


# Input normalisation of our own encoders: 1-channel images in [0, 1] → (x - mean) / std. Chest X-ray pixel
# statistics are close to these (MIMIC: mean ≈ 0.53, std ≈ 0.26); the values are saved in every encoder config.
DEFAULT_MEAN = 0.5
DEFAULT_STD = 0.25

# Published widths/depths/heads (ViT paper; I-JEPA uses ViT-H/14 and RadJEPA ViT-B/14).
ENCODER_PRESETS: dict[str, ViTPreset] = {
    "vit_tiny": ViTPreset(192, 12, 3),
    "vit_small": ViTPreset(384, 12, 6),
    "vit_base": ViTPreset(768, 12, 12),
    "vit_large": ViTPreset(1024, 24, 16),
    "vit_huge": ViTPreset(1280, 32, 16),
}


@lru_cache(maxsize=16)
def _sincos_cached(embed_dim: int, gh: int, gw: int) -> torch.Tensor:
    if embed_dim % 4:
        raise ValueError(f"sin-cos positions need embed_dim divisible by 4, got {embed_dim}")
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 4, dtype=torch.float64) / (embed_dim / 4.0))
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64),
                            indexing="ij")
    # I-JEPA's layout: first half encodes the column (w), second half the row (h); each half is [sin | cos].
    parts = []
    for coord in (xs.reshape(-1), ys.reshape(-1)):
        ang = coord[:, None] * omega[None, :]
        parts += [torch.sin(ang), torch.cos(ang)]
    return torch.cat(parts, dim=1).float()


def sincos_pos_embed(embed_dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding [gh*gw, embed_dim] (row-major patch order)."""
    return _sincos_cached(embed_dim, int(grid[0]), int(grid[1])).clone()


class KernelAttention(Attention):
    """timm's Attention with the score computation routed through radjepa_kernels.

    `attn_mask` here is a key-padding mask [B, N] (True = valid token), as variable-length masks need.
    """

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        if is_causal:
            raise ValueError("the encoder/predictor attention is bidirectional")
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = K.attention(q, k, v, key_padding_mask=attn_mask)
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        return self.proj_drop(self.proj(x))


# "official": what official I-JEPA training applies. Its ViT/predictor constructors rescale each block's output
# projections by 1/sqrt(2·layer), but `src/helper.py:init_model` then re-draws every nn.Linear (trunc-normal 0.02,
# zero bias) and resets every LayerNorm, so no rescale reaches training. "rescaled" keeps the constructors' rescale
# (a departure: smaller residual-branch outputs at init, as in BEiT/DeiT-style inits).
INIT_SCHEMES = ("official", "rescaled")


def init_jepa_weights(module: nn.Module, blocks: Sequence[nn.Module], scheme: str = "official") -> None:
    """trunc-normal(0.02) linears and convs (bounds ±2, absolute: nothing is truncated at std 0.02), zero biases,
    unit LayerNorms; with scheme "rescaled", each block's attn.proj / mlp.fc2 is then divided by sqrt(2·layer)."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init must be one of {INIT_SCHEMES}, not {scheme!r}")
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if scheme == "rescaled":
        for layer_id, blk in enumerate(blocks, start=1):
            blk.attn.proj.weight.data.div_(math.sqrt(2.0 * layer_id))
            blk.mlp.fc2.weight.data.div_(math.sqrt(2.0 * layer_id))


class VisionTransformerEncoder(VisionTransformer):
    """ViT encoder without CLS token; `forward_features(x, masks)` keeps only the masked patches (I-JEPA)."""

    def __init__(self, img_size: int = 224, patch_size: int = 14, in_chans: int = 1, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0,
                 init: str = "official", **kw):
        super().__init__(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=0, global_pool="avg",
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
            class_token=False, pos_embed="none", dynamic_img_size=True, drop_path_rate=drop_path_rate,
            fc_norm=False,  # timm moves the final norm after pooling for global_pool="avg"; I-JEPA norms every token
            attn_layer=KernelAttention, weight_init="skip", **kw)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.num_heads, self.mlp_ratio = num_heads, mlp_ratio  # kept for predictor matching and encoder_config
        self.preset: str | None = None  # set by build_encoder
        init_jepa_weights(self, self.blocks, init)

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.patch_embed.grid_size)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch tokens [B, N, D] with sin-cos positions added, and the patch grid (h, w)."""
        x = self.patch_embed(x)  # dynamic_img_size → [B, h, w, D]
        B, h, w, D = x.shape
        pos = sincos_pos_embed(D, (h, w)).to(device=x.device, dtype=x.dtype)
        return x.reshape(B, h * w, D) + pos, (h, w)

    def forward_features(self, x: torch.Tensor, masks: torch.Tensor | Sequence[torch.Tensor] | None = None,
                         key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: images [B, C, H, W]. masks: patch indices [M, B, K] (or a list of [B, K]); -1 = padding.
        Returns layer-normed tokens [B, N, D], or [M*B, K, D] for masked input (mask-major, as I-JEPA)."""
        x, _ = self.embed(x)
        if masks is not None:
            idx = torch.stack(list(masks)) if not torch.is_tensor(masks) else masks
            x = K.gather_tokens(x, idx)
            if key_padding_mask is None and (idx < 0).any():
                key_padding_mask = (idx >= 0).reshape(-1, idx.shape[-1])
        for blk in self.blocks:
            x = blk(x, attn_mask=key_padding_mask)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        return x.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_intermediate_layers(self, x: torch.Tensor, indices: Sequence[int], norm: bool = True) -> list[torch.Tensor]:
        """Token outputs [B, N, D] of the given blocks (0-based), for ViTDet/UPerNet decoders and LLaVA."""
        x, _ = self.embed(x)
        wanted = {i if i >= 0 else len(self.blocks) + i for i in indices}
        out: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in wanted:
                out[i] = self.norm(x) if norm else x
            if len(out) == len(wanted):
                break
        missing = wanted - set(out)
        if missing:
            raise IndexError(f"blocks {sorted(missing)} out of range for depth {len(self.blocks)}")
        return [out[i if i >= 0 else len(self.blocks) + i] for i in indices]


def build_encoder(model: str = "vit_base", img_size: int = 224, patch_size: int = 14, in_chans: int = 1,
                  **kw) -> VisionTransformerEncoder:
    """An encoder from a preset name (vit_tiny … vit_huge); extra kwargs override the preset."""
    if model not in ENCODER_PRESETS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(ENCODER_PRESETS)}")
    p = dataclasses.asdict(ENCODER_PRESETS[model])
    p.update({k: kw.pop(k) for k in list(kw) if k in p})
    enc = VisionTransformerEncoder(img_size=img_size, patch_size=patch_size, in_chans=in_chans, **p, **kw)
    enc.preset = model
    return enc
