"""The I-JEPA predictor: a narrow ViT that maps context tokens + positioned mask tokens to target-token features.

Layout (I-JEPA `VisionTransformerPredictor`): Linear(D → P), its own fixed 2-D sin-cos positions over the patch
grid, a learned mask token, `depth` timm Blocks with the encoder's `KernelAttention`, LayerNorm, Linear(P → D).

Batch layout follows I-JEPA's `repeat_interleave_batch`: with M_ctx context masks, M_pred target masks and B images,
output row r = (i·M_ctx + j)·B + b holds target block i predicted from context block j of image b.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

import radjepa_kernels as K
from radjepa_cli.models.packing import TokenPacking
from radjepa_cli.models.vit import KernelAttention, init_jepa_weights, padding_of, run_blocks, sincos_pos_embed

# Default predictor depth per encoder preset. I-JEPA uses 12 for ViT-H/14 (and its ablation found 12 > 6 for large
# encoders); its code default, and the common choice for ViT-B, is 6. vit_tiny gets 4: at width 384 four blocks
# (7.2M parameters) already outweigh the 5.4M-parameter encoder, and more would only slow CPU pretraining.
PREDICTOR_DEPTH = {"vit_tiny": 4, "vit_small": 6, "vit_base": 6, "vit_large": 12, "vit_huge": 12}
PREDICTOR_DIM = 384


def repeat_interleave_batch(x: torch.Tensor, batch_size: int, repeat: int) -> torch.Tensor:
    """I-JEPA's helper: [N·B, ...] → [N·repeat·B, ...], each B-chunk repeated `repeat` times in place."""
    n = x.shape[0] // batch_size
    if n * batch_size != x.shape[0]:
        raise ValueError(f"repeat_interleave_batch: leading dim {x.shape[0]} is not a multiple of batch {batch_size}")
    return x.reshape(n, 1, batch_size, *x.shape[1:]).expand(n, repeat, batch_size, *x.shape[1:]).reshape(
        n * repeat * batch_size, *x.shape[1:])


def target_valid_mask(masks_pred: torch.Tensor, n_ctx: int) -> torch.Tensor:
    """Bool [M_pred·M_ctx·B, K_pred]: which predictor outputs are real target patches (False = -1 padding)."""
    M, B, Kp = masks_pred.shape
    return repeat_interleave_batch((masks_pred >= 0).reshape(M * B, Kp), B, n_ctx)


