"""Vision → language projectors (LLaVA-1.5 `mlp2x_gelu`, and the paper's residual adapter).

Default: `mlp2x_gelu` — Linear(vision→LM width), GELU, Linear(LM→LM). It is what LLaVA-1.5 and Table 3's
caption ("a two-layer MLP projector") use, and it works for any pair of widths (e.g. ViT-B 768 → Vicuna 4096).
The paper's Section 4 writes the adapter as A(v) = v + λ·W2·σ(W1·v) with a learnable λ initialised to 1;
that residual form only type-checks when the encoder and LM widths are equal, so it is offered as
`residual` and refuses other widths instead of silently adding a hidden input projection.

Token normalisation (`token_norm`): `standardize` subtracts the training set's mean token at each grid position
and divides by its standard deviation before the projector. Chest images (and phantoms) share one anatomy, so
raw tokens are dominated by the common mean image; what tells images apart is the small per-position deviation.
Without it a small LM trained from scratch learns the text prior and ignores the image (phantom val loss with
real images = with shuffled images). The statistics are buffers of the projector, saved with its weights.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

PROJECTORS = ("mlp2x_gelu", "residual")
DEFAULT_PROJECTOR = "mlp2x_gelu"
TOKEN_NORMS = ("none", "standardize")
DEFAULT_TOKEN_NORM = "none"


class MLP2xGelu(nn.Sequential):
    """LLaVA-1.5's projector: Linear(in→out), GELU, Linear(out→out)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        self.in_dim, self.out_dim = in_dim, out_dim


class ResidualAdapter(nn.Module):
    """A(v) = v + λ·W2·GELU(W1·v) (RadJEPA Section 4); λ is a learnable scalar initialised to `lam_init`."""

    def __init__(self, dim: int, hidden_dim: int | None = None, lam_init: float = 1.0):
        super().__init__()
        hidden_dim = hidden_dim or dim
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.lam = nn.Parameter(torch.tensor(float(lam_init)))
        self.in_dim = self.out_dim = dim

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v + self.lam * self.fc2(self.act(self.fc1(v)))


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """The projector `kind` ('mlp2x_gelu' | 'residual') from encoder width `in_dim` to LM width `out_dim`."""
    if kind == "mlp2x_gelu":
        return MLP2xGelu(in_dim, out_dim)
    if kind == "residual":
        if in_dim != out_dim:
            raise ValueError(
                f"the residual projector v + λ·W2·σ(W1·v) needs equal widths, but the encoder gives {in_dim} and "
                f"the language model takes {out_dim}; use --projector mlp2x_gelu (the default) for this pair")
        return ResidualAdapter(in_dim)
    raise ValueError(f"unknown projector {kind!r}; choose one of {', '.join(PROJECTORS)}")


class TokenStandardizer(nn.Module):
    """(v - mean[pos]) / std[pos] with per-grid-position, per-channel statistics of the training tokens."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-4):
        super().__init__()
        if mean.shape != std.shape or mean.dim() != 2:
            raise ValueError(f"token statistics must both be [N, D], got {tuple(mean.shape)} and {tuple(std.shape)}")
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("std", std.float().clamp_min(eps))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if v.shape[-2:] != self.mean.shape:
            raise ValueError(f"image tokens {tuple(v.shape[-2:])} do not match the standardiser's "
                             f"{tuple(self.mean.shape)} (another encoder or image size than in training?)")
        return (v - self.mean) / self.std


def merge_tokens(v: torch.Tensor, k: int) -> torch.Tensor:
    """[B, N, D] tokens of a square √N×√N grid → [B, N/k², k²·D]: each k×k block of neighbours concatenated
    (Qwen2-VL's 2×2 patch merger). Fewer, richer tokens: the projector MLP sees a whole region at once."""
    B, N, D = v.shape
    side = math.isqrt(N)
    if side * side != N or side % k:
        raise ValueError(f"token_merge {k} needs a square token grid whose side is a multiple of {k}; got {N} tokens")
    g = side // k
    v = v.reshape(B, g, k, g, k, D).permute(0, 1, 3, 2, 4, 5)
    return v.reshape(B, g * g, k * k * D)


class ImageTokenAdapter(nn.Module):
    """Optional per-position standardisation, optional k×k token merge, then the projector.
    in_dim is the encoder's token width (what the bundle checks), out_dim the LM's."""

    def __init__(self, proj: nn.Module, norm: TokenStandardizer | None = None, merge: int = 1):
        super().__init__()
        self.norm, self.proj, self.merge = norm, proj, merge
        self.in_dim, self.out_dim = proj.in_dim // (merge * merge), proj.out_dim

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            v = self.norm(v)
        if self.merge > 1:
            v = merge_tokens(v, self.merge)
        return self.proj(v)


@torch.no_grad()
def token_statistics(tokens, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std [N, D] over samples of a [n, N, D] array (e.g. the float16 token cache memmap), chunked."""
    n = tokens.shape[0]
    if n == 0:
        raise ValueError("cannot compute token statistics from an empty training cache")
    s = s2 = 0.0
    for i in range(0, n, chunk):
        x = torch.from_numpy(np.asarray(tokens[i:i + chunk], dtype=np.float64))
        s = s + x.sum(0)
        s2 = s2 + (x * x).sum(0)
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(0).sqrt()
    # Floor: near-constant positions (image borders) must not turn float16 rounding noise into large inputs.
    return mean.float(), std.clamp_min(0.05 * float(std.mean()) + 1e-6).float()


def build_image_adapter(kind: str, in_dim: int, out_dim: int, *, token_norm: str = DEFAULT_TOKEN_NORM,
                        stats: tuple[torch.Tensor, torch.Tensor] | None = None, token_merge: int = 1) -> nn.Module:
    """The projector `kind` alone (the defaults: LLaVA's exact form), or wrapped with token standardisation
    (`token_norm` 'standardize', with `stats` = training (mean, std) [N, D]) and/or a k×k token merge."""
    if token_norm not in TOKEN_NORMS:
        raise ValueError(f"unknown token_norm {token_norm!r}; choose one of {', '.join(TOKEN_NORMS)}")
    if token_merge < 1:
        raise ValueError(f"token_merge must be >= 1, not {token_merge}")
    proj = build_projector(kind, in_dim * token_merge * token_merge, out_dim)
    if token_norm == "none" and token_merge == 1:
        return proj
    norm = None
    if token_norm == "standardize":
        if stats is None:
            raise ValueError("token_norm 'standardize' needs the training tokens' (mean, std)")
        norm = TokenStandardizer(*stats)
    return ImageTokenAdapter(proj, norm, token_merge)
