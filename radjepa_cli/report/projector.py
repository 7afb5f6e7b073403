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


class NormalizedProjector(nn.Module):
    """A TokenStandardizer followed by a projector; exposes the projector's in_dim/out_dim."""

    def __init__(self, norm: TokenStandardizer, proj: nn.Module):
        super().__init__()
        self.norm, self.proj = norm, proj
        self.in_dim, self.out_dim = proj.in_dim, proj.out_dim

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(v))


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


def wrap_token_norm(kind: str, projector: nn.Module, stats: tuple[torch.Tensor, torch.Tensor] | None) -> nn.Module:
    """`projector` unchanged for token_norm 'none'; else standardised by `stats` (mean, std), [N, D] each."""
    if kind == "none":
        return projector
    if kind == "standardize":
        if stats is None:
            raise ValueError("token_norm 'standardize' needs the training tokens' (mean, std)")
        return NormalizedProjector(TokenStandardizer(*stats), projector)
    raise ValueError(f"unknown token_norm {kind!r}; choose one of {', '.join(TOKEN_NORMS)}")
