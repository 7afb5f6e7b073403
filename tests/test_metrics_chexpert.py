"""chexpert-rules: hand-checked real sentences, the IU-Xray MeSH comparison, the aggregation rules."""
from pathlib import Path

import pytest

from radjepa_cli.metrics import chexpert_rules as cr
from radjepa_cli.metrics.chexpert_rules import Mention

FIXTURE = Path(__file__).parent / "fixtures" / "labeler_sentences.tsv"


def _fixture_rows():
    rows = []
    for line in FIXTURE.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        uid, sentence, expected = line.split("\t")
        exp = {k: int(v) for k, v in (x.split("=") for x in expected.split("; ") if x)}
        rows.append((uid, sentence, exp))
    return rows


def test_fixture_is_large_and_tricky():
    rows = _fixture_rows()
    assert len(rows) >= 100
    text = " ".join(s for _, s, _ in rows)
    for cue in ("no evidence of", "cannot exclude", "cannot be excluded", "resolved", "without", "versus",
                "upper limits of normal", "removed", "possible"):
        assert cue in text, cue
    values = [v for _, _, e in rows for v in e.values()]
    assert {0, 1, -1} <= set(values)


@pytest.mark.parametrize("uid,sentence,expected", _fixture_rows())
def test_fixture_sentence(uid, sentence, expected):
    got = {k: v for k, v in cr.label_report(sentence).items() if k in cr.OBSERVATIONS and v is not None}
    assert got == expected, [(m.label, m.text, m.value, m.rule) for m in cr.mentions(sentence)]


@pytest.fixture(scope="module")
def mesh_comparison():
    from radjepa_cli.metrics.iu_xray_mesh import compare_labeller_to_mesh, load_reports

    texts = [f"{r.findings} {r.impression}".strip() for r in load_reports()]
    cache = dict(zip(texts, cr.label_reports(texts)))  # label once, score both conventions
    return {u: compare_labeller_to_mesh(uncertain_as=u, labeller=cache.__getitem__) for u in ("positive", "negative")}


def test_macro_f1_against_iu_xray_mesh(mesh_comparison):
    # Reached on 3,927 real reports (findings + impression) vs their MeSH annotations: 0.792 / 0.840.
    pos, neg = mesh_comparison["positive"], mesh_comparison["negative"]
    assert pos["reports"] > 3900
    assert pos["macro_f1"] >= 0.78
    assert neg["macro_f1"] >= 0.83
    for name, v in neg["per_label"].items():
        # No Finding is bounded by MeSH's stricter "normal" (it also excludes granulomas, spine findings ...).
        assert v["f1"] >= (0.6 if name == "No Finding" else 0.7), (name, v)


def test_aggregation_rules():
    m = lambda label, value: Mention(label, "x", "x", value, "test")  # noqa: E731
    labels = cr.aggregate([m("Edema", 0), m("Edema", -1), m("Pneumothorax", 0), m("Pneumothorax", 1),
                           m("Fracture", 0)])
    assert labels["Edema"] == -1 and labels["Pneumothorax"] == 1 and labels["Fracture"] == 0
    assert labels["Atelectasis"] is None and labels["No Finding"] is None
    # Support devices alone do not break "No Finding"; a negative finding does not either.
    only_devices = cr.aggregate([m("Support Devices", 1), m("Pleural Effusion", 0)])
    assert only_devices["No Finding"] == 1
    assert list(only_devices) == list(cr.CHEXPERT_14)


def test_whole_report_and_name():
    report = ("The heart is normal in size. The mediastinum is unremarkable. No pleural effusion or pneumothorax. "
              "Left basilar opacity, likely atelectasis. Right PICC line in place.")
    labels = cr.label_report(report)
    assert labels["Cardiomegaly"] == 0 and labels["Enlarged Cardiomediastinum"] == 0
    assert labels["Pleural Effusion"] == 0 and labels["Pneumothorax"] == 0
    assert labels["Lung Opacity"] == 1 and labels["Atelectasis"] == -1
    assert labels["Support Devices"] == 1 and labels["No Finding"] is None
    assert cr.label_report("No acute cardiopulmonary abnormality.")["No Finding"] == 1
    assert cr.NAME == "chexpert-rules" and "chexbert" not in cr.NAME.lower()
    assert cr.label_reports(["No effusion.", "No effusion."])[1]["Pleural Effusion"] == 0
