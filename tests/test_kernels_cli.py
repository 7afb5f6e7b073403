"""`--kernels` on every command that runs an encoder or LM, and `doctor` running the kernels' self-check."""
import pytest
import torch
from typer.testing import CliRunner

import radjepa_kernels as K
from radjepa_cli import doctor
from radjepa_cli.cli import app
from radjepa_kernels import check as S


@pytest.mark.parametrize("command", ["probe", "segment", "train-report", "generate-report", "pretrain"])
def test_kernels_flag_on_every_model_command(command):
    res = CliRunner().invoke(app, [command, "--help"])
    assert res.exit_code == 0 and "--kernels" in res.output


def test_kernels_flag_sets_backend_and_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RADJEPA_KERNELS", "auto")
    try:
        res = CliRunner().invoke(app, ["probe", str(tmp_path / "none"), "--encoder", "random:vit_tiny",
                                       "--out", str(tmp_path / "o"), "--kernels", "EAGER"])
        assert res.exit_code != 0  # no shards there; the flag was applied before the command ran
        assert K.get_backend() == "eager"
        import os
        assert os.environ["RADJEPA_KERNELS"] == "eager"  # launched worker processes inherit it
        res = CliRunner().invoke(app, ["generate-report", "x.png", "--kernels", "fast"])
        assert res.exit_code == 2 and "kernel backend must be one of" in res.output
    finally:
        K.set_backend(None)


def test_doctor_is_honest_without_cuda():
    text, reports = doctor.kernel_status(K, [], True)
    assert "unverified" in text and "interpreter" in text and reports == []


def test_doctor_runs_the_selfcheck_on_each_gpu_model(monkeypatch, tmp_path):
    """With a (stand-in) GPU, doctor runs the real self-check and reports a failing family."""
    from radjepa_kernels import fused_attention
    monkeypatch.setenv("RADJEPA_KERNEL_CACHE", str(tmp_path / "c.json"))
    monkeypatch.setattr(S, "device_name", lambda device: "FakeGPU")
    fams = [S.Family("attention", "fp32", 32, "dense"), S.Family("gather_tokens", "fp32", variant="nopos")]
    orig = fused_attention.attention
    monkeypatch.setattr(fused_attention, "attention", lambda *a, **kw: orig(*a, **kw) + 0.1)  # a broken kernel
    seen = []

    def fake_selfcheck(device):
        seen.append(device)
        return S.selfcheck("cpu", fams)
    monkeypatch.setattr(K, "selfcheck", fake_selfcheck)
    devices = [{"index": 0, "name": "FakeGPU"}, {"index": 1, "name": "FakeGPU"}]
    text, reports = doctor.kernel_status(K, devices, True)
    assert seen == [torch.device("cuda", 0)]  # one check per distinct model
    assert "1/2 kernel families" in text and "eager PyTorch for the failing ones" in text
    checks = reports[0]["checks"]
    assert not checks[fams[0].name]["passed"] and checks[fams[1].name]["passed"]
