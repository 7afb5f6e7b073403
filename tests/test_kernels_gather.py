"""Masked-block gather: Triton (interpreter) against the fp64 reference; deterministic, atomic-free backward."""
import pytest
import torch

import radjepa_kernels as K
from radjepa_kernels import gather as G
from radjepa_kernels import reference as R

from _kernel_utils import TOL, poison, rel_err  # noqa: F401


def _indices(gen, M, B, K_, N, pad_frac=0.3, unique=True):
    """I-JEPA-like masks: sorted unique patch ids per (mask, image), some rows padded with -1 at the end."""
    idx = torch.full((M, B, K_), -1, dtype=torch.long)
    for m in range(M):
        for b in range(B):
            keep = K_ - int(torch.randint(0, int(pad_frac * K_) + 1, (1,), generator=gen))
            ids = torch.randperm(N, generator=gen)[:keep] if unique else torch.randint(0, N, (keep,), generator=gen)
            idx[m, b, :keep] = ids.sort().values if unique else ids
    return idx


CASES = [  # (M, B, N, D, K, dtype, with_pos)
    (1, 2, 16, 48, 11, torch.float32, False),
    (3, 2, 9, 33, 7, torch.float32, True),       # odd width, odd length, overlapping masks
    (4, 1, 5, 8, 5, torch.bfloat16, True),       # every token selected by every mask
    (2, 3, 7, 20, 1, torch.float16, False),      # length-1 masks
    (2, 2, 6, 16, 0, torch.float32, True),       # empty masks
]


@pytest.mark.parametrize("M,B,N,D,K_,dtype,with_pos", CASES)
def test_forward_matches_reference(M, B, N, D, K_, dtype, with_pos, poison):
    gen = torch.Generator().manual_seed(M * 100 + N)
    x = torch.randn(B, N, D, generator=gen).to(dtype)
    pos = torch.randn(N, D, generator=gen) if with_pos else None
    idx = _indices(gen, M, B, K_, N)
    out = G.gather_tokens(x, idx, pos)
    ref = R.gather_tokens(x.double(), idx, None if pos is None else pos.to(dtype).double())
    assert out.shape == (M * B, K_, D) and out.dtype == dtype
    assert not out.isnan().any()
    assert rel_err(out, ref) <= TOL[dtype]
    # padded positions are exact zeros
    pad = (idx < 0).reshape(M * B, K_)
    assert (out[pad] == 0).all()


@pytest.mark.parametrize("unique", [True, False])
def test_backward_fp64_against_reference(unique, poison):
    gen = torch.Generator().manual_seed(7 + unique)
    M, B, N, D, K_ = 3, 2, 10, 24, 8
    x = torch.randn(B, N, D, dtype=torch.float64, generator=gen, requires_grad=True)
    pos = torch.randn(N, D, dtype=torch.float64, generator=gen, requires_grad=True)
    idx = _indices(gen, M, B, K_, N, unique=unique)  # non-unique: an index repeated within one mask
    g = torch.randn(M * B, K_, D, dtype=torch.float64, generator=gen)
    got = torch.autograd.grad(G.gather_tokens(x, idx, pos), (x, pos), g)
    want = torch.autograd.grad(R.gather_tokens(x, idx, pos), (x, pos), g)
    for a, b in zip(got, want):
        assert rel_err(a, b) <= 1e-12
    # rows no mask selects get exact zeros
    selected = torch.zeros(B, N, dtype=torch.bool)
    for m in range(M):
        for b in range(B):
            selected[b, idx[m, b][idx[m, b] >= 0]] = True
    assert (got[0][~selected] == 0).all()


def test_backward_is_deterministic_and_fp32_accurate():
    gen = torch.Generator().manual_seed(3)
    M, B, N, D, K_ = 4, 2, 6, 40, 6   # every mask takes (almost) every token: rows summed from up to 4 sources
    x = torch.randn(B, N, D, generator=gen, requires_grad=True)
    idx = _indices(gen, M, B, K_, N, pad_frac=0.2)
    g = torch.randn(M * B, K_, D, generator=gen) * 1e3
    runs = [torch.autograd.grad(G.gather_tokens(x, idx), x, g)[0] for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    ref = torch.autograd.grad(R.gather_tokens(x.double(), idx), x, g.double())[0]
    assert rel_err(runs[0], ref) <= TOL[torch.float32]


def test_inverse_index_covers_every_selection_once():
    idx = torch.tensor([[[2, 0, -1]], [[2, 2, 1]]])  # M=2, B=1, K=3; token 2 picked three times
    order, start = G.inverse_index(idx, 4)
    assert start.tolist() == [0, 1, 2, 5, 5]
    assert sorted(order[: start[-1]].tolist()) == [0, 1, 3, 4, 5]   # flat rows of the valid entries
    assert order[start[2]:start[3]].tolist() == [0, 3, 4]          # stable: (m, j) order


def test_two_dim_indices_and_dispatch(monkeypatch):
    x = torch.randn(2, 5, 8)
    idx = torch.tensor([[0, 4], [3, -1]], dtype=torch.int32)
    K.set_backend("triton")
    try:
        out = K.gather_tokens(x, idx)
    finally:
        K.set_backend("auto")
    assert torch.equal(out, R.gather_tokens(x, idx))


def test_bad_inputs_raise_clear_errors():
    x = torch.randn(2, 5, 8)
    with pytest.raises(IndexError, match="out of range"):
        G.gather_tokens(x, torch.tensor([[[0, 5]], [[1, 2]]]).reshape(1, 2, 2))
    with pytest.raises(ValueError, match="batch"):
        G.gather_tokens(x, torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="int32/int64"):
        G.gather_tokens(x, torch.zeros(1, 2, 2))


def test_custom_op_registration_and_compile():
    x = torch.randn(2, 6, 16, requires_grad=True)
    pos = torch.randn(6, 16)
    idx = torch.tensor([[[0, 3, -1], [5, 1, 2]], [[1, 1, 4], [-1, -1, -1]]])
    torch.library.opcheck(torch.ops.radjepa.gather_tokens.default, (x, idx, pos),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    compiled = torch.compile(lambda a, i, p: (G.gather_tokens(a, i, p) * 2).sum(), backend="aot_eager",
                             fullgraph=True)
    loss = compiled(x, idx, pos)
    (gx,) = torch.autograd.grad(loss, x)
    (rx,) = torch.autograd.grad((R.gather_tokens(x, idx, pos) * 2).sum(), x)
    assert torch.allclose(loss, (R.gather_tokens(x, idx, pos) * 2).sum(), rtol=1e-6)
    assert torch.allclose(gx, rx)
