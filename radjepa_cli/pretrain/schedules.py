"""I-JEPA's schedules, all indexed by optimizer step (never by micro-batch, so gradient accumulation cannot
speed them up): LR linear warmup then cosine, weight decay cosine 0.04 → 0.4, EMA momentum linear 0.996 → 1.0.

Pure functions of the step: a resumed run recomputes them from `step` alone, so there is no scheduler state
to checkpoint or to get out of sync.
"""
from __future__ import annotations

import dataclasses
import math


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Half-cosine from `start` (step 0) to `end` (step `total`), constant after."""
    t = min(max(step, 0), total) / max(total, 1)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t))


@dataclasses.dataclass(frozen=True)
class Schedules:
    total_steps: int
    warmup_steps: int
    lr: float = 1e-3            # peak
    start_lr: float = 2e-4      # at step 0
    final_lr: float = 1e-6
    wd: float = 0.04
    final_wd: float = 0.4
    ema_start: float = 0.996
    ema_end: float = 1.0

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={self.total_steps}], got {self.warmup_steps}")
        if not 0.0 <= self.ema_start <= self.ema_end <= 1.0:
            raise ValueError(f"need 0 <= ema_start <= ema_end <= 1, got {self.ema_start}, {self.ema_end}")

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start_lr + (self.lr - self.start_lr) * step / self.warmup_steps
        return cosine(step - self.warmup_steps, self.total_steps - self.warmup_steps, self.lr, self.final_lr)

    def wd_at(self, step: int) -> float:
        return cosine(step, self.total_steps, self.wd, self.final_wd)

    def momentum_at(self, step: int) -> float:
        """EMA momentum used by the update that *follows* optimizer step `step` (0-based)."""
        return self.ema_start + (self.ema_end - self.ema_start) * min(step, self.total_steps) / self.total_steps

    def at(self, step: int) -> dict[str, float]:
        return {"lr": self.lr_at(step), "wd": self.wd_at(step), "momentum": self.momentum_at(step)}
