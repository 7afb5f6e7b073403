"""Variable-length token batches packed without padding, for the fused varlen attention kernel.

I-JEPA's masks keep a different number of patches per image; `--variable-length` pads them with -1 to the longest.
On the Triton path the encoder and predictor instead pack the real tokens of every row into one run of T tokens
([1, T, D], rows back to back, `cu_seqlens` marking where each starts), so no layer computes on padding and
attention runs `radjepa_kernels.attention_varlen`. The packing is passed to the blocks as their `attn_mask`, as
timm passes masks, and `KernelAttention` recognises it.

Building a packing needs T on the host: made from masks on the CPU (as the collator yields them) it costs no device
synchronisation; made from CUDA masks it costs one.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class TokenPacking:
    valid: torch.Tensor       # [R, L] bool: which positions of the padded batch are real tokens
    index: torch.Tensor       # [T] int64: their flat positions r·L + j, row by row, in order
    cu_seqlens: torch.Tensor  # [R + 1] int32: row r's tokens are packed[cu[r]:cu[r+1]]
    max_seqlen: int           # the longest row (host int: the kernel's launch grid)

    @classmethod
    def from_valid(cls, valid: torch.Tensor, device: torch.device | str | None = None) -> "TokenPacking":
        """From a bool [R, L] validity mask; the tables end on `device` (default: the mask's)."""
        if valid.dim() != 2:
            raise ValueError(f"TokenPacking: valid must be [rows, length], got shape {tuple(valid.shape)}")
        valid = valid.bool()
        counts = valid.sum(1)
        index = valid.reshape(-1).nonzero().squeeze(1)
        cu = F.pad(counts.cumsum(0), (1, 0)).to(torch.int32)
        max_seqlen = int(counts.max()) if counts.numel() else 0
        device = torch.device(device) if device is not None else valid.device
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return cls(move(valid), move(index), move(cu), max_seqlen)

    @classmethod
    def from_masks(cls, idx: torch.Tensor, device: torch.device | str | None = None) -> "TokenPacking":
        """From -1-padded patch indices [M, B, K] (rows in mask-major order, as the gathered tokens)."""
        return cls.from_valid((idx >= 0).reshape(-1, idx.shape[-1]), device)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.valid.shape)

    @property
    def total(self) -> int:
        return self.index.numel()

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[R, L, D] → [1, T, D], the real tokens only."""
        if tuple(x.shape[:2]) != self.shape:
            raise ValueError(f"TokenPacking.pack: tokens {tuple(x.shape)} do not match the mask {self.shape}")
        return x.reshape(-1, x.shape[-1]).index_select(0, self.index).unsqueeze(0)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """[1, T, D] → [R, L, D], zeros at the padding positions."""
        R, L = self.shape
        out = x.new_zeros(R * L, x.shape[-1]).index_copy(0, self.index, x.reshape(-1, x.shape[-1]))
        return out.view(R, L, x.shape[-1])
