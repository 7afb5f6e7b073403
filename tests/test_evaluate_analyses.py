"""`evaluate bias` (Table 5, joint-absence errors) and `evaluate agreement` (Tables 10-11)."""
import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from radjepa_cli.cli import app
from radjepa_cli.data.record import Record
from radjepa_cli.evaluate import bias
from radjepa_cli.evaluate.agreement_study import MASTER, AgreementConfig, agreement_study
from radjepa_cli.metrics import agreement as ag

runner = CliRunner()
PTX, EFF = "Pneumothorax", "Pleural Effusion"


def _records():
    """12 records: pneumothorax + in 4 (effusion + in 2, - in 1, unknown in 1); pneumothorax - in 8."""
    states = [(1, 1), (1, 1), (1, 0), (1, None), (0, 1), (0, 0), (0, 0), (0, 0), (0, 0), (0, -1), (0, 0), (0, 0)]
    img = np.zeros((32, 32), np.float32)
    return [Record(key=f"r{i}", image=img, dataset="toy", labels={PTX: n, EFF: b},
                   findings="Small left pleural effusion." if b == 1 else "No pleural effusion or pneumothorax.")
            for i, (n, b) in enumerate(states)]


def test_cooccurrence_on_records():
    t = bias.cooccurrence([r.labels for r in _records()], PTX, EFF)
    assert (t["n_given_pos"], t["n_given_neg"]) == (4, 8)
    assert t["cells"]["B+|N+"] == {"count": 2, "p": 0.5}
    assert t["cells"]["B-|N+"] == {"count": 1, "p": 0.25}  # the unknown stays in the denominator (as in Table 5)
    assert t["cells"]["B+|N-"]["count"] == 1 and t["cells"]["B-|N-"]["count"] == 6  # uncertain excluded
    t2 = bias.cooccurrence([r.labels for r in _records()], PTX, EFF, uncertain="positive")
    assert t2["cells"]["B+|N-"]["count"] == 2
    m = bias.conditional_matrix([r.labels for r in _records()], [PTX, EFF])
    assert m["p_col_given_row"][0] == [1.0, 0.5]


def test_joint_absence_errors():
    ref = [{EFF: 1, PTX: 0}, {EFF: 0, PTX: 1}, {EFF: 0, PTX: 0}, {EFF: 1, PTX: None}]
    gen = [{EFF: 0, PTX: 0}, {EFF: 0, PTX: 1}, {EFF: 0, PTX: 0}, {EFF: None, PTX: 0}]
    ja = bias.joint_absence_errors(gen, ref, ["a", "b", "c", "d"], (EFF, PTX))
    assert (ja.cases, ja.errors, ja.examples) == (3, 1, ["a"])  # "d" does not deny effusion, it omits it


def _write_shards(out, records):
    from radjepa_cli.data import manifest as mf
    from radjepa_cli.data.shards import ShardWriter, encode_record, shard_name
    from radjepa_cli.io import write_json

    stats = mf.new_shard_stats()
    with ShardWriter(out / shard_name("test", 0)) as w:
        for rec in records:
            rec.split = "test"
            w.write(rec.key, encode_record(rec, 32))
            mf.add_sample(stats, rec.meta(), rec.masks)
    entry = mf.shard_entry(shard_name("test", 0), "test", w.count, w.sha256, w.nbytes, stats)
    write_json(out / mf.MANIFEST, mf.build_manifest({}, "test", [entry], {}, True))


def test_bias_cli_on_shards_and_predictions(tmp_path):
    pytest.importorskip("radjepa_cli.data.loader")
    _write_shards(tmp_path / "shards", _records())
    preds = tmp_path / "predictions.jsonl"
    rows = [{"id": "1", "generated": "No pleural effusion or pneumothorax.", "reference": "Small right effusion.",
             "encoder": "radjepa"},
            {"id": "2", "generated": "Small effusion.", "reference": "Small left effusion.", "encoder": "radjepa"}]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = runner.invoke(app, ["evaluate", "bias", str(tmp_path / "shards"), str(preds), "--compare-paper",
                              "--out", str(tmp_path / "o")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "o" / "bias.json").read_text())
    assert out["labels_source"] == "dataset labels"
    assert out["table5"]["cells"]["B+|N+"]["count"] == 2
    assert out["joint_absence"]["radjepa"]["cases"] == 2 and out["joint_absence"]["radjepa"]["errors"] == 1
    assert "0.463" in res.output  # the paper's P(B+|N+) shown beside


def test_agreement_study_and_cli(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 6, 80)
    cols = {name: np.clip(truth + rng.integers(-1, 2, 80), 0, 5) for name in ("H1", "H2", "J1", "J2", "J3")}
    path = tmp_path / "ratings.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", *cols])
        for i in range(80):
            w.writerow([f"r{i}", *[cols[c][i] for c in cols]])
    res = agreement_study(AgreementConfig(str(path), humans=("H1", "H2"), judges=("J1", "J2", "J3")))
    pairs = {tuple(p["pair"]): p for p in res["pairwise"]}
    assert set(pairs) >= {("H1", "H2"), ("H1", MASTER), ("H2", "J3")}
    master = ag.majority_vote(np.stack([cols[j] for j in ("J1", "J2", "J3")], 1))
    assert pairs[("H1", MASTER)]["qwk"] == pytest.approx(ag.cohen_kappa(cols["H1"], master, "quadratic"))
    m = res["multi_rater"]
    assert m["icc_2_1"] == pytest.approx(ag.icc_2_1(np.stack(list(cols.values()), 1)))
    assert 0.5 < m["krippendorff_alpha_ordinal"] <= 1 and "within_1_human_vs_master" in m
    cli = runner.invoke(app, ["evaluate", "agreement", str(path), "--humans", "H1,H2", "--judges", "J1,J2,J3",
                              "--compare-paper", "--out", str(tmp_path / "o")], env={"COLUMNS": "200"})
    assert cli.exit_code == 0, cli.output
    assert (tmp_path / "o" / "agreement.json").exists() and "0.91" in cli.output
    bad = runner.invoke(app, ["evaluate", "agreement", str(path), "--humans", "H9"])
    assert bad.exit_code == 2 and "H9" in bad.output
