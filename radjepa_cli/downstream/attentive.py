"""The attentive probe head (issue 15; V-JEPA's evaluation): learnable queries attend over the frozen patch tokens,
and a linear layer reads the pooled vectors out. `radjepa probe --head attentive [--queries Q]`.

Per query q (a vector in the token width D): weights a_q = softmax_t(x_t · w_q / √D) over the T tokens, pooled
p_q = Σ_t a_q,t x_t, and the logits = Linear(concat_q p_q). This is single-head cross-attention with the key
projection folded into the query vector and the value projection folded into the final linear layer (products of
linear maps), so it is exactly as expressive per query and costs O(T·D) per query on the CPU. V-JEPA's pooler adds
multi-head projections and an MLP block; we keep the probe linear in the pooled tokens so that the head, not extra
capacity, is the difference from `--head linear` (which sees the mean of the same tokens).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class AttentivePoolHead(nn.Module):
    def __init__(self, in_dim: int, n_out: int, queries: int = 4):
        super().__init__()
        if queries < 1:
            raise ValueError(f"--queries must be >= 1, got {queries}")
        self.queries = nn.Parameter(torch.randn(queries, in_dim) * 0.02)   # near 0: starts as mean pooling
        self.linear = nn.Linear(queries * in_dim, n_out)
        self.scale = 1.0 / math.sqrt(in_dim)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """[B, Q, T] attention weights of each query over the tokens."""
        return torch.softmax(torch.einsum("btd,qd->bqt", x, self.queries) * self.scale, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"the attentive head reads patch tokens [B, T, D], got {tuple(x.shape)}")
        pooled = torch.einsum("bqt,btd->bqd", self.attention(x), x)
        return self.linear(pooled.flatten(1))
