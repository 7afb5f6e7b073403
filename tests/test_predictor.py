"""The I-JEPA predictor: layout (repeat_interleave_batch), padding invariance, init, presets."""
import math

import pytest
import torch

from radjepa_cli.models.predictor import (PREDICTOR_DEPTH, Predictor, build_predictor, repeat_interleave_batch,
                                          target_valid_mask)
from radjepa_cli.models.vit import build_encoder, sincos_pos_embed


def _ijepa_repeat_interleave_batch(x, B, repeat):
    # Verbatim semantics of I-JEPA's src/utils/tensors.py helper.
    N = len(x) // B
    return torch.cat([torch.cat([x[i * B:(i + 1) * B] for _ in range(repeat)], dim=0) for i in range(N)], dim=0)


def _apply_masks(x, masks):
    # I-JEPA's src/masks/utils.apply_masks: per mask [B, K], gather then concatenate mask-major.
    return torch.cat([torch.gather(x, 1, m.unsqueeze(-1).expand(-1, -1, x.size(-1))) for m in masks], dim=0)


def _ijepa_forward(p: Predictor, x, masks_x, masks):
    """I-JEPA's VisionTransformerPredictor.forward, written out against our module's weights."""
    B = len(x) // len(masks_x)
    x = p.predictor_embed(x)
    pos = p.pos_embed.unsqueeze(0).repeat(B, 1, 1)
    x = x + _apply_masks(pos, masks_x)
    n_ctx = x.shape[1]
    pos_embs = _ijepa_repeat_interleave_batch(_apply_masks(pos, masks), B, repeat=len(masks_x))
    pred_tokens = p.mask_token.repeat(pos_embs.size(0), pos_embs.size(1), 1) + pos_embs
    x = torch.cat([x.repeat(len(masks), 1, 1), pred_tokens], dim=1)
    for blk in p.predictor_blocks:
        x = blk(x)
    return p.predictor_proj(p.predictor_norm(x)[:, n_ctx:])


def _masks(g, M, B, K, N=64):
    return torch.stack([torch.stack([torch.randperm(N, generator=g)[:K].sort().values for _ in range(B)])
                        for _ in range(M)])


@pytest.fixture
def small():
    torch.manual_seed(0)
    return Predictor(grid=(8, 8), encoder_dim=48, predictor_dim=32, depth=2, num_heads=4).eval()


def test_repeat_interleave_batch_matches_ijepa():
    x = torch.arange(3 * 2 * 5).reshape(6, 5)
    assert torch.equal(repeat_interleave_batch(x, 2, 3), _ijepa_repeat_interleave_batch(x, 2, 3))


@pytest.mark.parametrize("m_ctx,m_pred", [(1, 4), (2, 3)])
def test_forward_matches_ijepa_layout(small, m_ctx, m_pred):
    g = torch.Generator().manual_seed(1)
    B = 3
    masks_x, masks = _masks(g, m_ctx, B, 20), _masks(g, m_pred, B, 7)
    ctx = torch.randn(m_ctx * B, 20, 48, generator=g)
    out = small(ctx, masks_x, masks)
    assert out.shape == (m_pred * m_ctx * B, 7, 48)
    ref = _ijepa_forward(small, ctx, list(masks_x), list(masks))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # List-of-[B, K] masks (I-JEPA's format) are accepted too.
    torch.testing.assert_close(small(ctx, list(masks_x), list(masks)), out)


