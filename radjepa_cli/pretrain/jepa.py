"""The I-JEPA model: context encoder, predictor and EMA target encoder in ONE nn.Module.

Keeping the target encoder (and its EMA update) inside the module means one DDP/FSDP wrapper covers the
whole thing and checkpoints are one state dict per part (the official code kept the EMA outside its modules,
which broke FSDP: ijepa #62). The target encoder stays fp32 with requires_grad False: under autocast its
matmuls still run in bf16, but the EMA accumulates in fp32 (bf16 weights would round the updates away).
"""
from __future__ import annotations

import copy
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

import radjepa_kernels as K
from radjepa_cli.models.predictor import repeat_interleave_batch, target_valid_mask

LOSSES = ("l2", "smooth_l1")


class JEPA(nn.Module):
    """reg_var / reg_cov > 0 add VICReg's variance and covariance terms on the pooled context embeddings (as
    C-JEPA, Mo & Tong 2024): I-JEPA's EMA alone lets the encoder fall back on features that depend only on the
    patch position — perfectly predictable, useless once pooled. 0/0 (default) is the I-JEPA objective."""

    def __init__(self, encoder: nn.Module, predictor: nn.Module, loss: str = "smooth_l1",
                 reg_var: float = 0.0, reg_cov: float = 0.0):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")
        if reg_var < 0 or reg_cov < 0:
            raise ValueError(f"reg_var and reg_cov must be >= 0, got {reg_var} and {reg_cov}")
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = copy.deepcopy(encoder).float().requires_grad_(False)
        self.loss_name = loss
        self.reg_var, self.reg_cov = reg_var, reg_cov
        # Filled by forward (detached): the target tokens of the last batch, for the collapse monitors,
        # and the loss terms (prediction, variance, covariance) for the logs.
        self.last_target_tokens: torch.Tensor | None = None
        self.last_terms: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ forward / loss
    def forward(self, images: torch.Tensor, masks_enc: torch.Tensor, masks_pred: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] (normalised); masks_enc [M_ctx, B, K_ctx], masks_pred [M_pred, B, K_pred]
        patch indices with -1 padding. Returns the scalar loss (mean over valid target tokens × features)."""
        M_ctx, B = masks_enc.shape[0], images.shape[0]
        with torch.no_grad():
            h = self.target_encoder.forward_features(images)               # [B, N, D], full image
            self.last_target_tokens = h.detach()
            h = F.layer_norm(h, h.shape[-1:])                              # no affine (I-JEPA)
            h = K.gather_tokens(h, masks_pred)                             # [M_pred*B, K, D]
            h = repeat_interleave_batch(h, B, M_ctx)                         # predictor's (pred, ctx, b) order
        z = self.encoder.forward_features(images, masks_enc)               # [M_ctx*B, K_ctx, D]
        pred = self.predictor(z, masks_enc, masks_pred)                    # [M_pred*M_ctx*B, K, D]
        loss = loss_pred = masked_feature_loss(pred, h, target_valid_mask(masks_pred, M_ctx), self.loss_name)
        self.last_terms = {"loss_pred": loss_pred.detach()}
        if self.reg_var or self.reg_cov:
            pooled = masked_mean(z, masks_enc.reshape(-1, masks_enc.shape[-1]) >= 0).view(M_ctx, B, -1)
            var, cov = zip(*(variance_covariance(p) for p in pooled))      # per context mask: one view each
            var, cov = torch.stack(var).mean(), torch.stack(cov).mean()
            loss = loss + self.reg_var * var + self.reg_cov * cov
            self.last_terms.update(reg_var=var.detach(), reg_cov=cov.detach())
        return loss

    # ------------------------------------------------------------------ EMA
    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target ← m·target + (1−m)·encoder, through the fused kernel when the backend allows."""
        tgt, src = self._ema_lists()
        K.ema_update_(tgt, src, momentum)

    def _ema_lists(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        # Parameter objects do not change after construction (DDP keeps them), so the pairing is cached.
        if getattr(self, "_ema_pairs", None) is None:
            enc = dict(self.encoder.named_parameters())
            tgt = dict(self.target_encoder.named_parameters())
            if enc.keys() != tgt.keys():
                raise RuntimeError("encoder and target encoder parameters differ; cannot update the EMA")
            self._ema_pairs = ([tgt[n] for n in enc], [enc[n] for n in enc])
        return self._ema_pairs

    # ------------------------------------------------------------------ optimizer groups
    def param_groups(self) -> list[dict]:
        """AdamW groups: weight decay on ≥2-D weights only; none on biases, norms and other 1-D params."""
        decay, no_decay = [], []
        for name, p in self.trainable_parameters():
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in self.named_parameters():
            if p.requires_grad and not name.startswith("target_encoder."):
                yield name, p


def masked_feature_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                        kind: str = "smooth_l1") -> torch.Tensor:
    """Mean over valid tokens and features of (pred − target)² (l2) or smooth-L1 (β = 1, as I-JEPA).
    pred/target [T, K, D]; valid [T, K] bool. Padding tokens (variable-length masks) contribute nothing."""
    if pred.dtype in (torch.bfloat16, torch.float16):   # autocast output; fp64 stays fp64 (the golden test)
        pred = pred.float()
    if kind == "l2":
        per = (pred - target).pow(2)
    elif kind == "smooth_l1":
        per = F.smooth_l1_loss(pred, target, reduction="none")
    else:
        raise ValueError(f"loss must be one of {LOSSES}, not {kind!r}")
    w = valid.unsqueeze(-1).to(per.dtype)
    n = w.sum() * per.shape[-1]
    return (per * w).sum() / n.clamp(min=1.0)


def masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of x [T, K, D] over its valid tokens (valid [T, K] bool) → [T, D]."""
    w = valid.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


def variance_covariance(z: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's terms (Bardes et al. 2022) over a batch of embeddings z [B, D]: the mean hinge max(0, 1 − std)
    per feature, and the squared off-diagonal covariances summed and divided by D. Statistics are per process."""
    # Autocast recasts matmul inputs to its low dtype whatever `.float()` did, and bf16's 8-bit mantissa makes
    # the small off-diagonal covariances noise; so the whole computation runs with autocast off, in fp32 or better.
    with torch.autocast(z.device.type, enabled=False):
        z = z.float() if z.dtype in (torch.bfloat16, torch.float16) else z
        n, d = z.shape
        if n < 2:
            zero = z.sum() * 0.0
            return zero, zero
        z = z - z.mean(0)
        var = F.relu(1.0 - torch.sqrt(z.var(0) + eps)).mean()
        c = (z.T @ z) / (n - 1)
        cov = (c.pow(2).sum() - c.diagonal().pow(2).sum()) / d
    return var, cov
