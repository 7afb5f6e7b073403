"""benchmarks/device_check.py: its CPU mode runs (so the GPU check cannot rot), a failed, hung or crashed part is
recorded while the others still run, and the parts see the device machine's import situation."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("device_check", ROOT / "benchmarks" / "device_check.py")
dc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dc)


def test_parts_import_this_tree_and_not_the_packages_the_device_lacks(tmp_path):
    env = dc.part_env(tmp_path / "work", cpu=True)
    code = ("import radjepa_kernels, importlib\n"
            "print(radjepa_kernels.__file__)\n"
            "for name in ('webdataset', 'pydicom', 'rouge_score.rouge_scorer', 'gguf', 'xformers.ops'):\n"
            "    try:\n"
            "        importlib.import_module(name); print('IMPORTED', name)\n"
            "    except ImportError:\n"
            "        print('blocked', name)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert Path(out[0]).resolve() == (ROOT / "kernels" / "__init__.py").resolve()
    assert out[1:] == [f"blocked {n}" for n in ("webdataset", "pydicom", "rouge_score.rouge_scorer", "gguf",
                                                "xformers.ops")]


def test_failed_hung_and_usage_error_parts_are_recorded_and_the_rest_still_run(tmp_path, monkeypatch):
    py = sys.executable
    cmds = {"kernel_check": [[py, "-c", "raise SystemExit(3)"]],
            "pretrain_step": [[py, "-c", "import time; time.sleep(30)"]],
            "loader": [[py, "-c", "raise SystemExit(2)"]],                     # argparse rejected our flags
            "generate": [[py, "-c", "print('fine')"]]}
    monkeypatch.setattr(dc, "part_commands", lambda name, *a: cmds[name])
    monkeypatch.setattr(dc, "make_shards", lambda *a: 0)
    monkeypatch.setitem(dc.BUDGETS, "pretrain_step", (6, 6))
    rc = dc.main(["--cpu", "--out", str(tmp_path), "--parts", "kernel_check,pretrain_step,loader,generate"])
    assert rc == 1
    parts = {r["part"]: r for r in json.loads((tmp_path / "device_check.json").read_text())["parts"]}
    assert parts["kernel_check"]["status"] == "failed" and parts["kernel_check"]["rc"] == 3
    assert parts["pretrain_step"]["status"] == "failed" and "budget" in parts["pretrain_step"]["why"]
    assert parts["pretrain_step"]["seconds"] < 20
    assert parts["loader"]["status"] == "skipped" and parts["generate"]["status"] == "ok"
    assert "FAILED: kernel_check, pretrain_step" in (tmp_path / "SUMMARY.md").read_text()


def test_unknown_part_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        dc.main(["--cpu", "--out", str(tmp_path), "--parts", "kernel_check,warp_drive"])
    assert e.value.code == 2


def test_cpu_mode_pretrains_and_generates_through_the_real_commands(tmp_path):
    # The fast subset of the CPU mode (~20 s): phantom shards, `pretrain` through the launcher, generation.
    rc = dc.main(["--cpu", "--out", str(tmp_path), "--parts", "phantom_pretrain,generate"])
    parts = {r["part"]: r for r in json.loads((tmp_path / "device_check.json").read_text())["parts"]}
    assert rc == 0, (tmp_path / "phantom_pretrain.log").read_text()[-2000:]
    fig = parts["phantom_pretrain"]["figures"]
    assert fig["complete"] and fig["steps"] == 6 and fig["last_loss"] == fig["last_loss"]   # finite, not NaN
    assert parts["generate"]["figures"]["b1"] > 0


@pytest.mark.slow
def test_cpu_mode_runs_every_part(tmp_path):
    rc = dc.main(["--cpu", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert rc == 0, (tmp_path / "SUMMARY.md").read_text()
    assert [r["part"] for r in report["parts"]] == list(dc.BUDGETS)
    assert all(r["status"] == "ok" for r in report["parts"])
    steps = report["parts"][2]["figures"]
    assert steps["triton"]["loss_rel_err"] <= 1e-3                      # the interpreted kernels train the same model
    assert report["meta"]["seconds"] < report["meta"]["total_budget_s"]


def test_kernel_benchmark_exits_1_when_the_budget_cuts_shapes(tmp_path):
    # A partial table must not pass for a complete one.
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernels.py"), "--device", "cpu", "--skip",
                          "check,ema,gather", "--budget-s", "0", "--out", str(tmp_path)],
                         env=dc.part_env(tmp_path / "work", cpu=True), capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    cut = json.loads((tmp_path / "kernels.json").read_text())["meta"]["budget_cut"]
    assert {"attn B16 H3 N50 d32 kpm", "attn B16 H3 N50 d32 varlen", "attn B16 H3 N50 d128 dense"} <= set(cut)