def test_padding_is_invisible(small):
    """-1 padded context/target slots change nothing at the real positions and come back as zeros."""
    g = torch.Generator().manual_seed(2)
    B = 2
    masks_x, masks = _masks(g, 1, B, 16), _masks(g, 2, B, 6)
    ctx = torch.randn(B, 16, 48, generator=g)
    ref = small(ctx, masks_x, masks)
    pad_x = torch.cat([masks_x, torch.full((1, B, 5), -1)], dim=-1)
    pad_t = torch.cat([masks, torch.full((2, B, 3), -1)], dim=-1)
    ctx_p = torch.cat([ctx, torch.randn(B, 5, 48, generator=g)], dim=1)  # garbage under the padding
    out = small(ctx_p, pad_x, pad_t)
    torch.testing.assert_close(out[:, :6], ref, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(out[:, 6:]) == 0
    valid = target_valid_mask(pad_t, 1)
    assert valid.shape == out.shape[:2] and valid[:, :6].all() and not valid[:, 6:].any()


def test_ragged_padding_per_sample(small):
    """Sample 0 uses 10 context patches, sample 1 all 16: each equals its own unpadded run."""
    g = torch.Generator().manual_seed(3)
    masks_x, masks = _masks(g, 1, 2, 16), _masks(g, 1, 2, 5)
    ctx = torch.randn(2, 16, 48, generator=g)
    ragged = masks_x.clone()
    ragged[0, 0, 10:] = -1
    out = small(ctx, ragged, masks)
    alone = small(ctx[:1, :10], masks_x[:, :1, :10], masks[:, :1])
    torch.testing.assert_close(out[:1], alone, atol=1e-5, rtol=1e-5)


def test_gradients_reach_context_and_mask_token(small):
    g = torch.Generator().manual_seed(4)
    ctx = torch.randn(2, 12, 48, generator=g, requires_grad=True)
    small.train()
    small(ctx, _masks(g, 1, 2, 12), _masks(g, 2, 2, 5)).square().mean().backward()
    assert ctx.grad.abs().sum() > 0 and small.mask_token.grad.abs().sum() > 0
    assert not any(n == "pos_embed" for n, _ in small.named_parameters())  # fixed, never optimised


def test_positions_and_init():
    p = Predictor(grid=(16, 16), encoder_dim=192, predictor_dim=384, depth=4, num_heads=3)
    torch.testing.assert_close(p.pos_embed, sincos_pos_embed(384, (16, 16)))
    assert abs(p.mask_token.std().item() - 0.02) < 0.004
    # Official training re-draws every Linear (no 1/sqrt(2·layer) rescale); "rescaled" is the named departure.
    # trunc_normal_ bounds are absolute (±2), so at std 0.02 nothing is truncated.
    for blk in p.predictor_blocks:
        assert blk.mlp.fc2.weight.std().item() == pytest.approx(0.02, rel=0.05)
    r = Predictor(grid=(16, 16), encoder_dim=192, predictor_dim=384, depth=4, num_heads=3, init="rescaled")
    for layer, blk in enumerate(r.predictor_blocks, start=1):
        assert blk.mlp.fc2.weight.std().item() == pytest.approx(0.02 / math.sqrt(2 * layer), rel=0.05)
    assert p.predictor_norm.eps == 1e-6 and p.predictor_blocks[0].norm1.eps == 1e-6


def test_build_predictor_defaults_per_preset():
    enc = build_encoder("vit_tiny", img_size=112)
    p = build_predictor(enc)
    assert (p.depth, p.predictor_dim, p.num_heads, p.grid) == (PREDICTOR_DEPTH["vit_tiny"], 384, 3, (8, 8))
    assert build_predictor(enc, depth=2, dim=96).depth == 2
    assert PREDICTOR_DEPTH["vit_base"] == 6 and PREDICTOR_DEPTH["vit_huge"] == 12
    with pytest.raises(ValueError, match="divisible by num_heads"):
        build_predictor(enc, dim=100, num_heads=3)


def test_shape_mismatch_is_an_error(small):
    g = torch.Generator().manual_seed(5)
    with pytest.raises(ValueError, match="does not match"):
        small(torch.randn(3, 10, 48), _masks(g, 1, 2, 10), _masks(g, 1, 2, 4))


def test_with_encoder_end_to_end():
    torch.manual_seed(0)
    enc = build_encoder("vit_tiny", img_size=112, depth=2).eval()
    pred = build_predictor(enc, depth=1).eval()
    g = torch.Generator().manual_seed(6)
    x = torch.rand(2, 1, 112, 112, generator=g)
    masks_x, masks = _masks(g, 1, 2, 30), _masks(g, 4, 2, 9)
    z = pred(enc.forward_features(x, masks_x), masks_x, masks)
    assert z.shape == (4 * 2, 9, 192) and torch.isfinite(z).all()
