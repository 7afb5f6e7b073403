"""The online probe (issue 15): deterministic read-outs that learn a planted signal, the hook in the training loop,
and its numbers equal to the same read-out of the saved milestone checkpoint outside the loop."""
from __future__ import annotations

import json
import time
from collections import defaultdict

import numpy as np
import pytest
import torch

from _downstream_shards import write_phantom_shards
from radjepa_cli.data.loader import make_loader
from radjepa_cli.pretrain import online_probe
from radjepa_cli.pretrain.masks import MaskConfig
from radjepa_cli.pretrain.train import PretrainConfig, train


def _with_label_tallies(shards):
    """write_phantom_shards leaves the manifest's label tallies out; add them as prepare-data writes them."""
    tallies = defaultdict(lambda: defaultdict(lambda: {"positive": 0, "negative": 0}))
    for batch in make_loader(shards, split=None, batch_size=64, image_size=16):
        for m in batch["meta"]:
            for name, v in (m.get("labels") or {}).items():
                if v in (0, 1):
                    tallies[m["split"]][name]["positive" if v == 1 else "negative"] += 1
    man = json.loads((shards / "manifest.json").read_text())
    man["labels"] = tallies
    man["counts"] = {"split": {s: sum(e["samples"] for e in man["shards"] if e["split"] == s)
                               for s in ("train", "val", "test")}}
    (shards / "manifest.json").write_text(json.dumps(man))
    return shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return _with_label_tallies(write_phantom_shards(tmp_path_factory.mktemp("ph"), n=96, size=32))


def _planted(seed, n=300, d=24):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < 0.3).astype(float)
    x = rng.standard_normal((n, d))
    x[:, 0] += 2.0 * y[:, 0]     # label 0 is linearly decodable, label 1 is noise
    return x, y


def test_readout_is_deterministic_and_learns_signal_not_noise():
    x, y = _planted(0)
    known = np.ones_like(y, bool)
    args = (x[:200], y[:200], known[:200], x[200:], y[200:], known[200:], ["a", "b"])
    r1, r2 = online_probe.readout(*args), online_probe.readout(*args)
    assert r1 == r2
    s, lam = online_probe.ridge_scores(x[:200], y[:200, 0], x[200:])
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(y[200:, 0], s) > 0.85
    noise, _ = online_probe.ridge_scores(x[:200], y[:200, 1], x[200:])
    assert abs(roc_auc_score(y[200:, 1], noise) - 0.5) < 0.15
    # GCV picks a heavier penalty when the target is noise than when it is signal
    assert online_probe.ridge_scores(x[:200], y[:200, 1], x[200:])[1] > lam
    knn = online_probe.knn_scores(x[:200], y[:200], known[:200], x[200:])
    assert roc_auc_score(y[200:, 0], knn[:, 0]) > 0.75


def test_unknown_labels_are_left_out_of_ridge_and_knn():
    x, y = _planted(1)
    known = np.ones_like(y, bool)
    known[::3, 0] = False
    y_poison = y.copy()
    y_poison[~known] = 1.0      # the values behind unknown entries must not matter
    a = online_probe.readout(x[:200], y[:200], known[:200], x[200:], y[200:], known[200:], ["a", "b"])
    b = online_probe.readout(x[:200], y_poison[:200], known[:200], x[200:], y_poison[200:], known[200:], ["a", "b"])
    assert a == b


def _cfg(shards, out, **kw):
    base = dict(shards=str(shards), out=str(out), model="vit_tiny", depth=2, image_size=16, patch_size=4,
                pred_depth=1, pred_dim=96, steps=8, batch_size=8, num_workers=0, log_every=4, monitor_every=4,
                ckpt_every=4, milestone_every=4, seed=3, masks=MaskConfig(min_keep=0), tensorboard=False, threads=1)
    return PretrainConfig(**{**base, **kw})


