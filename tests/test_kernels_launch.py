"""Launch faults found by reading the kernels as a GPU user would (issue 12): the device a kernel launches on, grid
limits for large batches, recompilation as lengths vary, and the bf16/fp16 code paths the GPU takes."""
import math
from types import SimpleNamespace

import pytest
import torch

from radjepa_kernels import _common, ema as E, fused_attention as A, gather as G, reference as R


def test_device_guard_selects_the_tensors_device():
    fake = SimpleNamespace(is_cuda=True, device=torch.device("cuda", 1))
    guard = _common.device_guard(fake)
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert not isinstance(_common.device_guard(torch.zeros(1)), torch.cuda.device)


def test_every_kernel_launch_happens_under_the_device_guard(monkeypatch):
    state = {"inside": 0, "launches": []}

    class Guard:
        def __init__(self, t):
            self.t = t

        def __enter__(self):
            state["inside"] += 1

        def __exit__(self, *exc):
            state["inside"] -= 1

    for mod in (A, G, E):
        monkeypatch.setattr(mod, "device_guard", Guard)

    class Checked:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            def launch(*a, **kw):
                assert state["inside"], f"{self.name} launched outside the device guard"
                state["launches"].append(self.name)
                return self.kernel[grid](*a, **kw)
            return launch

    for mod, names in ((A, ("_fwd_kernel", "_attn_bwd_pre", "_dkdv_kernel", "_dq_kernel")),
                       (G, ("_gather_fwd_kernel", "_gather_bwd_kernel")), (E, ("_ema_kernel",))):
        for n in names:
            monkeypatch.setattr(mod, n, Checked(n, getattr(mod, n)))
    q, k, v = (torch.randn(1, 1, 5, 16, requires_grad=True) for _ in range(3))
    A.attention(q, k, v).sum().backward()
    x = torch.randn(1, 6, 8, requires_grad=True)
    G.gather_tokens(x, torch.tensor([[[0, 3, -1]]])).sum().backward()
    E._PLANS.clear()
    E.ema_update_([torch.zeros(10)], [torch.ones(10)], 0.5)
    assert sorted(set(state["launches"])) == sorted(["_fwd_kernel", "_attn_bwd_pre", "_dkdv_kernel", "_dq_kernel",
                                                     "_gather_fwd_kernel", "_gather_bwd_kernel", "_ema_kernel"])


def test_grid_puts_batch_heads_on_the_unbounded_axis():
    # 1,400 images × 4 target masks (one context mask) × 12 heads: 67,200 sequence·heads, above axis 1's 65,535.
    bh = 1400 * 4 * 12
    grid = A.launch_grid(bh, 200, 64)
    assert grid == (bh, 4)
    assert grid[1] <= A.MAX_GRID_Y and grid[0] < 2**31
    assert A.launch_grid(2**31 - 1, 16, 16) == (2**31 - 1, 1)
    with pytest.raises(ValueError, match="grid limits"):
        A.launch_grid(2**31, 16, 16)


