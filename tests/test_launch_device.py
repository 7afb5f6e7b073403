"""Which CUDA device each training process binds, and what `--device auto|cuda|cpu` resolves to, with the
environment and torch.cuda monkeypatched (no GPU needed)."""
import warnings

import pytest
import torch

from radjepa_cli.pretrain import launch
from radjepa_cli.pretrain.launch import LaunchOptions, cuda_device_index, external_launch, resolve_device


def _gpus(monkeypatch, n: int):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


# ------------------------------------------------------------------------------------------ cuda_device_index
def test_torchrun_with_every_gpu_visible_uses_the_local_rank(monkeypatch):
    _gpus(monkeypatch, 8)
    assert cuda_device_index({"RANK": "13", "WORLD_SIZE": "16", "LOCAL_RANK": "5"}) == 5


def test_srun_one_gpu_per_task_uses_ordinal_zero_whatever_the_local_id(monkeypatch):
    # srun --gpus-per-task=1: SLURM_LOCALID 3 becomes LOCAL_RANK 3 but the task sees only its own GPU (ordinal 0);
    # set_device(3) would fail with "invalid device ordinal".
    _gpus(monkeypatch, 1)
    env = {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "3", "SLURM_JOB_NODELIST": "gpu[001]",
           "CUDA_VISIBLE_DEVICES": "3"}
    ext = external_launch(env)
    assert ext["LOCAL_RANK"] == "3"
    assert cuda_device_index({**env, **ext}) == 0


def test_srun_with_all_gpus_visible_uses_the_slurm_local_id(monkeypatch):
    _gpus(monkeypatch, 4)
    env = {"SLURM_NTASKS": "8", "SLURM_PROCID": "6", "SLURM_LOCALID": "2", "SLURM_JOB_NODELIST": "gpu[001-002]"}
    assert cuda_device_index({**env, **external_launch(env)}) == 2
    assert cuda_device_index({"SLURM_LOCALID": "1"}) == 1          # LOCAL_RANK absent: SLURM_LOCALID


def test_cuda_visible_devices_subset_maps_to_relative_ordinals(monkeypatch):
    # CUDA_VISIBLE_DEVICES=4,5: torch sees 2 devices, ordinals 0 and 1 (never the physical 4/5).
    _gpus(monkeypatch, 2)
    env = {"CUDA_VISIBLE_DEVICES": "4,5", "LOCAL_RANK": "1"}
    assert cuda_device_index(env) == 1


def test_more_local_ranks_than_visible_gpus_is_a_clear_error(monkeypatch):
    _gpus(monkeypatch, 2)
    with pytest.raises(RuntimeError, match=r"local rank 3 but only 2 GPU\(s\) visible.*gpus-per-task"):
        cuda_device_index({"LOCAL_RANK": "3", "CUDA_VISIBLE_DEVICES": "0,1"})
    _gpus(monkeypatch, 0)
    with pytest.raises(RuntimeError, match="none is visible"):
        cuda_device_index({"LOCAL_RANK": "0"})


def test_worker_binds_the_mapped_device_before_training(monkeypatch):
    _gpus(monkeypatch, 1)
    bound, seen = [], []
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: bound.append(i))
    monkeypatch.setattr(launch, "train", lambda cfg, info: seen.append(info) or {"ok": True})
    monkeypatch.setattr(launch.config_mod, "from_dict", lambda cls, d: d)
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "3"}.items():
        monkeypatch.setenv(k, v)
    assert launch._worker({}, "cuda") == {"ok": True}
    assert bound == [0] and seen[0].cuda_index == 0 and seen[0].local_rank == 3


# ------------------------------------------------------------------------------------------ resolve_device
def _cuda(monkeypatch, *, compiled=True, available=True, warning=None, nvidia=False):
    monkeypatch.setattr(torch.version, "cuda", "13.0" if compiled else None)

    def is_available():
        if warning:
            warnings.warn(warning)
        return available
    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.setattr(launch, "_nvidia_present", lambda: nvidia)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_auto_uses_cuda_when_it_works_and_cpu_on_a_machine_without_gpus(monkeypatch):
    _cuda(monkeypatch, available=True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("auto", procs=2) == "cpu"
    _cuda(monkeypatch, compiled=False, available=False)
    assert resolve_device("auto") == "cpu"


def test_driver_too_old_is_an_error_not_a_silent_cpu_fallback(monkeypatch):
    _cuda(monkeypatch, available=False, nvidia=True,
          warning="CUDA initialization: The NVIDIA driver on your system is too old (found version 12020).")
    with pytest.raises(RuntimeError, match="driver on your system is too old.*--device cpu"):
        resolve_device("auto")
    with pytest.raises(RuntimeError, match="--device cuda needs CUDA.*too old"):
        resolve_device("cuda")
    with pytest.raises(RuntimeError, match="--gpus 2 needs CUDA"):
        resolve_device("auto", gpus=2)
    assert resolve_device("cpu") == "cpu"                           # the explicit way out


def test_cuda_requested_on_a_cpu_only_torch_names_the_build(monkeypatch):
    _cuda(monkeypatch, compiled=False, available=False)
    with pytest.raises(RuntimeError, match="CPU-only build"):
        resolve_device("cuda")
    _cuda(monkeypatch, available=False, nvidia=True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(RuntimeError, match="hides every GPU"):
        resolve_device("auto")


def test_device_option_is_validated():
    with pytest.raises(ValueError, match="--device must be one of"):
        LaunchOptions(device="gpu").validate()
    with pytest.raises(ValueError, match="--procs"):
        LaunchOptions(gpus=2, device="cpu").validate()


def test_pretrain_cli_reports_unusable_cuda_as_an_error(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from radjepa_cli.cli import app
    _cuda(monkeypatch, available=False, nvidia=True, warning="The NVIDIA driver on your system is too old")
    res = CliRunner().invoke(app, ["pretrain", str(tmp_path), "--out", str(tmp_path / "run"), "--steps", "1",
                                   "--device", "cuda"])
    assert res.exit_code == 1
    assert "needs CUDA" in res.output and "too old" in res.output


def test_benchmark_device_cuda_1_becomes_the_current_device(monkeypatch):
    # Triton launches on the current device: `--device cuda:1` must bind 1, not leave kernels on device 0.
    from radjepa_cli.pretrain.launch import bind_cuda_device
    _gpus(monkeypatch, 2)
    bound = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: bound.append(i))
    assert bind_cuda_device("cuda:1") == torch.device("cuda", 1) and bound == [1]
    assert bind_cuda_device("cuda") == torch.device("cuda", 0) and bound == [1, 0]
    with pytest.raises(RuntimeError, match="CUDA device 2 requested but only 2 visible"):
        bind_cuda_device("cuda:2")
