"""Unit tests of the pretraining parts: schedules, the JEPA module and loss, monitors, checkpoints, launch env."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from radjepa_cli.models.predictor import build_predictor
from radjepa_cli.models.vit import build_encoder
from radjepa_cli.pretrain import run_state
from radjepa_cli.pretrain.jepa import JEPA, masked_feature_loss, masked_mean, variance_covariance
from radjepa_cli.pretrain.launch import LaunchOptions, external_launch, first_slurm_host
from radjepa_cli.pretrain.masks import MaskConfig, MultiBlockMaskCollator
from radjepa_cli.pretrain.monitors import CollapseMonitor, effective_rank
from radjepa_cli.pretrain.schedules import Schedules


def tiny_jepa(loss="l2", **reg):
    torch.manual_seed(0)
    enc = build_encoder("vit_tiny", img_size=32, patch_size=8, depth=2)
    return JEPA(enc, build_predictor(enc, depth=1, dim=96), loss=loss, **reg)


def masks_for(B, variable=False, seed=0):
    col = MultiBlockMaskCollator(MaskConfig(min_keep=0, variable_length=variable), (4, 4), seed=seed)
    return col.sample_masks(B, 0)


# ---------------------------------------------------------------------------------------------- schedules
def test_schedules_follow_ijepa_recipe():
    s = Schedules(total_steps=100, warmup_steps=10)
    # Official indexing: the scheduler steps before each update, so the first update already warms up one step.
    assert s.lr_at(0) == pytest.approx(2e-4 + 0.1 * 8e-4) and s.lr_at(9) == pytest.approx(1e-3)
    assert s.lr_at(4) == pytest.approx(6e-4)                       # linear warmup (update 5 of 10)
    assert s.lr_at(99) == pytest.approx(1e-6) and s.lr_at(54) == pytest.approx((1e-3 + 1e-6) / 2)
    assert s.wd_at(0) == pytest.approx(0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi / 100)))
    assert s.wd_at(49) == pytest.approx(0.22) and s.wd_at(99) == pytest.approx(0.4)
    # Momentum is read after the update, from 0: the first EMA uses ema_start.
    assert s.momentum_at(0) == pytest.approx(0.996) and s.momentum_at(50) == pytest.approx(0.998)
    assert s.momentum_at(100) == pytest.approx(1.0)
    lrs = [s.lr_at(i) for i in range(9, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))               # monotone cosine decay
    with pytest.raises(ValueError):
        Schedules(total_steps=10, warmup_steps=11)


# ---------------------------------------------------------------------------------------------- JEPA
def test_target_encoder_is_fp32_frozen_copy_and_ema_moves_it():
    m = tiny_jepa()
    for (n, p), (_, q) in zip(m.encoder.named_parameters(), m.target_encoder.named_parameters()):
        assert torch.equal(p, q) and q.dtype == torch.float32 and not q.requires_grad
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(1.0)
    before = [q.clone() for q in m.target_encoder.parameters()]
    m.update_target(0.9)
    for b, q, p in zip(before, m.target_encoder.parameters(), m.encoder.parameters()):
        torch.testing.assert_close(q, 0.9 * b + 0.1 * p)
    names = {n for g in m.param_groups() for p in g["params"] for n, q in m.named_parameters() if q is p}
    assert not any(n.startswith("target_encoder.") for n in names)


def test_param_groups_exclude_biases_and_norms_from_weight_decay():
    m = tiny_jepa()
    decay, no_decay = m.param_groups()
    by_id = {id(p): n for n, p in m.named_parameters()}
    assert all(p.ndim >= 2 and not by_id[id(p)].endswith(".bias") for p in decay["params"])
    assert any("norm" in by_id[id(p)] for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert any(by_id[id(p)].endswith("qkv.weight") for p in decay["params"])


@pytest.mark.parametrize("variable", [False, True])
def test_loss_is_l2_on_layer_normed_targets_and_trains_only_online_parts(variable):
    m = tiny_jepa()
    x = torch.randn(3, 1, 32, 32)
    me, mp = masks_for(3, variable)
    loss = m(x, me, mp)
    # recompute by hand: target LN(features) at target positions, predictor output from the context
    with torch.no_grad():
        h = torch.nn.functional.layer_norm(m.target_encoder.forward_features(x), (192,))
        z = m.predictor(m.encoder.forward_features(x, me), me, mp)
        want, n = 0.0, 0
        for i in range(mp.shape[0]):
            for j in range(me.shape[0]):
                for b in range(3):
                    idx = mp[i, b][mp[i, b] >= 0]
                    row = (i * me.shape[0] + j) * 3 + b
                    want += (z[row, :len(idx)] - h[b, idx]).pow(2).sum().item()
                    n += len(idx) * 192
    assert loss.item() == pytest.approx(want / n, rel=1e-4)
    loss.backward()
    assert all(p.grad is None for p in m.target_encoder.parameters())
    assert m.encoder.patch_embed.proj.weight.grad.abs().sum() > 0 and m.predictor.mask_token.grad is not None


def test_masked_loss_ignores_padding_and_supports_smooth_l1():
    pred, tgt = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    pred[:, 2] = 100.0                                            # garbage at padded positions
    valid = torch.tensor([[True, True, False], [True, True, False]])
    assert masked_feature_loss(pred, tgt, valid, "l2").item() == pytest.approx(1.0)
    assert masked_feature_loss(pred, tgt, valid, "smooth_l1").item() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        masked_feature_loss(pred, tgt, valid, "l1")


def test_variance_covariance_terms_match_vicreg_definitions():
    g = torch.Generator().manual_seed(0)
    same = torch.ones(16, 8)                                      # collapsed: no spread, no covariance
    var, cov = variance_covariance(same)
    assert var.item() == pytest.approx(1 - 1e-2, abs=1e-6) and cov.item() == 0.0
    z = torch.randn(4096, 8, generator=g) * 2.0                   # spread > 1 everywhere: no hinge
    var, cov = variance_covariance(z)
    assert var.item() == 0.0 and cov.item() < 0.05
    a = torch.randn(4096, 1, generator=g)                         # two copies of one feature: cov = 1·1·2/2
    var, cov = variance_covariance(torch.cat([a, a], 1))
    assert cov.item() == pytest.approx(1.0, rel=0.1)
    x = torch.tensor([[[1.0], [3.0], [100.0]]])                   # padded token ignored by the pooling
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == 2.0


@pytest.mark.parametrize("variable", [False, True])
def test_variance_covariance_regulariser_adds_to_the_prediction_loss(variable):
    x = torch.randn(4, 1, 32, 32)
    me, mp = masks_for(4, variable)
    plain = tiny_jepa()(x, me, mp)
    m = tiny_jepa(reg_var=1.0, reg_cov=0.5)
    loss = m(x, me, mp)
    t = m.last_terms
    assert t["loss_pred"].item() == pytest.approx(plain.item(), rel=1e-5)
    assert loss.item() == pytest.approx((t["loss_pred"] + t["reg_var"] + 0.5 * t["reg_cov"]).item(), rel=1e-5)
    assert t["reg_var"].item() > 0                               # pooled embeddings start with std < 1
    loss.backward()
    assert all(p.grad is None for p in m.target_encoder.parameters())
    with pytest.raises(ValueError):
        tiny_jepa(reg_var=-1.0)


# ---------------------------------------------------------------------------------------------- monitors
def test_effective_rank_and_collapse_warning():
    g = torch.Generator().manual_seed(0)
    full = torch.randn(2000, 64, generator=g)
    assert effective_rank(full) > 55                                  # ~isotropic → close to D
    rank1 = torch.randn(2000, 1, generator=g) * torch.randn(1, 64, generator=g)
    assert effective_rank(rank1) < 1.5
    mon = CollapseMonitor(warn_fraction=0.5)
    v1 = mon.measure(full.view(20, 100, 64))
    assert v1["rankme"] > 55 and v1["target_std"] == pytest.approx(1.0, abs=0.05)
    assert mon.check(v1) == []
    warn = mon.check(mon.measure(rank1.view(20, 100, 64)))
    assert any("rankme" in w for w in warn)
    assert mon.check(mon.measure(rank1.view(20, 100, 64))) == []     # warned once, not every time


# ---------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_atomic_weights_only_and_module_prefix(tmp_path):
    m = tiny_jepa()
    opt = torch.optim.AdamW(m.param_groups(), lr=1e-3)
    me, mp = masks_for(2)
    m(torch.randn(2, 1, 32, 32), me, mp).backward()
    opt.step()
    ck = run_state.make_checkpoint(m, opt, step=7, epoch=1, batch_in_epoch=3, loss=0.5, lr=1e-3, batch_size=2,
                                   world_size=1, rng=[run_state.capture_rng()])
    run_state.save_checkpoint(tmp_path, ck, milestone=True)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.pt", "step_0000007.pt"]
    loaded = run_state.load_checkpoint(run_state.latest_path(tmp_path))     # weights_only=True inside
    assert {"encoder", "predictor", "target_encoder", "opt", "epoch", "loss", "batch_size", "world_size",
            "lr"} <= set(loaded)
    assert not any(k.startswith("module.") for k in loaded["encoder"])
    # an official-style dict with `module.` prefixes restores too
    loaded["encoder"] = {f"module.{k}": v for k, v in loaded["encoder"].items()}
    m2 = tiny_jepa()
    with torch.no_grad():
        for p in m2.parameters():
            p.zero_()
    opt2 = torch.optim.AdamW(m2.param_groups(), lr=1e-3)
    run_state.restore(m2, opt2, loaded)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert opt2.state_dict()["state"][0]["step"] == 1


def test_milestones_pruned_and_truncated_checkpoint_named(tmp_path):
    for step in (10, 20, 30):
        run_state.save_checkpoint(tmp_path, {"step": step, "x": torch.zeros(1)}, milestone=True, keep_milestones=2)
    assert [p.name for p in run_state.list_milestones(tmp_path)] == ["step_0000020.pt", "step_0000030.pt"]
    bad = tmp_path / "broken.pt"
    bad.write_bytes(run_state.latest_path(tmp_path).read_bytes()[:50])
    with pytest.raises(ValueError, match="broken.pt"):
        run_state.load_checkpoint(bad)
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


def test_rng_capture_restore_is_exact():
    import random
    state = run_state.capture_rng()
    a = (torch.rand(3), np.random.rand(3), random.random())
    run_state.restore_rng(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


# ---------------------------------------------------------------------------------------------- launch
def test_launch_environment_detection():
    assert external_launch({}) is None
    tr = external_launch({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "n0", "MASTER_PORT": "1"})
    assert tr["RANK"] == "3" and tr["WORLD_SIZE"] == "8"
    slurm = external_launch({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
                             "SLURM_JOB_NODELIST": "gpu[003-004,010]", "SLURM_TASKS_PER_NODE": "4(x2)",
                             "SLURM_JOB_ID": "12345"})
    assert slurm == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                     "MASTER_ADDR": "gpu003", "MASTER_PORT": str(20000 + 12345 % 20000)}
    assert external_launch({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None     # one task: plain start
    assert first_slurm_host("node7,node8") == "node7"
    with pytest.raises(ValueError, match="rdzv-endpoint"):
        LaunchOptions(procs=2, nnodes=2).validate()
    with pytest.raises(ValueError, match="not both"):
        LaunchOptions(procs=2, gpus=2).validate()


def test_failure_message_names_the_rank():
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from radjepa_cli.pretrain.launch import _failure_message
    f = ProcessFailure(local_rank=1, pid=4242, exitcode=1, error_file="/nonexistent/error.json")
    msg = _failure_message(ChildFailedError("pretrain", {1: f}))
    assert "rank 1" in msg and "4242" in msg and "exit code 1" in msg


def test_encoder_depth_and_width_overrides_reach_the_model_and_run_files():
    from radjepa_cli.models.checkpoint import encoder_config
    from radjepa_cli.pretrain.train import build_model, resolve_config
    over = dict(shards="s", out="o", model="vit_tiny", image_size=32, patch_size=8, steps=1, pred_depth=1)
    cfg = resolve_config(None, {**over, "depth": 2, "embed_dim": 64, "num_heads": 2})
    enc = build_model(cfg).encoder
    assert (len(enc.blocks), enc.embed_dim, enc.num_heads) == (2, 64, 2)
    assert encoder_config(enc)["depth"] == 2 and encoder_config(enc)["embed_dim"] == 64
    assert len(build_model(resolve_config(None, over)).encoder.blocks) == 12      # unset: the preset's depth
    with pytest.raises(ValueError, match="depth"):
        resolve_config(None, {**over, "depth": 0})


def test_variance_covariance_stays_fp32_under_bf16_autocast():
    # Autocast recasts `z.T @ z` to bf16 even after `.float()`; the covariance term must match fp64 to fp32 accuracy.
    g = torch.Generator().manual_seed(1)
    z = torch.randn(512, 64, generator=g, dtype=torch.float64) + 3.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        var, cov = variance_covariance(z.to(torch.bfloat16).float())
    assert cov.dtype == torch.float32 and var.dtype == torch.float32
    exact_var, exact_cov = variance_covariance(z.to(torch.bfloat16).double())   # same inputs, fp64 arithmetic
    assert abs(cov.item() - exact_cov.item()) / exact_cov.item() < 1e-4
    assert abs(var.item() - exact_var.item()) < 1e-5


def test_loader_workers_share_the_node_cores_between_local_processes(monkeypatch):
    from radjepa_cli.pretrain.train import workers_per_process
    assert workers_per_process(16, 8) == 2           # the 8-GPU, 16-core node
    assert workers_per_process(16, 1) == 16
    assert workers_per_process(2, 4) == 1            # never zero: 0 would decode in the training process
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert workers_per_process(16) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")    # srun: a task per GPU, 2 cores each, already its share
    monkeypatch.setenv("SLURM_TASKS_PER_NODE", "8(x2)")
    assert workers_per_process() == 2
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")   # one task running torchrun for the node's 8 GPUs
    monkeypatch.setenv("SLURM_TASKS_PER_NODE", "1")
    assert workers_per_process() == 2
