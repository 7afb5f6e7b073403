"""Linear probe: learns a planted signal, masks unknown labels, writes the results.json schema."""
import json

import numpy as np
import pytest
import torch

from _downstream_shards import write_phantom_shards
from radjepa_cli.data.labels import resolve_label_set
from radjepa_cli.downstream.probe import ProbeConfig, class_metrics, masked_bce, run_probe, train_head


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_phantom_shards(tmp_path_factory.mktemp("ph"), n=24, size=48)


def _cfg(**kw):
    base = dict(shards="", encoder="", out="", epochs=30, lr=1e-2, batch_size=16, device="cpu", progress=False)
    return ProbeConfig(**{**base, **kw})


def test_head_learns_planted_signal_and_not_noise():
    g = torch.Generator().manual_seed(0)
    n, d = 400, 32
    y = (torch.rand(n, 2, generator=g) < 0.3).float()
    x = torch.randn(n, d, generator=g)
    x[:, 0] += 2.5 * y[:, 0]  # label 0 is linearly decodable, label 1 is not
    known = torch.ones(n, 2, dtype=torch.bool)
    head = train_head(x[:300], y[:300], known[:300], _cfg(), seed=0, device=torch.device("cpu"))
    with torch.no_grad():
        s = torch.sigmoid(head(x[300:])).numpy()
    m = class_metrics(s, y[300:].numpy(), known[300:].numpy(), ["signal", "noise"])
    assert m["signal"]["auroc"] > 0.9 and m["signal"]["auprc"] > 0.7
    assert abs(m["noise"]["auroc"] - 0.5) < 0.15


def test_unknown_labels_are_masked():
    logits = torch.zeros(4, 2, requires_grad=True)
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    known = torch.tensor([[True, False], [True, False], [True, False], [True, False]])
    masked_bce(logits, target, known).backward()
    assert torch.all(logits.grad[:, 1] == 0) and torch.all(logits.grad[:, 0] != 0)
    m = class_metrics(np.array([[0.9, 0.1], [0.2, 0.5]]), np.array([[1.0, 0], [0, 0]]),
                      np.array([[True, True], [True, False]]), ["a", "b"])
    assert m["a"]["auroc"] == 1.0 and m["b"]["auroc"] is None  # one outcome only: undefined, not 0.5


def test_probe_end_to_end_schema(shards, tmp_path):
    out = tmp_path / "probe"
    r = run_probe(_cfg(shards=str(shards), encoder="pixels:16", out=str(out), seeds=2, epochs=5,
                       cache_dir=str(tmp_path / "cache")))
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(r))
    assert {"kind", "encoder", "label_set", "labels", "dataset", "seeds", "per_class", "aggregate", "per_seed",
            "config"} <= set(r)
    assert r["kind"] == "probe" and r["seeds"] == [0, 1] and r["dataset"] == "synthetic" and r["labels"]
    for name in r["labels"]:
        c = r["per_class"][name]
        assert set(c) == {"auprc_mean", "auprc_std", "auroc_mean", "auroc_std", "n_pos"}
        assert all(0 <= c[k] <= 1 for k in ("auprc_mean", "auprc_std", "auroc_mean", "auroc_std")) and c["n_pos"] > 0
    agg = r["aggregate"]
    assert agg["auprc_mean"] == pytest.approx(np.mean([s["aggregate_auprc"] for s in r["per_seed"]]))
    # every label of the set is either evaluated or reported as skipped, never silently dropped
    assert r["config"]["labels"] == "phantom"
    assert set(r["labels"]) | set(r["skipped_labels"]) == set(resolve_label_set("phantom"))
    assert not set(r["labels"]) & set(r["skipped_labels"])
    assert (out / "pr_curves.png").stat().st_size > 1000 and (out / "config.json").is_file()
    # the second run reads the cache
    r2 = run_probe(_cfg(shards=str(shards), encoder="pixels:16", out=str(tmp_path / "p2"), seeds=1, epochs=1,
                        cache_dir=str(tmp_path / "cache"), plots=False))
    assert r2["timing_s"]["features_from_cache"]


def test_augment_mode_runs_and_patient_leak_is_refused(shards, tmp_path):
    r = run_probe(_cfg(shards=str(shards), encoder="pixels:16", out=str(tmp_path / "aug"), seeds=1, epochs=2,
                       augment=True, use_cache=False, plots=False))
    assert r["config"]["augment"] and r["aggregate"]["auprc_mean"] is not None
    with pytest.raises(ValueError, match="both train and train"):
        run_probe(_cfg(shards=str(shards), encoder="pixels:16", out=str(tmp_path / "leak"), eval_split="train",
                       use_cache=False, plots=False))
    with pytest.raises(ValueError, match="none of the labels"):
        run_probe(_cfg(shards=str(shards), encoder="pixels:16", out=str(tmp_path / "x"), labels="Nonexistent",
                       use_cache=False, plots=False))
