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
from timm.models._manipulate import checkpoint, checkpoint_seq
from timm.models.vision_transformer import VisionTransformer

import radjepa_kernels as K
from radjepa_cli.models.packing import TokenPacking


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
    # Always on the CPU: the result is cached, and a first call under `with torch.device("meta")` (a meta-device
    # build before loading weights) must not leave a meta tensor in the cache.
    cpu = torch.device("cpu")
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 4, dtype=torch.float64, device=cpu) / (embed_dim / 4.0))
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float64, device=cpu),
                            torch.arange(gw, dtype=torch.float64, device=cpu), indexing="ij")
    # I-JEPA's layout: first half encodes the column (w), second half the row (h); each half is [sin | cos].
    parts = []
    for coord in (xs.reshape(-1), ys.reshape(-1)):
        ang = coord[:, None] * omega[None, :]
        parts += [torch.sin(ang), torch.cos(ang)]
    return torch.cat(parts, dim=1).float()


def sincos_pos_embed(embed_dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding [gh*gw, embed_dim] (row-major patch order), on the CPU."""
    return _sincos_cached(embed_dim, int(grid[0]), int(grid[1])).clone()


class KernelAttention(Attention):
    """timm's Attention with the score computation routed through radjepa_kernels.

    `attn_mask` here is a key-padding mask [B, N] (True = valid token), as variable-length masks need, or a
    `TokenPacking` for packed input [1, T, C] (then the fused varlen kernel runs, with no padding at all).
    """

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | TokenPacking | None = None, is_causal: bool = False):
        if is_causal:
            raise ValueError("the encoder/predictor attention is bidirectional")
        if isinstance(attn_mask, TokenPacking):
            return self._forward_packed(x, attn_mask)
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = K.attention(q, k, v, key_padding_mask=attn_mask)
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        return self.proj_drop(self.proj(x))

    def _forward_packed(self, x: torch.Tensor, packing: TokenPacking) -> torch.Tensor:
        _, T, C = x.shape
        q, k, v = self.qkv(x).reshape(T, 3, self.num_heads, self.head_dim).unbind(1)  # each [T, H, d]
        q, k = self.q_norm(q), self.k_norm(k)
        x = K.attention_varlen(q, k, v, packing.cu_seqlens, packing.max_seqlen)
        x = self.norm(x.reshape(1, T, self.attn_dim))
        return self.proj_drop(self.proj(x))


def run_blocks(blocks: nn.Module, x: torch.Tensor, attn_mask, grad_checkpointing: bool) -> torch.Tensor:
    """The blocks in order, as timm runs them: checkpoint_seq without a mask, per-block checkpoints with one."""
    if attn_mask is None and grad_checkpointing:
        return checkpoint_seq(list(blocks), x)
    for blk in blocks:
        x = checkpoint(blk, x, attn_mask=attn_mask) if grad_checkpointing else blk(x, attn_mask=attn_mask)
    return x


def padding_of(idx: torch.Tensor, padded: bool | None) -> str:
    """Whether -1-padded indices `idx` hold padding: "yes" / "no" from the caller's word (`padded`, e.g. the
    collator's variable_length) or, when not given, from the indices on the host; "maybe" for indices on a GPU,
    where reading them would stall the stream (then a key-padding mask is built on the device: correct either way,
    but neither the dense nor the packed fast path)."""
    if padded is not None:
        return "yes" if padded else "no"
    if idx.device.type == "cpu":
        return "yes" if bool((idx < 0).any()) else "no"
    return "maybe"


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
        # Not persisted: recomputed from the grid (checkpoints stay as they were).
        self.register_buffer("pos_table", sincos_pos_embed(embed_dim, self.grid_size), persistent=False)
        self._other_tables: dict[tuple, torch.Tensor] = {}
        init_jepa_weights(self, self.blocks, init)

    def rebuild_buffers(self) -> None:
        """Recompute the non-persistent buffers (after a meta-device build adopted a state dict)."""
        self.pos_table = sincos_pos_embed(self.embed_dim, self.grid_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.patch_embed.grid_size)

    def position_table(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """Sin-cos positions [h·w, D] on like's device and dtype: a buffer for the model's own grid (moved with the
        model, never rebuilt or copied from the host per forward); other grids (dynamic image sizes) are built once
        per grid and device."""
        if (h, w) == self.grid_size:
            table = self.pos_table
        else:
            key = (h, w, str(like.device))
            table = self._other_tables.get(key)
            if table is None:
                table = self._other_tables[key] = sincos_pos_embed(self.embed_dim, (h, w)).to(like.device)
        return table.to(like.dtype)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """timm's hook, used by every path (forward_features, timm's forward_intermediates): patch tokens
        [B, h, w, D] → [B, h·w, D] with the fixed sin-cos positions added."""
        B, h, w, D = x.shape
        return self.pos_drop(x.reshape(B, h * w, D) + self.position_table(h, w, x))

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch tokens [B, N, D] with sin-cos positions added, and the patch grid (h, w)."""
        x = self.patch_embed(x)  # dynamic_img_size → [B, h, w, D]
        grid = (x.shape[1], x.shape[2])
        return self._pos_embed(x), grid

    def forward_features(self, x: torch.Tensor, masks: torch.Tensor | Sequence[torch.Tensor] | None = None,
                         key_padding_mask: torch.Tensor | None = None, padded: bool | None = None) -> torch.Tensor:
        """x: images [B, C, H, W]. masks: patch indices [M, B, K] (or a list of [B, K]); -1 = padding. `padded`
        says whether the masks hold padding (the collator's variable_length); unknown (None), it is read from masks
        on the CPU, and masks on a GPU get a key-padding mask (see padding_of). Padded masks run the packed varlen
        kernel on the Triton path and a key-padding mask otherwise. Returns layer-normed tokens [B, N, D], or [M*B, K, D] for masked input
        (mask-major, as I-JEPA); rows at padding are zero on the packed path and unspecified on the other."""
        x, _ = self.embed(x)
        packing = None
        if masks is not None:
            idx = torch.stack(list(masks)) if not torch.is_tensor(masks) else masks
            pad = padding_of(idx, padded)
            if key_padding_mask is None and pad != "no":
                if pad == "yes" and K.varlen_fused(x, self.embed_dim // self.num_heads):
                    packing = TokenPacking.from_masks(idx, device=x.device)
                else:
                    key_padding_mask = (idx >= 0).reshape(-1, idx.shape[-1]).to(x.device, non_blocking=True)
            x = K.gather_tokens(x, idx.to(x.device, non_blocking=True))
        if packing is not None:
            x = run_blocks(self.blocks, packing.pack(x), packing, self.grad_checkpointing)
            return packing.unpack(self.norm(x))
        return self.norm(run_blocks(self.blocks, x, key_padding_mask, self.grad_checkpointing))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        return x.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def block_outputs(self, x: torch.Tensor, indices: Sequence[int], norm: bool = True) -> list[torch.Tensor]:
        """Token outputs [B, N, D] of the given blocks (0-based, negative from the end), in the order asked, for
        ViTDet/UPerNet decoders and LLaVA. (timm's `get_intermediate_layers(x, n=1, norm=False)` also works.)"""
        depth = len(self.blocks)
        wanted = [i + depth if i < 0 else i for i in indices]
        bad = [i for i, w in zip(indices, wanted) if not 0 <= w < depth]
        if bad:
            raise IndexError(f"blocks {bad} out of range for depth {depth}")
        outs = self.forward_intermediates(x, sorted(set(wanted)), norm=norm, stop_early=True, output_fmt="NLC",
                                          intermediates_only=True)
        by_block = dict(zip(sorted(set(wanted)), outs))
        return [by_block[w] for w in wanted]


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
