"""The attentive probe head (issue 15): it reads what average pooling destroys, runs end to end through the token
cache, saves a head `radjepa predict` rebuilds, and `--baselines` adds labelled random-init / pixels rows."""
import json

import numpy as np
import pytest
import torch

from _downstream_shards import write_phantom_shards
from radjepa_cli.downstream.attentive import AttentivePoolHead
from radjepa_cli.downstream.predict import PredictConfig, run_predict
from radjepa_cli.downstream.probe import ProbeConfig, class_metrics, run_probe, train_head


def _cfg(**kw):
    base = dict(shards="", encoder="", out="", epochs=60, lr=1e-2, batch_size=32, device="cpu", progress=False)
    return ProbeConfig(**{**base, **kw})


def _conjunction_tokens(n, seed, t=12, d=8):
    """Every sample has a +4 on channel 0 in one token and a +4 on channel 1 in one token; positives have both in
    the SAME token. The token mean has the same distribution in both classes: a linear probe on it is at chance."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, t, d, generator=g)
    y = (torch.rand(n, generator=g) < 0.5).float()
    for i in range(n):
        a, b = torch.randperm(t, generator=g)[:2].tolist()
        x[i, a, 0] += 4.0
        x[i, a if y[i] else b, 1] += 4.0
    return x, y[:, None]


def test_attentive_head_reads_what_mean_pooling_destroys():
    x, y = _conjunction_tokens(600, 0)
    known = torch.ones_like(y, dtype=torch.bool)
    dev = torch.device("cpu")
    att = train_head(x[:400], y[:400], known[:400], _cfg(head="attentive", queries=2), seed=0, device=dev)
    lin = train_head(x[:400].mean(1), y[:400], known[:400], _cfg(), seed=0, device=dev)
    with torch.no_grad():
        s_att = torch.sigmoid(att(x[400:])).numpy()
        s_lin = torch.sigmoid(lin(x[400:].mean(1))).numpy()
    auroc = {k: class_metrics(s, y[400:].numpy(), known[400:].numpy(), ["c"])["c"]["auroc"]
             for k, s in (("attentive", s_att), ("linear", s_lin))}
    assert auroc["attentive"] > 0.9 and abs(auroc["linear"] - 0.5) < 0.15, auroc


def test_attention_weights_are_a_distribution_and_shapes_are_checked():
    head = AttentivePoolHead(8, 3, queries=2)
    a = head.attention(torch.randn(5, 7, 8))
    assert a.shape == (5, 2, 7) and torch.allclose(a.sum(-1), torch.ones(5, 2))
    assert head(torch.randn(5, 7, 8)).shape == (5, 3)
    with pytest.raises(ValueError, match="patch tokens"):
        head(torch.randn(5, 8))
    with pytest.raises(ValueError):
        AttentivePoolHead(8, 3, queries=0)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_phantom_shards(tmp_path_factory.mktemp("ph"), n=40, size=48)


def test_attentive_probe_end_to_end_and_predict_reproduces_it(shards, tmp_path):
    out = tmp_path / "att"
    r = run_probe(_cfg(shards=str(shards), encoder="pixels:16", out=str(out), seeds=2, epochs=5, head="attentive",
                       queries=3, cache_dir=str(tmp_path / "cache"), plots=False))
    assert r["head"] == "attentive" and r["aggregate"]["auprc_mean"] is not None
    model = json.loads((out / "model.json").read_text())
    assert model["head"]["kind"] == "attentive" and model["head"]["features"] == "tokens"
    assert model["head"]["config"] == {"in_dim": 64, "n_out": len(model["labels"]), "queries": 3}
    p = run_predict(PredictConfig(model=str(out), inputs=(str(shards),), out=str(tmp_path / "pred"), device="cpu",
                                  cache_dir=str(tmp_path / "cache"), progress=False))
    (m,) = p["metrics"]
    assert m["aggregate"] == r["aggregate"] and m["per_class"] == r["per_class"]   # exact, from the saved heads
    # the linear head on the same encoder reads another cache entry (pooled, not tokens)
    lin = run_probe(_cfg(shards=str(shards), encoder="pixels:16", out=str(tmp_path / "lin"), seeds=2, epochs=5,
                         cache_dir=str(tmp_path / "cache"), plots=False))
    assert lin["head"] == "linear" and lin["aggregate"] != r["aggregate"]
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 2 * len({"train", "test", "val"})


def test_probe_baselines_are_labelled(shards, tmp_path):
    from radjepa_cli.downstream.probe_baselines import baseline_specs, run_baselines
    assert baseline_specs("dinov2:/x") == {"pixels": "pixels:32"}
    assert baseline_specs("runs/x") == {"random-init": "random:runs/x@0", "pixels": "pixels:32"}
    res = run_baselines(_cfg(shards=str(shards), encoder="random:vit_tiny:16/4", out=str(tmp_path / "p"), seeds=1,
                             epochs=2, image_size=16, cache_dir=str(tmp_path / "cache"), plots=False))
    assert set(res) == {"pixels"}   # a zoo spec has no random twin; pixels always
    on_disk = json.loads((tmp_path / "p" / "baselines" / "pixels" / "results.json").read_text())
    assert on_disk["baseline"] == "pixels" and on_disk["encoder"] == "pixels:32"
    assert np.isfinite(on_disk["aggregate"]["auprc_mean"])
