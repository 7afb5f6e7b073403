"""Vision → language projectors (LLaVA-1.5 `mlp2x_gelu`, and the paper's residual adapter).

Default: `mlp2x_gelu` — Linear(vision→LM width), GELU, Linear(LM→LM). It is what LLaVA-1.5 and Table 3's
caption ("a two-layer MLP projector") use, and it works for any pair of widths (e.g. ViT-B 768 → Vicuna 4096).
The paper's Section 4 writes the adapter as A(v) = v + λ·W2·σ(W1·v) with a learnable λ initialised to 1;
that residual form only type-checks when the encoder and LM widths are equal, so it is offered as
`residual` and refuses other widths instead of silently adding a hidden input projection.
"""
from __future__ import annotations

import torch
import torch.nn as nn

PROJECTORS = ("mlp2x_gelu", "residual")
DEFAULT_PROJECTOR = "mlp2x_gelu"


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
