"""The pretrain-step benchmark: its analytic model FLOPs match PyTorch's FLOP counter, and it runs on CPU."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from radjepa_cli.pretrain.masks import MaskConfig, MultiBlockMaskCollator
from radjepa_cli.pretrain.train import PretrainConfig, build_model

_spec = importlib.util.spec_from_file_location(
    "pretrain_step", Path(__file__).resolve().parents[1] / "benchmarks" / "pretrain_step.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("image_size,patch", [(32, 4), (32, 8)])
def test_analytic_flops_match_the_flop_counter(image_size, patch):
    torch.manual_seed(0)
    cfg = PretrainConfig(shards="-", out="-", model="vit_tiny", image_size=image_size, patch_size=patch,
                         pred_depth=2, pred_dim=96, steps=1)
    model = build_model(cfg)
    grid = model.encoder.grid_size
    me, mp = MultiBlockMaskCollator(MaskConfig(min_keep=0), grid).sample_masks(4, 0)
    x = torch.randn(4, 1, image_size, image_size)
    # The math backend decomposes attention into bmm's the counter sees (CPU flash attention is not counted).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, me, mp).backward()
    ctx, pred = bench.mask_token_counts(me, mp)
    want = bench.jepa_step_flops(batch=4, n_patches=grid[0] * grid[1], patch_dim=patch ** 2, dim=192, depth=12,
                                 pred_dim=96, pred_depth=2, n_ctx_masks=me.shape[0], ctx_tokens=ctx,
                                 n_pred_masks=mp.shape[0], pred_tokens=pred)["total"]
    assert counter.get_total_flops() == pytest.approx(want, rel=0.02)


def test_benchmark_runs_on_cpu(tmp_path):
    res = bench.main(["--model", "vit_tiny", "--image-size", "32", "--patch-size", "8", "--batch-size", "4",
                      "--steps", "1", "--warmup", "0", "--min-keep", "0", "--out", str(tmp_path / "r.json")])
    assert res[0]["images_per_s"] > 0 and res[0]["masks_per_s"] > 0 and (tmp_path / "r.json").is_file()


def test_peak_flops_table_tells_the_h100_variants_and_h200_apart():
    assert bench.peak_bf16("NVIDIA H100 80GB HBM3") == 989e12          # SXM
    assert bench.peak_bf16("NVIDIA H100 PCIe") == 756e12
    assert bench.peak_bf16("NVIDIA H100 NVL") == 835e12
    assert bench.peak_bf16("NVIDIA H200") == 989e12
    assert bench.peak_bf16("NVIDIA H200 NVL") == 835e12
    assert bench.peak_bf16("Some Future GPU") is None


def test_backends_whose_first_loss_differs_or_crash_fail_the_run():
    rows = [{"kernels": "eager", "loss_first_step": 0.5}, {"kernels": "triton", "loss_first_step": 0.5 * (1 + 1e-3)},
            {"kernels": "compile", "loss_first_step": 0.6}, {"kernels": "auto", "loss_first_step": float("nan")},
            {"kernels": "x", "error": "RuntimeError: boom", "failed": ["x: crashed"]}]
    bench.compare_losses(rows, tol=1.5e-2)
    failed = bench.failures(rows)
    assert rows[1]["failed"] == [] and rows[1]["loss_rel_err"] == pytest.approx(1e-3, rel=1e-6)
    assert any(f.startswith("compile: first-step loss") for f in failed)
    assert any(f.startswith("auto: non-finite") for f in failed) and "x: crashed" in failed and len(failed) == 3


def test_unknown_backend_is_recorded_as_a_failure_not_a_crash(tmp_path):
    res = bench.main(["--model", "vit_tiny", "--image-size", "32", "--patch-size", "8", "--batch-size", "2",
                      "--steps", "1", "--warmup", "0", "--min-keep", "0", "--kernels", "eager,bogus"])
    assert "loss_first_step" in res[0] and res[0]["failed"] == []
    assert "bogus" in res[1]["error"] and bench.failures(res) == ["bogus: crashed"]
