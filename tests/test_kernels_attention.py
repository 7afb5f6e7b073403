"""Fused attention: Triton (interpreter) forward/backward against the fp64 reference, padding, varlen, compile."""
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from radjepa_kernels import fused_attention as A
from radjepa_kernels import reference as R

from _kernel_utils import TOL, poison, rel_err  # noqa: F401


def _qkv(gen, shape, dtype, k_len=None):
    q = torch.randn(*shape, generator=gen)
    kshape = list(shape)
    if k_len is not None:
        kshape[2] = k_len
    k, v = torch.randn(*kshape, generator=gen), torch.randn(*kshape, generator=gen)
    return [t.to(dtype).requires_grad_() for t in (q, k, v)]


def _grads(out, inputs, g):
    return torch.autograd.grad(out, inputs, g)


CASES = [  # (B, H, Nq, Nk, d, dtype, padding)
    (2, 2, 37, 37, 24, torch.float32, True),    # head dim 24 padded to 32; batch 0 fully padded
    (1, 1, 1, 1, 32, torch.float32, False),     # length 1
    (2, 3, 20, 20, 64, torch.bfloat16, False),
    (1, 2, 17, 17, 32, torch.float16, True),
    (1, 2, 7, 30, 32, torch.float32, False),    # cross-attention lengths
]


@pytest.mark.parametrize("B,H,Nq,Nk,d,dtype,padding", CASES)
def test_forward_backward_match_fp64_reference(B, H, Nq, Nk, d, dtype, padding, poison):
    gen = torch.Generator().manual_seed(B * 1000 + Nq * 10 + d)
    q, k, v = _qkv(gen, (B, H, Nq, d), dtype, Nk)
    kpm = None
    if padding:
        kpm = torch.rand(B, Nk, generator=gen) > 0.3
        kpm[:, 0] = True
        if B > 1:
            kpm[0] = False  # a sequence with no valid key: output and gradients 0
    out = A.attention(q, k, v, kpm)
    g = torch.randn(out.shape, generator=gen).to(dtype)
    got = _grads(out, (q, k, v), g)
    q64, k64, v64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = R.attention(q64, k64, v64, kpm)
    want = _grads(ref, (q64, k64, v64), g.double())
    assert not out.isnan().any() and not any(t.isnan().any() for t in got)
    tol = TOL[dtype]
    if dtype != torch.float32:  # ANCHORS: error at most 2× that of PyTorch's own op in the same precision
        own = R.attention(q, k, v, kpm)
        own_grads = _grads(own, (q, k, v), g)
        assert rel_err(out, ref) <= 2 * rel_err(own, ref) + 1e-4
        for a, o, w in zip(got, own_grads, want):
            assert rel_err(a, w) <= 2 * rel_err(o, w) + 1e-4
    assert rel_err(out, ref) <= tol
    for a, w in zip(got, want):
        assert rel_err(a, w, floor=1e-2) <= tol  # floor: length-1 softmax has an exactly-zero dq
    if padding and B > 1:
        assert (out[0] == 0).all() and all((t[0] == 0).all() for t in got)


def test_multi_block_sequence_with_padding_bf16(poison):
    """Several query and key blocks (the interpreter config uses 16×16 tiles) plus padding at a block edge."""
    gen = torch.Generator().manual_seed(5)
    q, k, v = _qkv(gen, (1, 2, 50, 32), torch.bfloat16)
    kpm = torch.ones(1, 50, dtype=torch.bool)
    kpm[0, 33:] = False
    out = A.attention(q, k, v, kpm)
    g = torch.randn(out.shape, generator=gen).to(torch.bfloat16)
    got = _grads(out, (q, k, v), g)
    q64, k64, v64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = R.attention(q64, k64, v64, kpm)
    want = _grads(ref, (q64, k64, v64), g.double())
    assert rel_err(out, ref) <= TOL[torch.bfloat16]
    for a, w in zip(got, want):
        assert rel_err(a, w) <= TOL[torch.bfloat16]
    assert (got[1][0, :, 33:] == 0).all() and (got[2][0, :, 33:] == 0).all()  # padded keys get no gradient


def test_varlen_matches_per_sequence_reference(poison):
    gen = torch.Generator().manual_seed(11)
    lens = [5, 1, 0, 19]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    T, H, d = int(cu[-1]), 3, 24
    q, k, v = [torch.randn(T, H, d, generator=gen).requires_grad_() for _ in range(3)]
    out = A.attention_varlen(q, k, v, cu, max_seqlen=max(lens))
    g = torch.randn(out.shape, generator=gen)
    got = _grads(out, (q, k, v), g)
    q64, k64, v64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = R.attention_varlen(q64, k64, v64, cu)
    want = _grads(ref, (q64, k64, v64), g.double())
    assert rel_err(out, ref) <= TOL[torch.float32]
    for a, w in zip(got, want):
        assert rel_err(a, w) <= TOL[torch.float32]
    # packing is equivalent to padding: sequence 3 alone, via the batched kernel
    s, e = int(cu[3]), int(cu[4])
    alone = A.attention(*(t[s:e].transpose(0, 1)[None].detach() for t in (q, k, v)))[0].transpose(0, 1)
    assert rel_err(out[s:e], alone) <= 1e-6


