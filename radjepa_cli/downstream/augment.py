"""Batch augmentations of the paper's downstream protocols, on tensors (CPU or GPU), seeded by a torch.Generator.

Probe (Section 10.1.1): horizontal flip, affine, random crop, intensity ("colour") jitter, additive Gaussian noise.
Segmentation (Section 10.2.1): affine, elastic, brightness/contrast, gamma; horizontal flips only where left and
right survive them — never for lungs / lung zones (a mirrored chest is not a chest), and for ribs only together with
swapping the L*/R* channels so every label still names the patient's side.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    hflip: bool = False
    degrees: float = 10.0  # rotation ± degrees
    translate: float = 0.05  # ± fraction of the image side
    scale: tuple[float, float] = (0.9, 1.1)
    shear: float = 5.0  # ± degrees (x shear)
    crop_scale: tuple[float, float] = (1.0, 1.0)  # random crop of this area fraction, resized back (zoom in)
    elastic: float = 0.0  # displacement amplitude as a fraction of the image side (0 = off)
    brightness: float = 0.1  # ± additive
    contrast: float = 0.1  # ± multiplicative around the image mean
    gamma: tuple[float, float] | None = None  # x ** g, g log-uniform in the range
    noise_std: float = 0.0  # additive Gaussian noise

    @classmethod
    def probe(cls) -> "AugmentConfig":
        return cls(hflip=True, crop_scale=(0.8, 1.0), noise_std=0.02)

    @classmethod
    def segment(cls, hflip: bool) -> "AugmentConfig":
        return cls(hflip=hflip, elastic=0.02, gamma=(0.8, 1.25))


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def augment(images: torch.Tensor, masks: torch.Tensor | None, cfg: AugmentConfig, g: torch.Generator,
            flip_perm: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """images [B, 1, H, W] in [0, 1]; masks [B, M, H, W] (same geometry). flip_perm: mask channel order after a
    horizontal flip (left↔right names); required when masks are flipped. Randomness: CPU generator `g`.
    Returns (images, masks, flipped [B] bool) — callers permute per-channel metadata (e.g. mask_known) alike."""
    B, _, H, W = images.shape
    dev = images.device
    # --- geometry: one affine (+ optional elastic field) per sample, applied to image and masks alike
    rot = torch.deg2rad(_uniform(B, -cfg.degrees, cfg.degrees, g))
    shear = torch.deg2rad(_uniform(B, -cfg.shear, cfg.shear, g))
    zoom = _uniform(B, *cfg.scale, g) / torch.sqrt(_uniform(B, *cfg.crop_scale, g))
    tx, ty = (_uniform(B, -cfg.translate, cfg.translate, g) * 2 for _ in range(2))
    flip = (torch.rand(B, generator=g) < 0.5) if cfg.hflip else torch.zeros(B, dtype=torch.bool)
    cos, sin = torch.cos(rot), torch.sin(rot)
    # output→input sampling map: inverse zoom, rotation and shear; flips mirror x
    a = torch.stack([torch.stack([cos, -sin + torch.tan(shear) * cos, tx], -1),
                     torch.stack([sin, cos + torch.tan(shear) * sin, ty], -1)], 1) / zoom[:, None, None]
    a[:, :, 2] *= zoom[:, None]
    a[:, :, 0] *= torch.where(flip, -1.0, 1.0)[:, None]
    grid = F.affine_grid(a.to(dev), [B, 1, H, W], align_corners=False)
    if cfg.elastic > 0:
        coarse = torch.randn(B, 2, 5, 5, generator=g) * cfg.elastic * 2
        field = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=True)
        grid = grid + field.permute(0, 2, 3, 1).to(dev)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out_masks = None
    if masks is not None:
        out_masks = F.grid_sample(masks.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        if flip.any():
            if flip_perm is None:
                raise ValueError("flipping masks needs flip_perm (which channel each becomes when mirrored)")
            idx = flip.to(dev)
            out_masks[idx] = out_masks[idx][:, flip_perm]
    # --- intensity
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    c = _uniform(B, 1 - cfg.contrast, 1 + cfg.contrast, g).to(dev).view(B, 1, 1, 1)
    b = _uniform(B, -cfg.brightness, cfg.brightness, g).to(dev).view(B, 1, 1, 1)
    out = ((out - mean) * c + mean + b).clamp(0, 1)
    if cfg.gamma is not None:
        lg = _uniform(B, math.log(cfg.gamma[0]), math.log(cfg.gamma[1]), g).exp().to(dev).view(B, 1, 1, 1)
        out = out.clamp_min(1e-6) ** lg
    if cfg.noise_std > 0:
        out = out + cfg.noise_std * torch.randn(out.shape, generator=g).to(dev)
    return out.clamp(0, 1), out_masks, flip


def lr_swap_permutation(names: list[str] | tuple[str, ...]) -> list[int] | None:
    """Channel permutation that relabels a mirrored image (R3 ↔ L3, lung_left ↔ lung_right, …); None if some
    lateral name has no partner."""
    def partner(n: str) -> str:
        for a, b in (("left", "right"), ("right", "left"), ("L", "R"), ("R", "L")):
            if n.startswith(a) and (len(n) > len(a)) and (n[len(a)] in "_0123456789"):
                return b + n[len(a):]
            if n.endswith("_" + a):
                return n[: -len(a)] + b
        return n
    index = {n: i for i, n in enumerate(names)}
    perm = [index.get(partner(n), -1) for n in names]
    return None if -1 in perm else perm