class Predictor(nn.Module):
    def __init__(self, grid: tuple[int, int], encoder_dim: int, predictor_dim: int = PREDICTOR_DIM, depth: int = 6,
                 num_heads: int = 12, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0, init: str = "official"):
        super().__init__()
        if predictor_dim % num_heads:
            raise ValueError(f"predictor_dim {predictor_dim} is not divisible by num_heads {num_heads}")
        if predictor_dim % 4:
            raise ValueError(f"predictor_dim {predictor_dim} must be divisible by 4 for 2-D sin-cos positions")
        self.grid = (int(grid[0]), int(grid[1]))
        self.encoder_dim, self.predictor_dim, self.num_heads = encoder_dim, predictor_dim, num_heads
        self.predictor_embed = nn.Linear(encoder_dim, predictor_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_dim))
        # Fixed positions: a buffer (not a parameter) so optimisers and weight decay never see it; not persisted,
        # it is recomputed from the grid (I-JEPA stores a requires_grad=False parameter instead).
        self.register_buffer("pos_embed", sincos_pos_embed(predictor_dim, self.grid), persistent=False)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.predictor_blocks = nn.ModuleList([
            Block(predictor_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=dpr[i],
                  norm_layer=_layer_norm, attn_layer=KernelAttention) for i in range(depth)])
        self.predictor_norm = _layer_norm(predictor_dim)
        self.predictor_proj = nn.Linear(predictor_dim, encoder_dim)
        self.grad_checkpointing = False
        init_jepa_weights(self, self.predictor_blocks, init)  # init: see models/vit.INIT_SCHEMES
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    @property
    def depth(self) -> int:
        return len(self.predictor_blocks)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, ctx: torch.Tensor, masks_ctx: torch.Tensor, masks_pred: torch.Tensor,
                padded: bool | None = None) -> torch.Tensor:
        """ctx: encoder output [M_ctx·B, K_ctx, D] (mask-major); masks_ctx [M_ctx, B, K_ctx] and masks_pred
        [M_pred, B, K_pred] patch indices, -1 = padding. `padded`: whether the masks hold padding (the collator's
        variable_length; None: read from CPU masks; GPU masks get a key-padding mask — see vit.padding_of). Padded masks run
        the packed varlen kernel on the Triton path, a key-padding mask otherwise. Returns
        [M_pred·M_ctx·B, K_pred, D]; rows at padded target positions are zero (mask them out of the loss with
        `target_valid_mask`)."""
        masks_ctx, masks_pred = _as_mask_tensor(masks_ctx), _as_mask_tensor(masks_pred)
        M_ctx, B, K_ctx = masks_ctx.shape
        M_pred, _, K_pred = masks_pred.shape
        if ctx.shape[:2] != (M_ctx * B, K_ctx) or masks_pred.shape[1] != B:
            raise ValueError(f"predictor: ctx {tuple(ctx.shape)} does not match masks_ctx {tuple(masks_ctx.shape)} "
                             f"/ masks_pred {tuple(masks_pred.shape)}")
        pads = {padding_of(masks_ctx, padded), padding_of(masks_pred, padded)}
        pad = "yes" if "yes" in pads else "maybe" if "maybe" in pads else "no"
        valid = None
        if pad != "no":  # on the masks' device: built on the host when they come from the CPU collator
            valid = torch.cat([(masks_ctx >= 0).reshape(M_ctx * B, K_ctx).repeat(M_pred, 1),
                               target_valid_mask(masks_pred, M_ctx)], dim=1)
        masks_ctx = masks_ctx.to(ctx.device, non_blocking=True)
        masks_pred = masks_pred.to(ctx.device, non_blocking=True)
        pos = self.pos_embed.to(dtype=ctx.dtype)

        x = self.predictor_embed(ctx) + _positions_at(pos, masks_ctx)             # [M_ctx·B, K_ctx, P]
        tgt_pos = _positions_at(pos, masks_pred)                                  # [M_pred·B, K_pred, P]
        tgt_pos = repeat_interleave_batch(tgt_pos, B, M_ctx)                      # [M_pred·M_ctx·B, K_pred, P]
        x = x.repeat(M_pred, 1, 1)                                                # context per target block
        x = torch.cat([x, self.mask_token.to(x.dtype) + tgt_pos], dim=1)

        if pad == "yes" and K.varlen_fused(x, self.predictor_dim // self.num_heads):
            packing = TokenPacking.from_valid(valid, device=x.device)
            x = run_blocks(self.predictor_blocks, packing.pack(x), packing, self.grad_checkpointing)
            x = packing.unpack(self.predictor_norm(x))                            # zeros at padding
            return self.predictor_proj(x[:, K_ctx:]) * packing.valid[:, K_ctx:, None].to(x.dtype)
        key_padding = None if valid is None else valid.to(x.device, non_blocking=True)
        x = run_blocks(self.predictor_blocks, x, key_padding, self.grad_checkpointing)
        x = self.predictor_proj(self.predictor_norm(x[:, K_ctx:]))
        if key_padding is not None:
            x = x * key_padding[:, K_ctx:, None].to(x.dtype)
        return x


def _positions_at(pos: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """pos [N, P] looked up at patch indices idx [M, B, K] → [M·B, K, P]; padding (-1) rows are zero."""
    M, B, Kn = idx.shape
    out = pos[idx.clamp(min=0)] * (idx >= 0).unsqueeze(-1).to(pos.dtype)
    return out.reshape(M * B, Kn, pos.shape[-1])


def _layer_norm(dim: int, **kw) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6, **kw)


def _as_mask_tensor(masks) -> torch.Tensor:
    """Masks as one [M, B, K] long tensor (accepts I-JEPA's list of [B, K] tensors)."""
    m = masks if torch.is_tensor(masks) else torch.stack(list(masks))
    if m.dim() == 2:
        m = m.unsqueeze(0)
    if m.dim() != 3:
        raise ValueError(f"masks must be [M, B, K] (or a list of [B, K]); got shape {tuple(m.shape)}")
    return m.long()


def predictor_depth(model: str | None) -> int:
    """The documented default depth for an encoder preset (6 for unknown/custom encoders)."""
    return PREDICTOR_DEPTH.get(model or "", 6)


def build_predictor(encoder: nn.Module, depth: int | None = None, dim: int = PREDICTOR_DIM,
                    num_heads: int | None = None, model: str | None = None, **kw) -> Predictor:
    """A predictor matched to `encoder` (grid, width, heads). `model` names the encoder preset for the default depth;
    when omitted, it is read from `encoder.preset` if set, else inferred from the encoder's width/depth/heads."""
    model = model or getattr(encoder, "preset", None) or _infer_preset(encoder)
    heads = num_heads or encoder.num_heads
    return Predictor(grid=encoder.grid_size, encoder_dim=encoder.embed_dim, predictor_dim=dim,
                     depth=depth if depth is not None else predictor_depth(model), num_heads=heads, **kw)


def _infer_preset(encoder: nn.Module) -> str | None:
    from radjepa_cli.models.vit import ENCODER_PRESETS
    shape = (encoder.embed_dim, len(encoder.blocks), encoder.num_heads)
    for name, p in ENCODER_PRESETS.items():
        if (p.embed_dim, p.depth, p.num_heads) == shape:
            return name
    return None
