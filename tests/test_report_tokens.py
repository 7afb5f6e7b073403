"""Image-token options of the report projector: k×k merge order and per-position standardisation."""
import pytest
import torch

from radjepa_cli.report.projector import build_image_adapter, merge_tokens


def test_merge_tokens_concatenates_each_kxk_block_of_neighbours():
    side, k, D = 4, 2, 3
    grid = torch.arange(side * side).float()            # token id = row*side + col
    v = grid[None, :, None].repeat(1, 1, D)              # [1, 16, 3]
    m = merge_tokens(v, k)
    assert m.shape == (1, 4, k * k * D)
    # First merged token = block rows 0-1, cols 0-1: ids 0, 1, 4, 5 in row-major order.
    assert m[0, 0, ::D].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert m[0, 3, ::D].tolist() == [10.0, 11.0, 14.0, 15.0]
    with pytest.raises(ValueError, match="square token grid"):
        merge_tokens(torch.zeros(1, 12, D), 2)


def test_adapter_standardizes_per_position_then_merges():
    N, D, out = 16, 8, 5
    mean, std = torch.randn(N, D), torch.rand(N, D) + 0.5
    ad = build_image_adapter("mlp2x_gelu", D, out, token_norm="standardize", stats=(mean, std), token_merge=2)
    assert ad.in_dim == D and ad.out_dim == out
    v = torch.randn(2, N, D)
    y = ad(v)
    assert y.shape == (2, 4, out)
    # Shifting a token by its position's mean·scale is exactly undone by the standardiser.
    assert torch.allclose(ad(mean + std * v), ad.proj(merge_tokens(v, 2)), atol=1e-5)
    with pytest.raises(ValueError, match="needs the training tokens"):
        build_image_adapter("mlp2x_gelu", D, out, token_norm="standardize")