def test_strided_qkv_scale_and_output_layout():
    """timm's qkv.reshape(B,N,3,H,d).permute → strided q/k/v, used without copies; output is [B,N,H,d] memory."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 13, 3, 2, 32, generator=gen)
    q, k, v = x.permute(2, 0, 3, 1, 4).unbind(0)
    out = A.attention(q, k, v, scale=0.3)
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=0.3)
    assert rel_err(out, ref) <= TOL[torch.float32]
    assert out.transpose(1, 2).is_contiguous()


def test_bad_inputs_raise_clear_errors():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(TypeError, match="dtypes differ"):
        A.attention(q, q.double(), q)
    with pytest.raises(ValueError, match="key_padding_mask"):
        A.attention(q, q, q, torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="cu_seqlens"):
        A.attention_varlen(q[0], q[0], q[0], torch.tensor([0.0, 2.0]))


def test_custom_op_registration_and_compile():
    gen = torch.Generator().manual_seed(4)
    q, k, v = [torch.randn(1, 2, 9, 16, generator=gen, requires_grad=True) for _ in range(3)]
    kpm = torch.tensor([[True] * 7 + [False] * 2]).view(torch.uint8)
    torch.library.opcheck(torch.ops.radjepa.attention_fwd.default, (q, k, v, kpm, None, 9, 0.25),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    fn = torch.compile(lambda a, b, c: A.attention(a, b, c).square().sum(), backend="aot_eager", fullgraph=True)
    loss = fn(q, k, v)
    got = _grads(loss, (q, k, v), None)
    ref_loss = R.attention(q, k, v).square().sum()
    want = _grads(ref_loss, (q, k, v), None)
    assert math.isclose(loss.item(), ref_loss.item(), rel_tol=1e-5)
    for a, w in zip(got, want):
        assert rel_err(a, w) <= 1e-5


def _compile_check(*args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "radjepa_kernels.compile_check", *args], env=env,
                          capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_kernels_compile_for_h100_without_gpu():
    """Lower every kernel to sm90 cubin with triton's ptxas, at every head dim the presets use, in each kernel's
    biggest-tile config: catches what only the GPU compiler checks (dot shapes/dtypes, layouts, shared memory)."""
    out = _compile_check("--quick")
    assert "ema" in out and "gather_bwd" in out
    for hd in (24, 32, 64, 80, 128):
        for kernel in ("attn_fwd", "attn_dkdv", "attn_dq"):
            assert f"{kernel}[bf16,d{hd},kpm," in out


@pytest.mark.slow
def test_every_kernel_variant_compiles_for_h100():
    """The full sweep: 3 dtypes × 5 head dims × 3 layouts × every autotune config (~10 min on 2 cores)."""
    out = _compile_check()
    n_cfg = sum(len(c) for c in A.GPU_CONFIGS.values())
    pruned = 2 * 3  # the fp32 128×128 forward tile at head dims 80 and 128 (BLOCK_D 128), in each of 3 layouts
    assert sum(line.startswith("attn_") and "bwd_pre" not in line for line in out.splitlines()) == \
        3 * 5 * 3 * n_cfg - pruned


def test_autotune_never_tries_a_config_that_overflows_shared_memory():
    import triton
    big = triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=2)
    assert not A.fits(big, 128, 4) and A.fits(big, 128, 2) and A.fits(big, 64, 4)
    q = torch.empty(1, dtype=torch.float32)
    kept = A._prune(A.GPU_CONFIGS["fwd"], {"Q": q}, BLOCK_D=128)
    assert big.kwargs not in [c.kwargs for c in kept] and len(kept) == len(A.GPU_CONFIGS["fwd"]) - 1
    assert len(A._prune(A.GPU_CONFIGS["fwd"], {"Q": q.bfloat16()}, BLOCK_D=128)) == len(A.GPU_CONFIGS["fwd"])


def test_preset_head_dims_are_the_ones_checked():
    """compile_check and the self-check cover exactly the head dims the encoder and predictor presets produce."""
    from radjepa_cli.models.predictor import PREDICTOR_DIM
    from radjepa_cli.models.vit import ENCODER_PRESETS
    from radjepa_kernels.check import PRESET_HEAD_DIMS
    dims = {p.embed_dim // p.num_heads for p in ENCODER_PRESETS.values()}
    dims |= {PREDICTOR_DIM // p.num_heads for p in ENCODER_PRESETS.values()}  # the predictor takes the encoder's heads
    assert dims == set(PRESET_HEAD_DIMS)
