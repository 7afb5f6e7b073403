"""`radjepa pretrain` as users run it: kill -9 mid-run then --resume; two gloo processes; export; bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pretrain_helpers import make_tiny_shards
from radjepa_cli.pretrain import run_state

TINY = ["--model", "vit_tiny", "--image-size", "16", "--patch-size", "4", "--pred-depth", "1", "--pred-dim", "96",
        "--min-keep", "0", "--batch-size", "8", "--num-workers", "0", "--threads", "1", "--log-every", "1"]


def radjepa(*args: str, **kw) -> list[str]:
    return [sys.executable, "-m", "radjepa_cli.cli", *args]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_tiny_shards(tmp_path_factory.mktemp("cli_shards"), n=48, size=16)


def losses(run):
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_kill_9_then_resume_completes_without_loss_spike(shards, tmp_path):
    run = tmp_path / "run"
    cmd = radjepa("pretrain", str(shards), "--out", str(run), "--steps", "40", "--ckpt-every", "5", *TINY)
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not run_state.latest_path(run).is_file():
        assert proc.poll() is None, f"pretrain exited early:\n{proc.stdout.read()}"
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(losses(run))
    assert not (run / "COMPLETE").exists() and killed_at < 40
    ck_step = run_state.load_checkpoint(run_state.latest_path(run))["step"]

    out = subprocess.run(cmd + ["--resume"], env=env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"resumed {run} at step {ck_step}" in out.stderr.replace("\n", "")
    assert (run / "COMPLETE").is_file()
    assert run_state.load_checkpoint(run_state.latest_path(run))["step"] == 40
    curve = losses(run)
    assert sorted(curve) == list(range(1, 41))                                  # every step once
    before = sorted(curve[s] for s in range(max(1, ck_step - 2), ck_step + 1))
    after = [curve[s] for s in range(ck_step + 1, ck_step + 4)]
    assert max(after) < 1.5 * before[len(before) // 2], (before, after)          # no spike after resume


@pytest.mark.slow
def test_two_gloo_processes_train_and_export(shards, tmp_path):
    run = tmp_path / "ddp"
    out = subprocess.run(radjepa("pretrain", str(shards), "--out", str(run), "--procs", "2", "--steps", "4",
                                 "--ckpt-every", "2", *TINY), env=env(), capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout + out.stderr
    ck = run_state.load_checkpoint(run_state.latest_path(run))
    assert ck["world_size"] == 2 and ck["step"] == 4 and len(ck["rng"]) == 2
    assert sorted(losses(run)) == [1, 2, 3, 4]
    exp = subprocess.run(radjepa("export", str(run), "--out", str(tmp_path / "st"), "--format", "safetensors"),
                         env=env(), capture_output=True, text=True, timeout=300)
    assert exp.returncode == 0, exp.stdout + exp.stderr
    assert (tmp_path / "st" / "model.safetensors").is_file()


def test_bad_input_gives_a_clear_error(tmp_path):
    from typer.testing import CliRunner

    from radjepa_cli.cli import app
    runner = CliRunner()
    out = runner.invoke(app, ["pretrain", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), "--steps", "2",
                              *TINY])
    assert out.exit_code == 1 and "nope" in out.output and "does not exist" in out.output
    both = runner.invoke(app, ["pretrain", str(tmp_path), "--out", str(tmp_path / "r"), "--steps", "2",
                               "--epochs", "1"])
    assert both.exit_code == 1 and "exactly one of steps or epochs" in both.output
    toml = tmp_path / "bad.toml"
    toml.write_text('lrr = 0.1\n')
    typo = runner.invoke(app, ["pretrain", str(tmp_path), "--out", str(tmp_path / "r"), "--config", str(toml)])
    assert typo.exit_code == 1 and "lrr" in typo.output