def test_online_numbers_equal_the_offline_readout_of_the_milestone(shards, tmp_path):
    run = tmp_path / "run"
    # a fast-moving target (EMA 0.5) so the two milestones hold clearly different encoders
    train(_cfg(shards, run, probe_every=4, probe_train=40, probe_val=12, ema_start=0.5, ema_end=0.5, lr=1e-2,
               start_lr=1e-2))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    probes = [r for r in rows if r.get("kind") == "probe"]
    assert [r["step"] for r in probes] == [4, 8]
    assert all("loss" in r for r in rows if r.get("kind") != "probe")   # loss records are untouched
    for rec in probes:
        offline = online_probe.offline_readout(str(run / "checkpoints" / f"step_{rec['step']:07d}.pt"), shards,
                                               n_train=40, n_val=12)
        assert offline and set(offline) <= set(rec)
        for k, v in offline.items():
            assert rec[k] == pytest.approx(v, abs=1e-9), k
    # the two milestones' encoders differ, so a read-out that ignored the weights would be caught above
    assert probes[0]["probe_ridge_auprc"] != probes[1]["probe_ridge_auprc"] or \
        probes[0]["probe_knn_auprc"] != probes[1]["probe_knn_auprc"]


def test_probe_defaults_and_off_switch(shards, tmp_path):
    cfg = _cfg(shards, tmp_path / "a", probe_train=8, probe_val=8)
    p = online_probe.build(cfg, total=600, mean=0.5, std=0.25)
    assert p is not None and p.every == 100 and p.budget == online_probe.BUDGET
    assert p.due(100, 600) and not p.due(99, 600) and p.due(600, 600)
    # budget mode: a read-out that costs much more than 5% of the interval's training time pushes the next one out
    from radjepa_cli.models.vit import build_encoder
    vit = build_encoder("vit_tiny", img_size=16, patch_size=4, in_chans=1, depth=1)
    p._t_mark, p._step_mark = time.perf_counter() - 1e6, 0     # slow steps: the read-out is cheap
    p.run(vit, 100)
    assert p.next == 200
    p._t_mark = time.perf_counter()                           # instant steps: the read-out is expensive
    p.run(vit, 200)
    assert p.next > 300 and not p.due(300, 600) and p.due(600, 600)
    fixed = online_probe.build(_cfg(shards, tmp_path / "e", probe_every=7, probe_train=8, probe_val=8), 600, 0.5,
                               0.25)
    assert fixed.budget is None and fixed.due(14, 600) and not fixed.due(15, 600)
    assert online_probe.build(_cfg(shards, tmp_path / "b", probe_every=0), 600, 0.5, 0.25) is None
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for f in shards.glob("*.tar"):
        (unlabelled / f.name).symlink_to(f)
    man = json.loads((shards / "manifest.json").read_text())
    (unlabelled / "manifest.json").write_text(json.dumps({**man, "labels": {}}))
    assert online_probe.build(_cfg(unlabelled, tmp_path / "c"), 600, 0.5, 0.25) is None
    with pytest.raises(ValueError, match="probe-every 0"):
        online_probe.build(_cfg(unlabelled, tmp_path / "d", probe_every=5), 600, 0.5, 0.25)


def test_a_resumed_run_schedules_read_outs_from_where_it_resumes():
    sub = online_probe.Subset(torch.zeros(2, 1, 8, 8), np.zeros((2, 1)), np.ones((2, 1), bool))
    fixed = online_probe.OnlineProbe(50, sub, sub, ["a"], 0.5, 0.25, start=120)
    budgeted = online_probe.OnlineProbe(50, sub, sub, ["a"], 0.5, 0.25, budget=0.05, start=120)
    # fixed interval: multiples of N whatever the start; budget mode: the first read-out N steps after the resume
    assert fixed.due(150, 1000) and not fixed.due(151, 1000)
    assert not budgeted.due(121, 1000) and not budgeted.due(169, 1000) and budgeted.due(170, 1000)
    assert budgeted.due(1000, 1000)   # the last step always gets one
