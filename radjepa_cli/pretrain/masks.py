"""I-JEPA multi-block masks, as a DataLoader `collate_fn`.

Per batch: one target block size and one context block size are drawn (shared by every image of the batch); per
image, `n_targets` target blocks are placed at random, and `n_context` context blocks are placed at random with
the target patches removed (so the encoder never sees what the predictor must predict). A mask must keep more
than `min_keep` patches; after `max_tries` failed placements, one target region stops constraining the context
(I-JEPA's relaxation). Defaults reproduce I-JEPA (`src/masks/multiblock.py`), quirks included:

  - `independent_scale_aspect=False`: ONE uniform draw sets both scale and aspect, so big targets are always tall.
  - `reach_last_row_col=False`: block sizes are capped at grid-1 and corners drawn with `randint(0, H - h)`
    (exclusive), so no mask ever touches the last row or column.
  - `variable_length=False`: every mask of the batch is cut to the batch's shortest, dropping the bottom patches.

Set the options to fix each quirk; `variable_length=True` keeps every patch and pads with -1 instead (the encoder
and predictor turn -1 into key padding). Placement is vectorised with numpy, so the collator is never the bottleneck
(`benchmarks/masks.py`).

Seeding: each batch gets a generator seeded by (seed, epoch, global batch index). The global index is derived from
the DataLoader worker id (worker w of W yields batches w, w+W, … in the loader's round-robin order), so workers
never repeat each other and a rerun gives the same masks. Block sizes use the stream WITHOUT the rank, so all ranks
draw the same sizes at the same step (as I-JEPA, whose counter is seeded identically on every rank); placements
also mix in the rank.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info

log = logging.getLogger(__name__)


@dataclasses.dataclass
class MaskConfig:
    n_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    n_context: int = 1
    context_scale: tuple[float, float] = (0.85, 1.0)
    context_aspect: tuple[float, float] = (1.0, 1.0)
    min_keep: int = 10                       # a mask needs MORE than this many patches
    max_tries: int = 20                      # failed placements before one constraint is relaxed
    allow_overlap: bool = False              # True: context may cover targets (I-JEPA option, off in its configs)
    independent_scale_aspect: bool = False   # fix: separate uniform draws for scale and aspect
    reach_last_row_col: bool = False         # fix: blocks may span the grid and touch its last row/column
    variable_length: bool = False            # fix: no truncation to the batch minimum; pad with -1

    def __post_init__(self):
        for name in ("target_scale", "target_aspect", "context_scale", "context_aspect"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi) or (name.endswith("scale") and hi > 1):
                raise ValueError(f"MaskConfig.{name} must satisfy 0 < lo <= hi (<= 1 for scales); got {(lo, hi)}")
        if self.n_targets < 1 or self.n_context < 1:
            raise ValueError("MaskConfig needs n_targets >= 1 and n_context >= 1")
        if self.min_keep < 0 or self.max_tries < 1:
            raise ValueError("MaskConfig needs min_keep >= 0 and max_tries >= 1")


class MultiBlockMaskCollator:
    """collate_fn: list of per-sample dicts → (batch dict, masks_enc [M_ctx, B, K_ctx],
    masks_pred [M_pred, B, K_pred]).

    Masks are int64 patch indices in row-major order of `grid`, ascending within each mask; -1 is padding
    (only with `variable_length`). Call `set_epoch(epoch, start_batch)` before each epoch's DataLoader iterator.
    """

    def __init__(self, cfg: MaskConfig | None = None, grid: tuple[int, int] = (16, 16), seed: int = 0, rank: int = 0):
        self.cfg = cfg or MaskConfig()
        self.H, self.W = int(grid[0]), int(grid[1])
        self.seed, self.rank = int(seed), int(rank)
        self.epoch, self.start_batch, self._calls = 0, 0, 0
        self.relaxations = 0   # context constraints dropped so far (in this process; workers count their own)
        self._check_feasible()

    # ------------------------------------------------------------------ seeding
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Restart the batch counter for `epoch` (start_batch > 0 when resuming in the middle of an epoch)."""
        self.epoch, self.start_batch, self._calls = int(epoch), int(start_batch), 0

    def _next_batch_index(self) -> int:
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        idx = self.start_batch + self._calls * n + w
        self._calls += 1
        return idx

    # ------------------------------------------------------------------ collate
    def __call__(self, samples: Sequence[Any]):
        batch = collate_samples(samples)
        masks_enc, masks_pred = self.sample_masks(len(samples), self._next_batch_index())
        return batch, masks_enc, masks_pred

    def sample_masks(self, batch_size: int, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The masks of global batch `batch_index` (deterministic given seed, epoch and rank)."""
        cfg, B = self.cfg, batch_size
        size_rng = np.random.default_rng([self.seed, self.epoch, batch_index])
        pos_rng = np.random.default_rng([self.seed, self.epoch, batch_index, self.rank + 1])
        tgt_hw = self._block_size(size_rng, cfg.target_scale, cfg.target_aspect)
        ctx_hw = self._block_size(size_rng, cfg.context_scale, cfg.context_aspect)

        targets = self._place(pos_rng, tgt_hw, (B, cfg.n_targets))                 # [B, M_pred, H, W] bool
        contexts = self._place(pos_rng, ctx_hw, (B, cfg.n_context))                # [B, M_ctx, H, W]
        if not cfg.allow_overlap:
            contexts &= ~targets.any(axis=1, keepdims=True)
            relaxed = self._repair_contexts(pos_rng, contexts, targets, ctx_hw)
            if relaxed:
                self.relaxations += relaxed
                log.warning(f"masks (epoch {self.epoch}, batch {batch_index}): no valid context block after "
                            f"{cfg.max_tries} tries, so a target region stopped constraining it ({relaxed} "
                            f"relaxations; {self.relaxations} so far)")
        return self._to_indices(contexts), self._to_indices(targets)

    # ------------------------------------------------------------------ blocks
    def _block_size(self, rng: np.random.Generator, scale: tuple[float, float], aspect: tuple[float, float]):
        r_scale = rng.random()
        r_aspect = rng.random() if self.cfg.independent_scale_aspect else r_scale
        return self._size_for(scale[0] + r_scale * (scale[1] - scale[0]),
                              aspect[0] + r_aspect * (aspect[1] - aspect[0]))

    def _size_for(self, scale: float, aspect: float) -> tuple[int, int]:
        max_keep = int(self.H * self.W * scale)
        h = int(round(math.sqrt(max_keep * aspect)))
        w = int(round(math.sqrt(max_keep / aspect)))
        # I-JEPA caps at grid-1 (`while h >= H: h -= 1`); the fix allows the full grid.
        cap_h, cap_w = (self.H, self.W) if self.cfg.reach_last_row_col else (self.H - 1, self.W - 1)
        return max(1, min(h, cap_h)), max(1, min(w, cap_w))

    def _corners(self, rng: np.random.Generator, hw: tuple[int, int], shape) -> tuple[np.ndarray, np.ndarray]:
        h, w = hw
        extra = 1 if self.cfg.reach_last_row_col else 0  # I-JEPA: randint(0, H - h), upper bound exclusive
        top = rng.integers(0, max(self.H - h + extra, 1), size=shape)
        left = rng.integers(0, max(self.W - w + extra, 1), size=shape)
        return top, left

    def _place(self, rng: np.random.Generator, hw: tuple[int, int], shape) -> np.ndarray:
        """Boolean grids [*shape, H, W] with one h×w block each at uniformly drawn corners."""
        top, left = self._corners(rng, hw, shape)
        rows, cols = np.arange(self.H), np.arange(self.W)
        in_rows = (rows >= top[..., None]) & (rows < top[..., None] + hw[0])      # [*shape, H]
        in_cols = (cols >= left[..., None]) & (cols < left[..., None] + hw[1])    # [*shape, W]
        return in_rows[..., :, None] & in_cols[..., None, :]

    def _repair_contexts(self, rng, contexts: np.ndarray, targets: np.ndarray, hw: tuple[int, int]) -> int:
        """Re-place context blocks left with <= min_keep patches, as I-JEPA: `max_tries` draws, then drop the last
        still-active target region from the constraint, and so on (in place). Returns the number of relaxations."""
        cfg, relaxed = self.cfg, 0
        counts = contexts.reshape(*contexts.shape[:2], -1).sum(-1)
        for b, m in zip(*np.nonzero(counts <= cfg.min_keep)):
            n_regions, tries = targets.shape[1], 1  # the vectorised placement was the first try
            # With every region dropped any block is valid (_check_feasible), so this many draws always suffice.
            for _ in range(cfg.max_tries * (targets.shape[1] + 1)):
                block = self._place(rng, hw, ())
                mask = block & ~targets[b, :n_regions].any(axis=0)
                if mask.sum() > cfg.min_keep:
                    contexts[b, m] = mask
                    break
                tries += 1
                if tries == cfg.max_tries:
                    tries, n_regions, relaxed = 0, max(n_regions - 1, 0), relaxed + 1
            else:
                raise RuntimeError(f"no valid {hw[0]}x{hw[1]} context block on the {self.H}x{self.W} grid with "
                                   f"min_keep={cfg.min_keep} even without target constraints ({cfg})")
        return relaxed

    def _to_indices(self, grids: np.ndarray) -> torch.Tensor:
        """[B, M, H, W] bool → [M, B, K] int64 ascending indices; truncated to the batch minimum or -1 padded."""
        B, M = grids.shape[:2]
        flat = grids.reshape(B, M, -1)
        counts = flat.sum(-1)
        K = int(counts.max() if self.cfg.variable_length else counts.min())
        # Stable argsort of ~mask puts selected indices first, in ascending order.
        order = np.argsort(~flat, axis=-1, kind="stable")[..., :K]
        if self.cfg.variable_length:
            order = np.where(np.arange(K) < counts[..., None], order, -1)
        return torch.from_numpy(np.ascontiguousarray(order.transpose(1, 0, 2))).long()

    def reachable_sizes(self, scale: tuple[float, float], aspect: tuple[float, float]) -> set[tuple[int, int]]:
        """Every block size (h, w) `_block_size` can return. Sizes are piecewise constant in the uniform draw(s),
        changing only where int(H·W·scale) or a round(√·) steps, so one point inside each piece finds them all.
        Coupled draws (I-JEPA) follow one curve through (scale, aspect) space, not the whole rectangle."""
        (s0, s1), (a0, a1), HW = scale, aspect, self.H * self.W
        half = (np.arange(max(self.H, self.W) + 2) + 0.5) ** 2   # round(√x) steps where x = (j + ½)²
        keeps = np.arange(int(HW * s0), int(HW * s1) + 1)

        def draw_at(values, lo, hi):   # the uniform draw at which lo + r·(hi − lo) equals each value
            return (np.asarray(values, dtype=float) - lo) / (hi - lo) if hi > lo else np.empty(0)

        def aspect_cuts(keep):
            k = np.maximum(np.asarray(keep, dtype=float), 1.0)[:, None]
            return draw_at(np.concatenate([(half / k).ravel(), (k / half).ravel()]), a0, a1)

        scale_cuts = draw_at(np.arange(int(HW * s0), int(HW * s1) + 2) / HW, s0, s1)
        if not self.cfg.independent_scale_aspect:
            return {self._size_for(s0 + r * (s1 - s0), a0 + r * (a1 - a0))
                    for r in _piece_points(np.concatenate([scale_cuts, aspect_cuts(keeps)]))}
        sizes = set()
        for rs in _piece_points(scale_cuts):
            s = s0 + rs * (s1 - s0)
            sizes |= {self._size_for(s, a0 + ra * (a1 - a0)) for ra in _piece_points(aspect_cuts([int(HW * s)]))}
        return sizes

    def _check_feasible(self) -> None:
        """A block that can be drawn with <= min_keep patches can never be valid (I-JEPA would loop forever): fail
        early. Only the sizes that can actually be drawn count (not the corners of the scale × aspect box)."""
        cfg = self.cfg
        for what, scale, aspect in (("target", cfg.target_scale, cfg.target_aspect),
                                    ("context", cfg.context_scale, cfg.context_aspect)):
            h, w = min(self.reachable_sizes(scale, aspect), key=lambda hw: hw[0] * hw[1])
            if h * w <= cfg.min_keep:
                raise ValueError(
                    f"{what} blocks drawn from scale {tuple(scale)} / aspect {tuple(aspect)} on a {self.H}x{self.W} "
                    f"patch grid can be {h}x{w} = {h * w} patches, not more than min_keep={cfg.min_keep}: lower "
                    f"min_keep or raise {what}_scale (or use a larger image)")


def _piece_points(cuts: np.ndarray) -> np.ndarray:
    """0 and the midpoint of every piece of [0, 1) cut at `cuts`: one uniform draw inside each piece."""
    c = np.unique(np.clip(np.concatenate([[0.0, 1.0], cuts]), 0.0, 1.0))
    return np.concatenate([[0.0], (c[:-1] + c[1:]) / 2])


def collate_samples(samples: Sequence[Any]) -> Any:
    """`default_collate`, per key for dicts: tensors/arrays/numbers stack; keys it cannot collate (None values,
    ragged metadata) stay a list of the per-sample values."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    if not isinstance(samples[0], dict):
        return default_collate(list(samples))
    out = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], (dict, str)) or any(v is None for v in values):
            out[key] = values
            continue
        try:
            out[key] = default_collate(values)
        except (TypeError, RuntimeError):
            out[key] = values
    return out
