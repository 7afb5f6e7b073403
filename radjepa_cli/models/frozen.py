"""The frozen-encoder interface every downstream stage uses: preprocessing, outputs, the weights fingerprint,
and the encoders built from our own ViT (`OursEncoder`) or from raw pixels (`PixelsEncoder`).

Hugging Face families live in zoo_hf.py and spec parsing in zoo.py; both import this module, never each other
the other way round (zoo → zoo_hf → frozen).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from radjepa_cli.models.vit import DEFAULT_MEAN, DEFAULT_STD, VisionTransformerEncoder

# Bump when a change here alters the features an unchanged checkpoint produces (invalidates feature caches).
ZOO_VERSION = 1


class EncoderOutput(NamedTuple):
    patch_tokens: torch.Tensor  # [B, N, D], row-major over the patch grid, no CLS / register tokens
    pooled: torch.Tensor  # [B, D'] the global embedding the encoder's own protocol uses
    grid: tuple[int, int]  # (h, w) patch grid, h * w == N


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """[B, 1, H, W] in [0, 1] → the model's input: resize (straight to `size`, or shorter edge to `resize_shorter`
    then centre crop `size`), normalise per channel, repeat grey to `channels`.

    HF image processors do the same on uint8 PIL images; resizing here is torch's antialiased bicubic on floats,
    so pixels differ from the processor's by resampling error only (exactly equal when no resize is needed).
    """

    size: int
    mean: tuple[float, ...] = (DEFAULT_MEAN,)
    std: tuple[float, ...] = (DEFAULT_STD,)
    channels: int = 1
    resize_shorter: int | None = None
    interpolation: str = "bicubic"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = _as_grey_batch(images)
        if self.resize_shorter is not None:
            x = _resize_shorter(x, self.resize_shorter, self.interpolation)
            x = _center_crop(x, self.size)
        elif tuple(x.shape[-2:]) != (self.size, self.size):
            x = _resize(x, (self.size, self.size), self.interpolation)
        x = x.expand(-1, self.channels, -1, -1)
        mean = torch.tensor(_per_channel(self.mean, self.channels), dtype=x.dtype, device=x.device)
        std = torch.tensor(_per_channel(self.std, self.channels), dtype=x.dtype, device=x.device)
        return (x - mean[None, :, None, None]) / std[None, :, None, None]


def _as_grey_batch(images: torch.Tensor) -> torch.Tensor:
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"encoder input must be [B, 1, H, W] (or [B, H, W]) in [0, 1], got {tuple(images.shape)}")
    if images.shape[1] == 3:  # an RGB-rendered radiograph: all channels carry the same grey
        images = images.mean(dim=1, keepdim=True)
    return images.float()


def _per_channel(v: Sequence[float], channels: int) -> list[float]:
    v = list(v)
    if len(v) == channels:
        return v
    if len(v) == 1:
        return v * channels
    if channels == 1:  # an RGB normalisation applied to grey input: average it
        return [sum(v) / len(v)]
    raise ValueError(f"normalisation has {len(v)} values for {channels} channels")


def _resize(x: torch.Tensor, hw: tuple[int, int], mode: str) -> torch.Tensor:
    aa = mode in ("bilinear", "bicubic")
    y = F.interpolate(x, size=hw, mode=mode, antialias=aa, **({"align_corners": False} if aa else {}))
    return y.clamp_(0.0, 1.0) if mode == "bicubic" else y


def _resize_shorter(x: torch.Tensor, shorter: int, mode: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    if min(h, w) == shorter:
        return x
    s = shorter / min(h, w)
    return _resize(x, (max(shorter, round(h * s)), max(shorter, round(w * s))), mode)


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot centre-crop {size}×{size} from {h}×{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def weights_fingerprint(module: nn.Module, *extra: object) -> str:
    """sha256 over every parameter/buffer (name, dtype, shape, bytes) and the JSON of `extra`."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps([ZOO_VERSION, *extra], sort_keys=True, default=str).encode())
    return h.hexdigest()


