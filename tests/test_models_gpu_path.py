"""The models' GPU path: packed varlen attention for variable-length masks (equal to the padded eager path), no
host synchronisation in the forward, positions from a device buffer on every path, gradient checkpointing."""
import copy

import pytest
import torch

import radjepa_kernels as K
from radjepa_cli.models import vit as V
from radjepa_cli.models.packing import TokenPacking
from radjepa_cli.models.predictor import build_predictor, target_valid_mask
from radjepa_kernels import fused_attention


def _models(embed_dim=64, heads=2, depth=2):
    torch.manual_seed(0)
    enc = V.build_encoder("vit_tiny", img_size=56, patch_size=14, embed_dim=embed_dim, depth=depth, num_heads=heads)
    return enc, build_predictor(enc, depth=1, dim=48, num_heads=heads)  # predictor head dim 24


def _masks():
    # 4×4 grid, B=2: context rows of 10 and 8 patches; targets of 4, 2, 4, 3 patches (-1 = padding)
    enc = torch.tensor([[[0, 1, 2, 4, 5, 6, 8, 9, 12, 13], [2, 3, 6, 7, 10, 11, 14, 15, -1, -1]]])
    pred = torch.tensor([[[10, 11, 14, 15], [0, 1, -1, -1]], [[3, 7, 11, 15], [8, 12, 9, -1]]])
    return enc, pred


def _step(enc, pred, images, masks_enc, masks_pred, backend):
    K.set_backend(backend)
    try:
        z = enc.forward_features(images, masks_enc, padded=True)
        out = pred(z, masks_enc, masks_pred, padded=True)
    finally:
        K.set_backend(None)
    valid_ctx = (masks_enc >= 0).reshape(-1, masks_enc.shape[-1])
    valid_out = target_valid_mask(masks_pred, masks_enc.shape[0])
    loss = (out.square().sum(-1) * valid_out).sum() + (z.sum(-1) * valid_ctx).sum()
    params = [p for p in [*enc.parameters(), *pred.parameters()] if p.requires_grad]
    grads = torch.autograd.grad(loss, [images, *params])
    return z, out, valid_ctx, grads


def test_packed_varlen_path_equals_padded_eager_path(monkeypatch):
    varlen_calls = []
    orig = fused_attention.attention_varlen
    monkeypatch.setattr(fused_attention, "attention_varlen",
                        lambda *a, **kw: varlen_calls.append(a[0].shape) or orig(*a, **kw))
    enc, pred = _models()
    images = torch.randn(2, 1, 56, 56, generator=torch.Generator().manual_seed(1), requires_grad=True)
    masks_enc, masks_pred = _masks()
    z_e, out_e, valid, g_e = _step(enc, pred, images, masks_enc, masks_pred, "eager")
    assert not varlen_calls
    z_t, out_t, _, g_t = _step(copy.deepcopy(enc), copy.deepcopy(pred), images, masks_enc, masks_pred, "triton")
    # packed: encoder blocks see 18 tokens (10 + 8), the predictor rows 10+4, 10+2, 8+4, 8+3 = 49, not 4 × 14 = 56
    assert [s[0] for s in varlen_calls] == [18, 18, 49]
    torch.testing.assert_close(z_t[valid], z_e[valid], rtol=1e-4, atol=1e-5)
    assert torch.all(z_t[~valid] == 0)
    torch.testing.assert_close(out_t, out_e, rtol=1e-4, atol=1e-5)
    for a, b in zip(g_t, g_e):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_token_packing_round_trip():
    valid = torch.tensor([[True, True, False], [False, False, False], [True, True, True]])
    p = TokenPacking.from_valid(valid)
    assert p.cu_seqlens.tolist() == [0, 2, 2, 5] and p.max_seqlen == 3 and p.total == 5
    x = torch.arange(9.0).view(3, 3, 1)
    assert p.pack(x).flatten().tolist() == [0, 1, 6, 7, 8]
    assert p.unpack(p.pack(x)).flatten().tolist() == [0, 1, 0, 0, 0, 0, 6, 7, 8]


def test_forward_reads_nothing_back_from_the_device():
    """On a device tensor (here `meta`, whose values cannot be read: any `.any()`/`.item()` raises), the encoder and
    predictor forwards run without reading a value back, with padding known or assumed."""
    enc, pred = _models()
    enc, pred = enc.to("meta"), pred.to("meta")
    x = torch.empty(2, 1, 56, 56, device="meta")
    masks_enc, masks_pred = (m.to("meta") for m in _masks())
    for padded in (None, True, False):
        z = enc.forward_features(x, masks_enc, padded=padded)
        out = pred(z, masks_enc, masks_pred, padded=padded)
        assert out.shape == (4, 4, 64)
    assert V.padding_of(masks_enc, None) == "maybe"  # unknown on a device: never read
    assert V.padding_of(_masks()[0], None) == "yes" and V.padding_of(_masks()[0][:, :1], None) == "no"
    assert V.padding_of(masks_enc, False) == "no" and V.padding_of(masks_enc, True) == "yes"


def test_positions_come_from_a_device_buffer(monkeypatch):
    enc, _ = _models()
    assert "pos_table" in dict(enc.named_buffers()) and "pos_table" not in enc.state_dict()
    torch.testing.assert_close(enc.pos_table, V.sincos_pos_embed(64, (4, 4)))
    monkeypatch.setattr(V, "sincos_pos_embed", lambda *a: pytest.fail("positions rebuilt in forward"))
    enc.forward_features(torch.randn(1, 1, 56, 56))


def test_every_path_adds_positions():
    """timm's forward_intermediates (and get_intermediate_layers) go through _pos_embed, so they match
    forward_features; before, they returned features without positions."""
    enc, _ = _models()
    x = torch.randn(2, 1, 56, 56)
    ref = enc.forward_features(x)
    final, inter = enc.forward_intermediates(x, output_fmt="NLC")
    torch.testing.assert_close(final, ref)
    torch.testing.assert_close(enc.norm(inter[-1]), ref)
    torch.testing.assert_close(enc.get_intermediate_layers(x, 1, norm=True)[0], ref)
    torch.testing.assert_close(enc.block_outputs(x, [-1, 0])[0], ref)


@pytest.mark.parametrize("masked", [False, True])
def test_grad_checkpointing_recomputes_blocks_and_keeps_gradients(masked, monkeypatch):
    enc, _ = _models()
    x = torch.randn(2, 1, 56, 56)
    masks = _masks()[0] if masked else None
    calls = []
    orig = V.KernelAttention.forward  # (forward hooks do not fire in checkpoint's recomputation)
    monkeypatch.setattr(V.KernelAttention, "forward", lambda self, *a, **kw: calls.append(1) or orig(self, *a, **kw))

    def grads():
        calls.clear()
        out = enc.forward_features(x, masks, padded=masked)
        g = torch.autograd.grad(out.square().sum(), list(enc.parameters()))
        return g, len(calls)
    plain, n_plain = grads()
    enc.set_grad_checkpointing(True)
    ckpt, n_ckpt = grads()
    assert n_plain == len(enc.blocks) and n_ckpt == 2 * len(enc.blocks)  # recomputed in the backward
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(a, b)