def _specialisation(kernel_fn, args: dict) -> tuple:
    """The key Triton compiles a kernel variant under, for the integer arguments (what changes with lengths)."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend
    dns = set(getattr(kernel_fn, "kwargs", {}).get("do_not_specialize") or getattr(kernel_fn, "do_not_specialize", ()))
    return tuple((name, native_specialize_impl(BaseBackend, val, False, name not in dns, True)[1])
                 for name, val in args.items() if isinstance(val, int) and not isinstance(val, bool))


def test_varying_lengths_compile_one_variant_and_few_autotune_keys(monkeypatch):
    """Lengths 1–300 (variable-length masks, different on every rank) must not each compile a new variant: one
    specialisation per kernel and layout, and autotuning only per power-of-two length bucket."""
    launches = []

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            fn = self.kernel.fn if hasattr(self.kernel, "configs") else self.kernel  # autotuned or plain
            return lambda *a, **kw: launches.append((fn, dict(zip(fn.arg_names, a)), kw))

    for n in ("_fwd_kernel", "_attn_bwd_pre", "_dkdv_kernel", "_dq_kernel"):
        monkeypatch.setattr(A, n, Recorder(getattr(A, n)))
    B, H, d = 3, 2, 32
    for n in range(1, 301, 7):
        qkv = torch.randn(B, n, 3, H, d).permute(2, 0, 3, 1, 4)  # the model's layout
        q, k, v = qkv.unbind(0)
        kpm = torch.ones(B, n, dtype=torch.bool).view(torch.uint8)
        for mask in (None, kpm):
            o, lse = A._attn_fwd_op(q, k, v, mask, None, n, 0.1)
            A._attn_bwd_op(torch.randn_like(o), q, k, v, o, lse, mask, None, n, 0.1)
    variants, tune_keys = {}, {}
    for fn, args, kw in launches:
        layout = (fn.__name__, kw.get("HAS_KPM"))
        variants.setdefault(layout, set()).add(_specialisation(fn, args))
        tune_keys.setdefault(layout, set()).add(tuple(args.get(k) for k in A._KEY[:2]))
    assert len(variants) == 7  # fwd/dkdv/dq × (dense, kpm) + the backward prologue
    for layout, keys in variants.items():
        first = dict(next(iter(keys)))
        assert len(keys) == 1, (layout, [{n: v for n, v in k if v != first[n]} for k in keys])
    assert max(len(k) for k in tune_keys.values()) <= 6  # N buckets 16 … 512


def _qkv(dtype, shape=(2, 2, 16, 32), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(*shape, generator=g) * 2).to(dtype) for _ in range(3)]


def test_bf16_probabilities_are_rounded_like_the_gpu():
    """On the GPU, P is cast to bf16 before the P·V tensor-core dot; the interpreter path runs the same cast (with
    round-to-nearest-even) and multiplies in fp32. One key block, so the online softmax equals a plain one: the
    output then matches a torch emulation of the GPU's rounding exactly, and an unrounded one in only ~85%."""
    q, k, v = _qkv(torch.bfloat16)
    out = A.attention(q, k, v)
    s = (q.float() @ k.float().transpose(-1, -2)) * (A.LOG2E / math.sqrt(q.shape[-1]))
    p = torch.exp2(s - s.amax(-1, keepdim=True))
    gpu_like = ((p.bfloat16().float() @ v.float()) / p.sum(-1, keepdim=True)).bfloat16()
    unrounded = ((p @ v.float()) / p.sum(-1, keepdim=True)).bfloat16()
    assert torch.equal(out, gpu_like)
    assert (out == unrounded).float().mean() < 0.95


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_gpu_code_path_without_upcast_runs_under_the_interpreter(dtype, monkeypatch):
    """fp16/fp32 arithmetic is right under the interpreter, so there the kernels run exactly the GPU's code (no fp32
    upcast after loads: fp16 dots, fp16 casts and stores); it must agree with the upcast path the other tests use
    and with the reference."""
    q, k, v = (t.requires_grad_() for t in _qkv(dtype, (2, 2, 21, 24), seed=1))
    kpm = torch.ones(2, 21, dtype=torch.bool)
    kpm[1, 15:] = False
    g = torch.randn(2, 2, 21, 24).to(dtype)

    def run():
        out = A.attention(q, k, v, kpm)
        return [out, *torch.autograd.grad(out, (q, k, v), g)]
    upcast = run()
    monkeypatch.setattr(_common, "NO_UPCAST", True)
    assert not _common.upcast()
    native = run()
    for a, b in zip(native, upcast):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-3)
    ref = R.attention(q.double(), k.double(), v.double(), kpm)
    assert (native[0].double() - ref).norm() / ref.norm() < (1e-2 if dtype == torch.float16 else 1e-5)
