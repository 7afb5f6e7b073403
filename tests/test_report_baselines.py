"""Baseline rows of the report tables (evaluate/baselines.py): a seeded derangement, the most frequent report, and
the rows under ours in `evaluate --table 3` on the same references and bootstrap."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from radjepa_cli.cli import app
from radjepa_cli.evaluate.baselines import baseline_generated, derangement, most_frequent


@pytest.mark.parametrize("n", [2, 3, 7, 100])
def test_derangement_pairs_no_report_with_itself(n):
    p = derangement(n, seed=1)
    assert sorted(p.tolist()) == list(range(n)) and np.all(p != np.arange(n))
    assert np.array_equal(p, derangement(n, seed=1))
    with pytest.raises(ValueError):
        derangement(1, seed=0)


def test_most_frequent_and_ties():
    assert most_frequent(["a", "b", "b", "c", "a", "b"]) == "b"
    assert most_frequent(["x", "y", "y", "x"]) == "x"   # tie: first in file order
    assert baseline_generated("most-frequent", ["a", "b", "b"], 0) == ["b", "b", "b"]
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_generated("oracle", ["a", "b"], 0)


def test_table3_has_both_baselines_under_ours(tmp_path):
    from radjepa_cli.metrics.iu_xray_mesh import load_reports

    reps = [r for r in load_reports() if r.findings][:40]
    refs = [r.findings for r in reps] + [reps[0].findings] * 3      # one text four times: the most frequent
    path = tmp_path / "predictions.jsonl"
    with path.open("w") as f:   # a perfect "model": generated == reference
        for i, ref in enumerate(refs):
            f.write(json.dumps({"id": f"r{i}", "generated": ref, "reference": ref, "encoder": "radjepa",
                                "dataset": "iu-xray", "llm": "tiny"}) + "\n")
    res = CliRunner().invoke(app, ["evaluate", "--table", "3", str(path), "--bootstrap", "30", "--no-figures",
                                   "--out", str(tmp_path / "t3")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    t = json.loads((tmp_path / "t3" / "table.json").read_text())
    assert t["sources"] == ["ours", "baseline", "baseline"]
    names = [r[1] for r in t["rows"]]
    assert names[1:] == ["random other report (baseline)", "most frequent report (baseline)"]
    groups = t["data"]["inputs"]["groups"] if "inputs" in t["data"] else t["data"]["ours"]
    by = {g.get("baseline", "ours"): g for g in groups}
    assert by["random-other"]["n"] == by["most-frequent"]["n"] == by["ours"]["n"] == len(refs)
    bleu = {k: g["metrics"]["bleu4"] for k, g in by.items()}
    assert bleu["ours"]["value"] == pytest.approx(100.0)
    for k in ("random-other", "most-frequent"):   # a baseline that copied the reference would score 100 too
        assert bleu[k]["value"] < 50 and bleu[k]["ci_low"] <= bleu[k]["median"] <= bleu[k]["ci_high"]
    assert all("[" in c for c in t["rows"][1][3:5])   # CI cells, as for ours
