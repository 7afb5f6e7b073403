"""Other libraries' state-dict layouts of our encoder: Hugging Face `IJepaModel` keys (both ways) and channel
layouts. Pure key/tensor mapping with no I/O, so both the loaders (checkpoint.py) and the writers (export.py) use
it without importing each other.
"""
from __future__ import annotations

from typing import Any

import torch

from radjepa_cli.models.vit import sincos_pos_embed

# Our block keys ↔ IJepaModel's (transformers 5.x names; checked by a strict load at export time).
_HF_BLOCK = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.o_proj",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


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



def replicate_grey_patch_embed(weight: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """[D, 1, p, p] → [D, channels, p, p], each channel weight / channels: a grey image replicated to every channel
    (with the same per-channel normalisation) gives exactly the 1-channel model's patch tokens."""
    if weight.shape[1] != 1:
        raise ValueError(f"expected a 1-channel patch embedding, got {weight.shape[1]} channels")
    return (weight / channels).repeat(1, channels, 1, 1).contiguous()
