"""`radjepa quickstart` end to end at toy scale: every stage's real CLI runs, in order, and the summary page
links the plots. (The full-size quickstart is `make demo`.)"""
import json

import numpy as np
import pytest

from radjepa_cli.quickstart import QuickstartConfig, run_quickstart


def test_quickstart_pipeline_end_to_end(tmp_path):
    cfg = QuickstartConfig(out=str(tmp_path / "qs"), n=160, shard_size=64, image_size=56, patch_size=7,
                           pretrain_steps=4, batch_size=8, probe_seeds=2, probe_epochs=3, segment_epochs=1,
                           segment_seeds=1, report_epochs=1, report_max_steps=3, generate_limit=4)
    assert run_quickstart(cfg) == 0
    out = tmp_path / "qs"
    state = json.loads((out / "quickstart_state.json").read_text())
    assert all(s["status"] == "done" for s in state["steps"].values()), state
    for enc in ("radjepa", "random", "pixels"):
        res = json.loads((out / f"probe-{enc}" / "results.json").read_text())
        # the table's figure is the mean over seeds of each seed's mean over the evaluated labels
        per_seed = [np.mean([s["per_class"][n]["auprc"] for n in res["labels"]]) for s in res["per_seed"]]
        assert res["aggregate"]["auprc_mean"] == pytest.approx(np.mean(per_seed))
        assert len(res["per_seed"]) == cfg.probe_seeds and res["labels"]
    assert json.loads((out / "probe-radjepa-attentive" / "results.json").read_text())["head"] == "attentive"
    # the online probe read the target encoder during pretraining, and the summary shows its curve and cost
    rows = [json.loads(x) for x in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    probes = [r for r in rows if r.get("kind") == "probe"]
    assert probes and probes[-1]["step"] == cfg.pretrain_steps and "probe_ridge_auprc" in probes[-1]
    assert json.loads((out / "segment-upernet-lungs" / "results.json").read_text())["task"] == "lungs"
    for kind, run, key in (("probe", "probe-radjepa", "aggregate"), ("segment", "segment-upernet-lungs", "mean_dice")):
        done = json.loads((out / "predict" / kind / "predict.json").read_text())
        (metrics,) = done["metrics"]  # the phantom test split, scored again from the saved heads: equal numbers
        assert metrics[key] == json.loads((out / run / "results.json").read_text())[key]
        assert done["n_skipped"] == 0 and done["n_predicted"] == metrics["n"] + 2  # + RG1 DICOM and its PNG
    assert len(list((out / "predict" / "segment" / "overlays").glob("RG1*.png"))) == 2
    rg1 = [json.loads(line) for line in (out / "reports" / "rg1.jsonl").read_text().splitlines()]
    assert len(rg1) == 1 and rg1[0]["generated"].strip()
    page = (out / "summary.html").read_text()
    assert "probe macro-AUPRC" in page and ".png" in page
    assert "online probe (ridge, val) macro-AUPRC" in page and "online probe cost" in page
    assert "supervised ceiling (measured once, not rerun)" in page
    assert page.index("probe_auprc_comparison.png") < page.index("probe-pixels/pr_curves.png")
    assert "predict/segment/overlays/RG1_UNCR.png" in page
    # A rerun finds every step done and redoes nothing.
    assert run_quickstart(cfg) == 0
