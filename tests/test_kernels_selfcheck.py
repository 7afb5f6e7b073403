"""`--kernels auto`: a Triton kernel is used on a device only after its family passed the self-check there.

The CPU stands in for a GPU (the interpreter runs the kernels on CPU tensors): `_on_gpu` is patched to say yes and
the device name is patched to a fake model, so the dispatch logic, the cache and the fallback are exercised for real.
"""
import json
import warnings

import pytest
import torch

import radjepa_kernels as K
from radjepa_kernels import check as S
from radjepa_kernels import fused_attention, reference

FAM = S.Family("attention", "fp32", 32, "kpm")


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("RADJEPA_KERNEL_CACHE", str(tmp_path / "selfcheck.json"))
    monkeypatch.delenv("RADJEPA_KERNELS", raising=False)
    monkeypatch.setattr(K, "_on_gpu", lambda t: True)
    monkeypatch.setattr(S, "device_name", lambda device: "FakeGPU 80GB")
    monkeypatch.setattr(K, "_VERDICTS", {})
    K.set_backend(None)
    yield tmp_path / "selfcheck.json"
    K.set_backend(None)


def _count_calls(monkeypatch, mod, name, wrong: bool = False):
    calls = []
    fn = getattr(mod, name)

    def wrapped(*a, **kw):
        calls.append(1)
        out = fn(*a, **kw)
        return out * 1.05 if wrong else out
    monkeypatch.setattr(mod, name, wrapped)
    return calls


def _inputs():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 9, 32, generator=gen) for _ in range(3))
    kpm = torch.ones(2, 9, dtype=torch.bool)
    kpm[1, 5:] = False
    return q, k, v, kpm


def test_passing_check_sends_auto_through_triton_and_is_cached(fake_gpu, monkeypatch):
    calls = _count_calls(monkeypatch, fused_attention, "attention")
    q, k, v, kpm = _inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a passing check warns nothing
        out = K.attention(q, k, v, kpm)
    # one call by the self-check, one by the dispatch itself
    assert len(calls) == 2
    torch.testing.assert_close(out, reference.attention(q, k, v, kpm), rtol=1e-5, atol=1e-5)
    cache = json.loads(fake_gpu.read_text())
    (key, rows), = cache.items()
    assert key.startswith("FakeGPU 80GB | torch ") and "triton" in key
    row = rows[FAM.name]
    assert row["passed"] and row["max_rel_err"] <= row["tol"] and row["dtype"] == "fp32"
    # A second process (fresh in-memory verdicts) reads the file and does not re-run the check.
    monkeypatch.setattr(K, "_VERDICTS", {})
    monkeypatch.setattr(S, "check_family", lambda fam, device: pytest.fail("cache hit must skip the check"))
    K.attention(q, k, v, kpm)
    assert len(calls) == 3
    report = K.selfcheck("cpu", [FAM])
    assert report["checks"][FAM.name]["cached"] and report["ops"] == {"attention": True} and report["passed"]


def test_failing_check_falls_back_to_eager_with_one_warning(fake_gpu, monkeypatch):
    calls = _count_calls(monkeypatch, fused_attention, "attention", wrong=True)  # an injected wrong kernel
    q, k, v, kpm = _inputs()
    with pytest.warns(RuntimeWarning, match=r"attention\[fp32,d32,kpm\].*self-check failed: max rel err") as rec:
        out = K.attention(q, k, v, kpm)
        out2 = K.attention(q, k, v, kpm)
    assert len([w for w in rec if "radjepa_kernels" in str(w.message)]) == 1
    assert len(calls) == 1  # only the self-check ran the kernel
    ref = reference.attention(q, k, v, kpm)
    assert torch.equal(out, ref) and torch.equal(out2, ref)
    row = json.loads(fake_gpu.read_text()).popitem()[1][FAM.name]
    assert not row["passed"] and row["max_rel_err"] > row["tol"]
    # forcing the backend skips the check and runs the (wrong) kernel: the user asked for it
    K.set_backend("triton")
    assert not torch.equal(K.attention(q, k, v, kpm), ref)


def test_kernel_that_raises_fails_its_check(fake_gpu, monkeypatch):
    def broken(*a, **kw):
        raise RuntimeError("invalid device ordinal")
    monkeypatch.setattr(fused_attention, "attention", broken)
    row = S.selfcheck("cpu", [FAM])["checks"][FAM.name]
    assert row["passed"] is False and "invalid device ordinal" in row["error"]


def test_cpu_tensors_stay_eager_under_auto(monkeypatch):
    monkeypatch.delenv("RADJEPA_KERNELS", raising=False)
    K.set_backend(None)
    monkeypatch.setattr(K, "_proven", lambda *a: pytest.fail("no self-check for CPU tensors"))
    q, k, v, kpm = _inputs()
    assert not K.use_triton(q, S.Family("attention", "fp32", 32, "kpm"))
    assert torch.equal(K.attention(q, k, v, kpm), reference.attention(q, k, v, kpm))


def test_env_var_picks_the_backend(monkeypatch):
    K.set_backend(None)
    monkeypatch.setenv("RADJEPA_KERNELS", "eager")
    assert K.get_backend() == "eager"
    monkeypatch.setenv("RADJEPA_KERNELS", "Triton")
    assert K.get_backend() == "triton"
    K.set_backend("eager")  # an explicit --kernels wins over the environment
    assert K.get_backend() == "eager"
    K.set_backend(None)
    monkeypatch.setenv("RADJEPA_KERNELS", "fast")
    with pytest.raises(ValueError, match="RADJEPA_KERNELS='fast'"):
        K.get_backend()


def test_every_default_family_has_a_check_and_a_unique_name():
    fams = S.default_families()
    assert len({f.name for f in fams}) == len(fams)
    assert {f.op for f in fams} == set(S.OPS)
    assert {f.head_dim for f in fams if f.op == "attention"} == set(S.PRESET_HEAD_DIMS)


@pytest.mark.parametrize("fam", [S.Family("gather_tokens", "bf16", variant="nopos"),
                                 S.Family("attention_varlen", "bf16", 24), S.Family("ema_update_", "bf16")],
                         ids=lambda f: f.name)
def test_other_families_pass_under_the_interpreter(fam, fake_gpu):
    row = S.selfcheck("cpu", [fam])["checks"][fam.name]
    assert row["passed"], row
    assert row["shapes"] and 0 <= row["max_rel_err"] <= row["tol"]


def test_command_line_prints_the_report_and_fails_on_a_failure(fake_gpu, monkeypatch, capsys):
    fam = S.Family("ema_update_", "fp32")
    monkeypatch.setattr(S, "default_families", lambda: [fam])
    assert S.main(["--device", "cpu", "--no-cache"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checks"][fam.name]["passed"] and report["device"] == "FakeGPU 80GB"
    from radjepa_kernels import ema
    monkeypatch.setattr(ema, "ema_update_", lambda t, o, m: None)  # a kernel that does nothing
    assert S.main(["--device", "cpu", "--no-cache"]) == 1
