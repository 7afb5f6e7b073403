"""Segmentation decoders over frozen ViT feature maps (the paper's Table 7).

All take a list of feature maps [B, D, h, w] at the patch stride and return logits [B, C, H, W] at the requested
output size (one sigmoid channel per structure):
  linear   BatchNorm + 1×1 conv on the last block, bilinearly upsampled (the "# Params = D + 1" per-class row)
  vitdet   ViTDet's simple feature pyramid (Li et al. 2022) from the LAST block only — deconvolutions to strides
           p/4 and p/2, the block itself at p, max-pooling to 2p — fused by an FPN-style semantic head
  upernet  four blocks (e.g. 3, 5, 7, 11 of 12) turned into strides p/4, p/2, p, 2p (BEiT's multi-level neck),
           then UPerNet (Xiao et al. 2018): pyramid pooling on the coarsest level, FPN top-down path, fused head
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

DECODERS = ("linear", "vitdet", "upernet")


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW map (ViTDet's norm)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)


class LinearDecoder(nn.Module):
    n_inputs = 1

    def __init__(self, in_dim: int, num_classes: int, channels: int = 0):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_dim)
        self.cls = nn.Conv2d(in_dim, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.cls(self.bn(feats[-1])), size=size, mode="bilinear", align_corners=False)


def _rescalers(dims: Sequence[int]) -> nn.ModuleList:
    """Feature maps at the patch stride → strides p/4, p/2, p, 2p (output channels: dims)."""
    d0, d1 = dims[0], dims[1]
    return nn.ModuleList([
        nn.Sequential(_up(d0, d0 // 2), LayerNorm2d(d0 // 2), nn.GELU(), _up(d0 // 2, d0 // 4)),
        _up(d1, d1 // 2),
        nn.Identity(),
        nn.MaxPool2d(2, ceil_mode=True),
    ])


def _rescaled_dims(dims: Sequence[int]) -> list[int]:
    return [dims[0] // 4, dims[1] // 2, dims[2], dims[3]]


class SimpleFeaturePyramid(nn.Module):
    """ViTDet: four scales from one map; each gets 1×1 + 3×3 convs with LayerNorm (as in the paper)."""

    def __init__(self, in_dim: int, channels: int):
        super().__init__()
        self.scales = _rescalers([in_dim] * 4)
        self.out = nn.ModuleList(
            nn.Sequential(nn.Conv2d(d, channels, 1, bias=False), LayerNorm2d(channels),
                          nn.Conv2d(channels, channels, 3, padding=1, bias=False), LayerNorm2d(channels))
            for d in _rescaled_dims([in_dim] * 4))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [out(scale(x)) for scale, out in zip(self.scales, self.out)]


class ViTDetDecoder(nn.Module):
    n_inputs = 1

    def __init__(self, in_dim: int, num_classes: int, channels: int = 256):
        super().__init__()
        self.pyramid = SimpleFeaturePyramid(in_dim, channels)
        self.fuse = nn.ModuleList(conv_bn_relu(channels, channels) for _ in range(4))
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        levels = self.pyramid(feats[-1])
        target = levels[0].shape[-2:]
        x = sum(F.interpolate(f(l), size=target, mode="bilinear", align_corners=False) if i else f(l)
                for i, (f, l) in enumerate(zip(self.fuse, levels)))
        return F.interpolate(self.cls(x), size=size, mode="bilinear", align_corners=False)


class PPM(nn.Module):
    """Pyramid pooling module (PSPNet) over the coarsest level."""

    def __init__(self, cin: int, channels: int, scales=(1, 2, 3, 6)):
        super().__init__()
        self.scales = scales
        self.stages = nn.ModuleList(conv_bn_relu(cin, channels, 1) for _ in scales)
        self.bottleneck = conv_bn_relu(cin + len(scales) * channels, channels)

    def forward(self, x):
        outs = [x] + [F.interpolate(stage(F.adaptive_avg_pool2d(x, s)), size=x.shape[-2:], mode="bilinear",
                                    align_corners=False) for s, stage in zip(self.scales, self.stages)]
        return self.bottleneck(torch.cat(outs, dim=1))


class UPerNetDecoder(nn.Module):
    n_inputs = 4

    def __init__(self, in_dim: int, num_classes: int, channels: int = 256):
        super().__init__()
        dims = [in_dim] * 4
        self.rescale = _rescalers(dims)
        rdims = _rescaled_dims(dims)
        self.ppm = PPM(rdims[3], channels)
        self.lateral = nn.ModuleList(conv_bn_relu(d, channels, 1) for d in rdims[:3])
        self.fpn = nn.ModuleList(conv_bn_relu(channels, channels) for _ in range(3))
        self.fuse = conv_bn_relu(4 * channels, channels)
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        if len(feats) != 4:
            raise ValueError(f"UPerNet takes 4 block feature maps, got {len(feats)}")
        levels = [r(f) for r, f in zip(self.rescale, feats)]
        lat = [l(x) for l, x in zip(self.lateral, levels[:3])] + [self.ppm(levels[3])]
        for i in range(3, 0, -1):  # top-down
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="bilinear",
                                                    align_corners=False)
        outs = [self.fpn[i](lat[i]) for i in range(3)] + [lat[3]]
        target = outs[0].shape[-2:]
        outs = [outs[0]] + [F.interpolate(o, size=target, mode="bilinear", align_corners=False) for o in outs[1:]]
        x = self.fuse(torch.cat(outs, dim=1))
        return F.interpolate(self.cls(x), size=size, mode="bilinear", align_corners=False)


def build_decoder(name: str, in_dim: int, num_classes: int, channels: int = 256) -> nn.Module:
    classes = {"linear": LinearDecoder, "vitdet": ViTDetDecoder, "upernet": UPerNetDecoder}
    if name not in classes:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}")
    if name != "linear" and in_dim < 4:
        raise ValueError(f"{name} needs feature maps with >= 4 channels, got {in_dim}")
    return classes[name](in_dim, num_classes, channels)


def default_layers(depth: int) -> tuple[int, ...]:
    """Four blocks spread like the paper's 3, 5, 7, 11 of 12 (0-based), scaled to other depths."""
    return tuple(max(0, round(k * depth / 12) - 1) for k in (4, 6, 8, 12))  # repeats only when depth < 4
