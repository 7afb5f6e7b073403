"""The encoder: I-JEPA sin-cos positions, masked forward semantics, presets, final norm, intermediate layers."""
import math

import numpy as np
import pytest
import torch

from radjepa_cli.models.vit import ENCODER_PRESETS, build_encoder, sincos_pos_embed


def _ijepa_2d_sincos(embed_dim, grid_size):
    """I-JEPA's src/models/vision_transformer.get_2d_sincos_pos_embed, re-written here in numpy."""
    def one_d(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=float) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    grid_h = np.arange(grid_size, dtype=float)
    grid_w = np.arange(grid_size, dtype=float)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0)  # here w goes first, as in I-JEPA
    emb_h = one_d(embed_dim // 2, grid[0])
    emb_w = one_d(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_encoder("vit_tiny", img_size=112, depth=3).eval()


@pytest.mark.parametrize("dim,grid", [(192, 8), (768, 16), (384, 16)])
def test_sincos_matches_ijepa(dim, grid):
    ref = torch.from_numpy(_ijepa_2d_sincos(dim, grid)).float()
    torch.testing.assert_close(sincos_pos_embed(dim, (grid, grid)), ref, atol=1e-6, rtol=0)


def test_sincos_rectangular_grid_is_row_major():
    pe = sincos_pos_embed(64, (3, 5))
    # patch (r, c) sits at row-major index r*5 + c; the first half depends on c only, the second on r only.
    assert torch.allclose(pe[0 * 5 + 2, :32], pe[2 * 5 + 2, :32])
    assert torch.allclose(pe[2 * 5 + 0, 32:], pe[2 * 5 + 4, 32:])
    assert not torch.allclose(pe[0, 32:], pe[5, 32:])


def _preset_params(p, patch=14, in_chans=1):
    D = p.embed_dim
    block = 4 * D * D + 4 * D + 2 * (4 * D * D) + 4 * D + D + 4 * D  # qkv+proj, fc1+fc2, two LayerNorms
    return D * in_chans * patch * patch + D + p.depth * block + 2 * D


def test_param_counts_of_presets():
    millions = {}
    with torch.device("meta"):  # shapes only: no memory, no init cost
        for name, preset in ENCODER_PRESETS.items():
            n = sum(t.numel() for t in build_encoder(name).parameters())
            assert n == _preset_params(preset), name
            millions[name] = n / 1e6
    assert 84 < millions["vit_base"] < 87          # the paper's "ViT-B/14, 86M"
    assert 5 < millions["vit_tiny"] < 6 and 21 < millions["vit_small"] < 23
    assert 300 < millions["vit_large"] < 306 and 625 < millions["vit_huge"] < 635


def test_final_norm_on_every_token(tiny):
    x = torch.rand(2, 1, 112, 112)
    t = tiny.forward_features(x)
    assert t.shape == (2, 64, 192)
    assert isinstance(tiny.norm, torch.nn.LayerNorm) and tiny.norm.eps == 1e-6
    torch.testing.assert_close(t.mean(-1), torch.zeros(2, 64), atol=1e-4, rtol=0)  # unit-affine LN at init
    torch.testing.assert_close(tiny(x), t.mean(1))


def _blocks_on(enc, tokens, kpm=None):
    for blk in enc.blocks:
        tokens = blk(tokens, attn_mask=kpm)
    return enc.norm(tokens)


def test_masked_forward_is_gather_at_layer0(tiny):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 112, 112, generator=g)
    masks = torch.stack([torch.stack([torch.randperm(64, generator=g)[:20] for _ in range(3)]) for _ in range(2)])
    out = tiny.forward_features(x, masks)
    assert out.shape == (2 * 3, 20, 192)
    emb, _ = tiny.embed(x)
    for m in range(2):
        for b in range(3):  # mask-major: row m*B + b is sample b under mask m
            ref = _blocks_on(tiny, emb[b:b + 1, masks[m, b]])
            torch.testing.assert_close(out[m * 3 + b], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tiny.forward_features(x, list(masks)), out)  # I-JEPA's list format


def test_masked_forward_padding_invariance(tiny):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 112, 112, generator=g)
    masks = torch.stack([torch.randperm(64, generator=g)[:15] for _ in range(2)]).unsqueeze(0)
    ref = tiny.forward_features(x, masks)
    padded = torch.cat([masks, torch.full((1, 2, 6), -1)], dim=-1)
    padded[0, 1, 10:15] = -1  # sample 1 keeps only 10 patches
    out = tiny.forward_features(x, padded)
    torch.testing.assert_close(out[0, :15], ref[0], atol=1e-5, rtol=1e-5)
    short = tiny.forward_features(x[1:], masks[:, 1:, :10])
    torch.testing.assert_close(out[1, :10], short[0], atol=1e-5, rtol=1e-5)


def test_intermediate_layers(tiny):
    x = torch.rand(1, 1, 112, 112)
    a, last = tiny.block_outputs(x, [0, -1])
    torch.testing.assert_close(last, tiny.forward_features(x))
    raw = tiny.block_outputs(x, [0], norm=False)[0]
    torch.testing.assert_close(tiny.norm(raw), a)
    assert not torch.allclose(raw, a)
    with pytest.raises(IndexError):
        tiny.block_outputs(x, [7])


def test_other_image_sizes_use_exact_positions(tiny):
    x = torch.rand(1, 1, 224, 168)
    assert tiny.forward_features(x).shape == (1, 16 * 12, 192)
    _, grid = tiny.embed(x)
    assert grid == (16, 12)


def test_ijepa_init():
    enc = build_encoder("vit_tiny", img_size=56, depth=4)
    assert enc.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(enc.blocks[0].attn.qkv.bias) == 0
    # Official training re-draws every Linear after construction: no 1/sqrt(2·layer) rescale by default.
    for blk in enc.blocks:
        assert blk.attn.proj.weight.std().item() == pytest.approx(0.02, rel=0.1)
    rescaled = build_encoder("vit_tiny", img_size=56, depth=4, init="rescaled")   # the named departure
    for layer, blk in enumerate(rescaled.blocks, start=1):
        assert blk.attn.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(2 * layer), rel=0.1)
    with pytest.raises(ValueError, match="init must be"):
        build_encoder("vit_tiny", img_size=56, depth=1, init="xavier")
    assert enc.preset == "vit_tiny" and enc.num_heads == 3
    with pytest.raises(ValueError, match="unknown model"):
        build_encoder("vit_gigantic")
