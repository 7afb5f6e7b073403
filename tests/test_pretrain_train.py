"""The training loop in-process on tiny shards: it learns, writes the run contract, resumes exactly, stops on NaN."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pretrain_helpers import make_tiny_shards
from radjepa_cli.pretrain import run_state
from radjepa_cli.pretrain.masks import MaskConfig
from radjepa_cli.pretrain.monitors import NonFiniteLossError
from radjepa_cli.pretrain.schedules import Schedules
from radjepa_cli.pretrain.train import DistInfo, PretrainConfig, default_loader_factory, resolve_config, train


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_tiny_shards(tmp_path_factory.mktemp("shards"), n=48, size=32)


def cfg_for(shards, out, **kw):
    # 16 px / patch 4 = 16 tokens, 1 thread: a few hundred ms per step even on a busy machine
    base = dict(shards=str(shards), out=str(out), model="vit_tiny", image_size=16, patch_size=4, pred_depth=1,
                pred_dim=96, steps=8, batch_size=8, num_workers=0, log_every=2, monitor_every=4, ckpt_every=4,
                seed=3, masks=MaskConfig(min_keep=0), tensorboard=False, threads=1)
    base.update(kw)
    return PretrainConfig(**base)


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


class Interrupt(Exception):
    pass


def counting_factory(cfg, stop_after=None, poison_from=None):
    """The real loader, wrapped to count batches, raise after `stop_after` batches, or NaN-poison later ones."""
    inner = default_loader_factory(cfg, DistInfo(), (cfg.image_size // cfg.patch_size,) * 2)
    seen = {"n": 0}

    def for_epoch(epoch):
        for batch, me, mp in inner(epoch):
            seen["n"] += 1
            if stop_after is not None and seen["n"] > stop_after:
                raise Interrupt
            if poison_from is not None and seen["n"] >= poison_from:
                batch["image"] = torch.full(batch["image"].shape, float("nan"))   # float: uint8 has no NaN
            yield batch, me, mp
    return for_epoch, seen


def test_train_learns_and_writes_the_run_contract(shards, tmp_path):
    cfg = cfg_for(shards, tmp_path / "run", steps=16, tensorboard=True)
    summary = train(cfg)
    run = tmp_path / "run"
    m = metrics(run)
    assert [r["step"] for r in m] == list(range(2, 17, 2))
    for key in ("step", "epoch", "loss", "lr", "wd", "momentum", "images_per_s"):
        assert key in m[0]
    assert "rankme" in m[1] and "target_std" in m[1]                   # monitors every 4 steps
    assert m[-1]["loss"] < 0.5 * m[0]["loss"]                          # it learns
    assert summary["steps"] == 16 and (run / "COMPLETE").is_file()
    assert json.loads((run / "config.json").read_text())["model"] == "vit_tiny"
    assert (run / "encoder_config.json").is_file() and list((run / "tb").glob("events.*"))
    ck = run_state.load_checkpoint(run_state.latest_path(run))
    assert ck["step"] == 16 and (run / "checkpoints" / "step_0000016.pt").is_file()
    assert not list((run / "checkpoints").glob(".*.tmp"))
    # a second start into the same folder must not silently overwrite it
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg_for(shards, run, steps=16))


def test_resume_after_interruption_is_exact(shards, tmp_path):
    straight = cfg_for(shards, tmp_path / "a")
    train(straight)
    cfg = cfg_for(shards, tmp_path / "b")
    factory, _ = counting_factory(cfg, stop_after=6)                  # dies after the step-4 checkpoint
    with pytest.raises(Interrupt):
        train(cfg, loader_factory=factory)
    assert run_state.load_checkpoint(run_state.latest_path(tmp_path / "b"))["step"] == 4
    assert not (tmp_path / "b" / "COMPLETE").exists()
    resumed = resolve_config(None, {"out": str(tmp_path / "b"), "resume": True})   # `--resume` alone suffices
    assert resumed.steps == 8 and resumed.seed == 3
    train(resumed)
    a = run_state.load_checkpoint(run_state.latest_path(tmp_path / "a"))
    b = run_state.load_checkpoint(run_state.latest_path(tmp_path / "b"))
    for part in ("encoder", "predictor", "target_encoder"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    assert [r["step"] for r in metrics(tmp_path / "b")] == [2, 4, 6, 8]  # no duplicated steps
    assert [r["loss"] for r in metrics(tmp_path / "b")] == pytest.approx([r["loss"] for r in metrics(tmp_path / "a")])


def test_resume_refuses_a_changed_experiment(shards, tmp_path):
    cfg = cfg_for(shards, tmp_path / "r", steps=4)
    train(cfg)
    with pytest.raises(ValueError, match="lr"):
        resolve_config(None, {"out": str(tmp_path / "r"), "resume": True, "lr": 5e-4})
    again = resolve_config(None, {"out": str(tmp_path / "r"), "resume": True, "num_workers": 1})
    assert again.num_workers == 1
    assert train(again)["already_complete"]                           # nothing to do, nothing rewritten


def test_nan_loss_stops_and_keeps_last_good_checkpoint(shards, tmp_path):
    cfg = cfg_for(shards, tmp_path / "n")
    factory, _ = counting_factory(cfg, poison_from=6)
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        train(cfg, loader_factory=factory)
    run = tmp_path / "n"
    assert run_state.load_checkpoint(run_state.latest_path(run))["step"] == 4
    good = run_state.load_checkpoint(run_state.latest_path(run))
    assert all(torch.isfinite(v).all() for v in good["encoder"].values())
    assert "NaN" in json.loads((run / "FAILED.json").read_text())["reason"]
    assert not (run / "COMPLETE").exists()


def test_grad_accumulation_steps_schedules_once_per_optimizer_step(shards, tmp_path):
    cfg = cfg_for(shards, tmp_path / "g", steps=4, grad_accum=2, log_every=1, batch_size=4, warmup_steps=1)
    factory, seen = counting_factory(cfg)
    train(cfg, loader_factory=factory)
    assert seen["n"] == 8                                             # 4 steps × 2 micro-batches
    sched = Schedules(total_steps=4, warmup_steps=1)
    m = metrics(tmp_path / "g")
    assert [r["momentum"] for r in m] == pytest.approx([sched.momentum_at(s) for s in range(4)])
    assert [r["lr"] for r in m] == pytest.approx([sched.lr_at(s) for s in range(4)])


def test_two_ranks_see_disjoint_data(shards):
    cfg = cfg_for(shards, "unused")
    keys = []
    for rank in range(2):
        f = default_loader_factory(cfg, DistInfo(rank=rank, world_size=2), (4, 4))
        keys.append({k for batch, _, _ in f(0) for k in batch["key"]})
    assert keys[0] and keys[1] and not keys[0] & keys[1]
    assert len(keys[0]) == len(keys[1]) == 24                          # 48 samples, batch 8, per rank 3 batches


def test_grad_accumulation_carries_over_epoch_ends(shards, tmp_path):
    # 48 samples, batch 9: 5 batches an epoch, so with grad_accum 2 the third step spans epochs 0 and 1. Every
    # batch pulled must train: 5 steps consume exactly 10 batches, the last being epoch 1's fifth. (The old loop
    # dropped epoch 0's fifth and epoch 1's first batch, pulling 14.)
    cfg = cfg_for(shards, tmp_path / "x", steps=5, grad_accum=2, batch_size=9, log_every=1, ckpt_every=3)
    factory, seen = counting_factory(cfg)
    train(cfg, loader_factory=factory)
    assert seen["n"] == 10
    ck = run_state.load_checkpoint(run_state.latest_path(tmp_path / "x"))
    assert (ck["epoch"], ck["batch_in_epoch"]) == (1, 5)


def test_micro_batches_group_across_epochs():
    from radjepa_cli.pretrain.batches import batch_stream, micro_batches
    groups = micro_batches(batch_stream(lambda e: [f"e{e}b{i}" for i in range(1, 6)]), 2)
    got = [[(e, p) for e, p, _ in next(groups)] for _ in range(4)]
    assert got == [[(0, 1), (0, 2)], [(0, 3), (0, 4)], [(0, 5), (1, 1)], [(1, 2), (1, 3)]]


def test_uint8_batches_normalise_exactly_as_the_float_ones():
    # The loader now sends uint8; /255 on the device must give the very floats the float loader gave (u8 / 255 in
    # fp32), so (x − mean) / std is unchanged — ×(1/255) would differ in the last bit for some levels.
    from radjepa_cli.pretrain.train import _to_device
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    masks = torch.zeros(1, 1, 4, dtype=torch.long)
    got, _, _ = _to_device(({"image": levels}, masks, masks), torch.device("cpu"))
    want, _, _ = _to_device(({"image": torch.from_numpy(levels.numpy().astype(np.float32) / 255.0)}, masks, masks),
                            torch.device("cpu"))
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert got.min() == -2 and got.max() == 2                          # (0 − 0.5)/0.25 and (1 − 0.5)/0.25
