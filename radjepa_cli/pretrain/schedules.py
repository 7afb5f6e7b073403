"""I-JEPA's schedules, all indexed by optimizer step (never by micro-batch, so gradient accumulation cannot
speed them up): LR linear warmup then cosine, weight decay cosine 0.04 → 0.4, EMA momentum linear 0.996 → 1.0.

Indexing as official I-JEPA: its LR and WD schedulers are stepped *before* each update, so the update that follows
`step` optimizer steps (0-based) uses the schedule at step + 1 — the first update already uses
start_lr + (lr − start_lr)/warmup, and the last one final_lr / final_wd. Its momentum generator is read *after* the
update, from 0: the first EMA uses ema_start. `at(step)` returns exactly what that update uses.

Pure functions of the step: a resumed run recomputes them from `step` alone, so there is no scheduler state
to checkpoint or to get out of sync.
"""
from __future__ import annotations

import dataclasses
import math


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Half-cosine from `start` (step 0) to `end` (step `total`), constant after."""
    t = min(max(step, 0), total) / max(total, 1)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


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
        """LR of the update that follows optimizer step `step` (0-based): the official scheduler's value after
        step + 1 calls (same operation order, so the values agree bit for bit)."""
        k = step + 1
        if k < self.warmup_steps:
            return self.start_lr + (k / self.warmup_steps) * (self.lr - self.start_lr)
        return cosine(k - self.warmup_steps, self.total_steps - self.warmup_steps, self.lr, self.final_lr)

    def wd_at(self, step: int) -> float:
        """Weight decay of the update that follows optimizer step `step` (0-based; official: step + 1 calls)."""
        return cosine(step + 1, self.total_steps, self.wd, self.final_wd)

    def momentum_at(self, step: int) -> float:
        """EMA momentum used by the update that *follows* optimizer step `step` (0-based)."""
        return self.ema_start + (self.ema_end - self.ema_start) * min(step, self.total_steps) / self.total_steps

    def at(self, step: int) -> dict[str, float]:
        return {"lr": self.lr_at(step), "wd": self.wd_at(step), "momentum": self.momentum_at(step)}
