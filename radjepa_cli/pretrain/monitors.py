"""Collapse monitors and the non-finite-loss stop.

JEPA training can collapse (every image → the same features) without the loss complaining: the loss of a
constant predictor on constant targets is 0. So every N steps we measure the target encoder's features:
  * `target_std`    — per-feature std across tokens, averaged over features (→ 0 under collapse);
  * `rankme`        — RankMe effective rank (Garrido et al. 2023): exp(entropy of the normalised singular
                      values) of the [tokens × D] feature matrix; between 1 and D;
  * `rankme_pooled` — the same on average-pooled per-image features (what the probes use), when the batch allows.
A warning is raised once when a value falls below `warn_fraction` of its best so far.
"""
from __future__ import annotations

import dataclasses
import math

import torch


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf: the run stops and the last good checkpoint is kept."""


def effective_rank(features: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe of a [n, D] matrix: exp(−Σ p log p), p = σ / Σσ (+eps), σ the singular values."""
    x = features.detach().float().reshape(-1, features.shape[-1])
    if x.shape[0] < 2:
        return float("nan")
    s = torch.linalg.svdvals(x)
    p = s / s.sum() + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def feature_std(features: torch.Tensor) -> float:
    x = features.detach().float().reshape(-1, features.shape[-1])
    return float(x.std(dim=0).mean())


@dataclasses.dataclass
class CollapseMonitor:
    warn_fraction: float = 0.5       # warn when a value drops below this fraction of its best
    max_tokens: int = 4096           # SVD cost cap: a random subset of the batch's tokens
    best: dict[str, float] = dataclasses.field(default_factory=dict)
    warned: set[str] = dataclasses.field(default_factory=set)

    def measure(self, target_tokens: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, float]:
        """target_tokens [B, N, D] from the target encoder. Returns {target_std, rankme, rankme_pooled?}."""
        B, N, D = target_tokens.shape
        flat = target_tokens.detach().float().reshape(B * N, D)
        if flat.shape[0] > self.max_tokens:
            # Subsample on CPU with a private generator: monitoring must not move the training RNG.
            idx = torch.randperm(flat.shape[0], generator=generator)[: self.max_tokens].to(flat.device)
            flat = flat[idx]
        out = {"target_std": feature_std(flat), "rankme": effective_rank(flat)}
        if B >= 8:
            out["rankme_pooled"] = effective_rank(target_tokens.detach().float().mean(dim=1))
        return out

    def check(self, values: dict[str, float]) -> list[str]:
        """Update the running best; return warnings for values that fell below warn_fraction × best."""
        warnings = []
        for k, v in values.items():
            if not math.isfinite(v):
                continue
            best = self.best.get(k, v)
            if v < self.warn_fraction * best and k not in self.warned:
                self.warned.add(k)
                warnings.append(f"{k} fell to {v:.4g} (best {best:.4g}): the representation may be collapsing; "
                                f"consider a lower LR or a higher EMA start momentum")
            elif v >= self.warn_fraction * best:
                self.warned.discard(k)   # recovered: warn again if it falls again
            self.best[k] = max(best, v)
        return warnings

    def state_dict(self) -> dict:
        return {"best": dict(self.best)}

    def load_state_dict(self, state: dict) -> None:
        self.best = {k: float(v) for k, v in state.get("best", {}).items()}
