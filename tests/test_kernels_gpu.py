"""On a real GPU (`TRITON_INTERPRET=0 pytest -m gpu tests/test_kernels_gpu.py`; conftest turns the interpreter on
unless told otherwise): the self-check passes for every family, launches land on the tensors' device, and the
models' packed varlen path equals the padded eager path in bf16 autocast."""
import os

import pytest
import torch

import radjepa_kernels as K

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
              pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="run with TRITON_INTERPRET=0")]


def test_selfcheck_passes_for_every_family(tmp_path, monkeypatch):
    monkeypatch.setenv("RADJEPA_KERNEL_CACHE", str(tmp_path / "c.json"))
    report = K.selfcheck("cuda", use_cache=False)
    bad = {n: c for n, c in report["checks"].items() if not c["passed"]}
    assert not bad, bad


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_kernels_launch_on_the_tensors_device():
    from radjepa_kernels import fused_attention, reference
    torch.cuda.set_device(0)
    q, k, v = (torch.randn(2, 3, 70, 64, device="cuda:1", dtype=torch.bfloat16) for _ in range(3))
    out = fused_attention.attention(q, k, v)
    torch.testing.assert_close(out, reference.attention(q, k, v), rtol=2e-2, atol=2e-2)


def test_packed_varlen_model_path_matches_padded_eager_in_bf16():
    from radjepa_cli.models.predictor import build_predictor
    from radjepa_cli.models.vit import build_encoder
    torch.manual_seed(0)
    enc = build_encoder("vit_small", img_size=112, patch_size=14, depth=2).cuda()
    pred = build_predictor(enc, depth=2).cuda()
    x = torch.randn(4, 1, 112, 112, device="cuda")
    idx = torch.stack([torch.randperm(64)[:40] for _ in range(4)]).sort(1).values
    idx[1, 30:] = -1
    masks = idx.unsqueeze(0)
    tgt = idx[:, :12].unsqueeze(0).clone()
    tgt[0, 2, 8:] = -1
    outs = {}
    for backend in ("eager", "triton"):
        K.set_backend(backend)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outs[backend] = pred(enc.forward_features(x, masks, padded=True), masks, tgt, padded=True).float()
    K.set_backend(None)
    err = (outs["triton"] - outs["eager"]).norm() / outs["eager"].norm()
    assert err < 2e-2
