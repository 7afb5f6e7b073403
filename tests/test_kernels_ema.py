"""EMA update: one Triton launch (interpreter) over a pointer table, against an fp64 computation."""
import pytest
import torch

from radjepa_kernels import ema as E
from radjepa_kernels import reference as R

SHAPES = [(5, 3), (1,), (4097,), (0,), (2, 2, 3), (E.BLOCK,)]  # odd sizes, one element, empty, exact block


def _pair(gen, online_dtypes):
    target = [torch.randn(s, generator=gen) for s in SHAPES]
    online = [torch.randn(s, generator=gen).to(dt) for s, dt in zip(SHAPES, online_dtypes)]
    return target, online


@pytest.mark.parametrize("online_dtypes", [
    [torch.float32] * len(SHAPES),
    [torch.bfloat16, torch.float32, torch.bfloat16, torch.float16, torch.float32, torch.bfloat16],
])
def test_matches_fp64_over_several_steps(online_dtypes):
    gen = torch.Generator().manual_seed(len(set(online_dtypes)))
    target, online = _pair(gen, online_dtypes)
    expect = [t.double() for t in target]
    for momentum in (0.996, 0.9991, 1.0, 0.5):  # a different momentum each step, same compiled kernel
        E.ema_update_(target, online, momentum)
        expect = [momentum * e + (1 - momentum) * o.double() for e, o in zip(expect, online)]
        for t, e in zip(target, expect):
            assert t.dtype == torch.float32
            assert torch.allclose(t.double(), e, rtol=1e-6, atol=1e-6)


def test_plan_is_cached_and_rebuilt_for_new_tensors():
    gen = torch.Generator().manual_seed(1)
    E._PLANS.clear()
    target, online = _pair(gen, [torch.float32] * len(SHAPES))
    E.ema_update_(target, online, 0.99)
    E.ema_update_(target, online, 0.98)
    assert len(E._PLANS) == 1
    # new online tensors (e.g. the model was reloaded): a new table, and the right memory is read
    online2 = [o.clone() * 0 + 1 for o in online]
    ref = [t.clone() for t in target]
    E.ema_update_(target, online2, 0.75)
    R.ema_update_(ref, online2, 0.75)
    assert len(E._PLANS) == 2
    for t, r in zip(target, ref):
        assert torch.allclose(t, r, rtol=1e-6, atol=1e-7)


def test_matches_reference_on_model_parameters():
    enc = torch.nn.Sequential(torch.nn.Linear(7, 13), torch.nn.LayerNorm(13), torch.nn.Linear(13, 3))
    tgt = [p.detach().clone() for p in enc.parameters()]
    ref = [t.clone() for t in tgt]
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p))
    E.ema_update_(tgt, list(enc.parameters()), 0.996)
    R.ema_update_(ref, list(enc.parameters()), 0.996)
    for t, r in zip(tgt, ref):
        assert torch.allclose(t, r, rtol=1e-6, atol=1e-7)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="must be fp32"):
        E.ema_update_([torch.zeros(3, dtype=torch.bfloat16)], [torch.zeros(3)], 0.9)
    with pytest.raises(ValueError, match="shapes differ"):
        E.ema_update_([torch.zeros(3)], [torch.zeros(4)], 0.9)
    with pytest.raises(ValueError, match="2 target vs 1 online"):
        E.ema_update_([torch.zeros(3), torch.zeros(1)], [torch.zeros(3)], 0.9)
    with pytest.raises(ValueError, match="not contiguous"):
        E.ema_update_([torch.zeros(3, 2).t()], [torch.zeros(2, 3)], 0.9)
    E.ema_update_([], [], 0.9)  # nothing to do