class FrozenEncoder(nn.Module):
    """Base class: a frozen backbone with its preprocessing. Subclasses implement `_encode` and `_blocks`
    on already-preprocessed input."""

    def __init__(self, name: str, backbone: nn.Module | None, preprocessing: Preprocess, embed_dim: int,
                 num_layers: int, pooling: str):
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.preprocessing = preprocessing
        self.embed_dim = embed_dim
        self.num_layers = num_layers
        self.pooling = pooling  # how `pooled` is made, e.g. "mean" or "cls" (recorded in results)
        self.pooled_dim = embed_dim
        self._fingerprint: str | None = None
        # follows .to(device) even for weightless encoders (pixels), so inputs go where the model is
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)
        if backbone is not None:
            backbone.requires_grad_(False)
        self.eval()

    # ---- public interface ------------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return self.preprocessing.size

    @property
    def device(self) -> torch.device:
        return self._device_anchor.device

    @property
    def fingerprint(self) -> str:
        """Content hash of the weights + preprocessing + pooling: the feature cache's notion of 'same encoder'."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.backbone or nn.Module(), type(self).__name__,
                                                    dataclasses.asdict(self.preprocessing), self.pooling)
        return self._fingerprint

    def train(self, mode: bool = True) -> "FrozenEncoder":
        return super().train(False)  # frozen: dropout / norm statistics never switch to training behaviour

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return self.preprocessing(images.to(self.device))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> EncoderOutput:
        return self._encode(self.preprocess(images))

    @torch.no_grad()
    def intermediate(self, images: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Feature maps [B, D, h, w] of the given blocks (0-based; negative counts from the end)."""
        for i in layers:
            if not -self.num_layers <= i < self.num_layers:
                raise IndexError(f"{self.name}: block {i} out of range for {self.num_layers} blocks")
        tokens, (h, w) = self._blocks(self.preprocess(images), [i % self.num_layers for i in layers])
        return [t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w) for t in tokens]

    # ---- for subclasses ----------------------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor) -> EncoderOutput:
        raise NotImplementedError

    def _blocks(self, x: torch.Tensor, layers: list[int]) -> tuple[list[torch.Tensor], tuple[int, int]]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}, embed_dim={self.embed_dim}, image_size={self.image_size}, pooling={self.pooling}"


class OursEncoder(FrozenEncoder):
    """Our no-CLS ViT (vit.VisionTransformerEncoder): pooled = mean of the final normed patch tokens (I-JEPA's
    linear-probe protocol averages the patch tokens)."""

    def __init__(self, name: str, vit: VisionTransformerEncoder, mean=DEFAULT_MEAN, std=DEFAULT_STD):
        size = int(vit.patch_embed.img_size[0])
        super().__init__(name, vit, Preprocess(size=size, mean=_as_tuple(mean), std=_as_tuple(std),
                                               channels=int(vit.in_chans)),
                         embed_dim=int(vit.embed_dim), num_layers=len(vit.blocks), pooling="mean")

    def _encode(self, x):
        tokens = self.backbone.forward_features(x)
        return EncoderOutput(tokens, tokens.mean(dim=1), _grid(x, self.backbone.patch_size))

    def _blocks(self, x, layers):
        return self.backbone.block_outputs(x, layers, norm=True), _grid(x, self.backbone.patch_size)


def _grid(x: torch.Tensor, patch: int) -> tuple[int, int]:
    return x.shape[-2] // patch, x.shape[-1] // patch


class PixelsEncoder(FrozenEncoder):
    """The raw-pixel baseline: no learning at all. pooled = the image resized to size×size, flattened;
    patch tokens = its 8×8 pixel blocks (64-dim), so decoders see a (size/8)² grid."""

    BLOCK = 8

    def __init__(self, size: int):
        if size < self.BLOCK or size % self.BLOCK:
            raise ValueError(f"pixels:{size}: the size must be a positive multiple of {self.BLOCK}")
        super().__init__(f"pixels:{size}", None, Preprocess(size=size, interpolation="area"),
                         embed_dim=self.BLOCK * self.BLOCK, num_layers=1, pooling="flatten")
        self.pooled_dim = size * size

    def _encode(self, x):
        tokens, grid = self._tokens(x)
        return EncoderOutput(tokens, x.flatten(1), grid)

    def _tokens(self, x):
        b = self.BLOCK
        patches = F.unfold(x, kernel_size=b, stride=b)  # [B, b*b, N]
        return patches.transpose(1, 2), (x.shape[-2] // b, x.shape[-1] // b)

    def intermediate(self, images, layers):
        # One "layer": every requested block index gets the same pixel-block map (so UPerNet still runs).
        tokens, (h, w) = self._tokens(self.preprocess(images))
        fmap = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)
        return [fmap for _ in layers]


def _as_tuple(v) -> tuple[float, ...]:
    return tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else (float(v),)
