"""Phantom generator: determinism, label/mask/text consistency, anatomy polarity, prevalence, co-occurrence, source."""
from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from radjepa_cli.data.labels import LUNG_ZONES, LUNGS, PHANTOM, RIBS
from radjepa_cli.data.phantom import PhantomConfig, generate
from radjepa_cli.data.phantom_findings import FINDINGS, sample_labels, sample_truth

SMALL = 96  # most tests render small phantoms: same geometry, 7x fewer pixels
NONE = {n: 0.0 for n in FINDINGS}


def only(name: str, p: float = 1.0, **kw) -> PhantomConfig:
    return PhantomConfig(size=SMALL, prevalence={**NONE, name: p}, cooccurrence={}, **kw)


def test_deterministic_and_order_independent():
    cfg = PhantomConfig(size=SMALL, seed=3)
    a = [generate(i, cfg) for i in (5, 2, 9)]
    b = {i: generate(i, cfg) for i in (9, 5, 2)}
    for rec, i in zip(a, (5, 2, 9)):
        assert np.array_equal(rec.image, b[i].image)
        assert rec.labels == b[i].labels and rec.findings == b[i].findings and rec.view == b[i].view
        assert all(np.array_equal(rec.masks[k], b[i].masks[k]) for k in rec.masks)
    other = generate(5, PhantomConfig(size=SMALL, seed=4))
    assert not np.array_equal(other.image, a[0].image)
    assert a[0].key == "phantom-0000005" and a[0].patient != a[1].patient


def test_record_contract_and_masks():
    cfg = PhantomConfig(size=SMALL)
    for i in range(6):
        rec = generate(i, cfg)
        assert rec.image.dtype == np.float32 and rec.image.shape == (SMALL, SMALL)
        assert 0.0 <= rec.image.min() and rec.image.max() <= 1.0
        assert set(rec.labels) == set(PHANTOM) and set(rec.labels.values()) <= {0, 1}
        # CheXpert convention: support devices alone still count as No Finding.
        assert rec.labels["No Finding"] == int(not any(rec.labels[n] for n in FINDINGS if n != "Support Devices"))
        assert set(rec.masks) == set(LUNGS) | set(LUNG_ZONES) | set(RIBS) | {"heart"}
        for name, m in rec.masks.items():
            assert m.shape == rec.image.shape and m.dtype == bool, name
        for side in ("right", "left"):
            lung = rec.masks[f"lung_{side}"]
            zones = [rec.masks[f"{side}_{z}"] for z in ("upper", "middle", "lower")]
            assert all(z.any() for z in zones)
            assert np.array_equal(zones[0] | zones[1] | zones[2], lung)  # zones partition the lung
            assert not (zones[0] & zones[1]).any() and not (zones[1] & zones[2]).any()
        # patient's right lung on the image left (frontal display convention)
        cols = np.arange(SMALL)
        assert (cols * rec.masks["lung_right"]).sum() / rec.masks["lung_right"].sum() < SMALL / 2
        assert (cols * rec.masks["lung_left"]).sum() / rec.masks["lung_left"].sum() > SMALL / 2
        assert rec.masks["heart"].any() and not (rec.masks["heart"] & rec.masks["lung_left"]).any()
        assert sum(rec.masks[r].any() for r in RIBS) >= 18
        json.dumps(rec.meta())  # extra etc. must be JSON-serialisable


def test_lungs_dark_mediastinum_bright_and_masks_aligned():
    """Radiographic polarity, and masks follow the image through rotation/scale/shift: the lung mask is darker than
    a ring just outside it, and the heart brighter than the lungs."""
    cfg = PhantomConfig(size=128, prevalence=NONE, cooccurrence={}, acquisition=1.5)
    for i in range(5):
        rec = generate(i, cfg)
        img, m = rec.image, rec.masks
        lungs = m["lung_right"] | m["lung_left"]
        ring = binary_dilation(lungs, iterations=3) & ~lungs
        assert img[lungs].mean() + 0.1 < img[m["heart"]].mean()
        assert img[lungs].mean() + 0.05 < img[ring].mean()
        spine = np.zeros_like(lungs)
        rows = np.nonzero(lungs.any(1))[0]
        mid = int(np.mean(np.nonzero(lungs.any(0))[0]))  # midline between the lungs
        spine[rows[0]:rows[len(rows) // 2], mid - 2:mid + 3] = True  # upper mediastinum
        assert img[lungs].mean() + 0.1 < img[spine].mean()


def test_rotation_moves_masks_with_anatomy():
    base = PhantomConfig(size=SMALL, acquisition=0.0)
    a, b = generate(1, base), generate(1, PhantomConfig(size=SMALL, acquisition=2.0))
    assert not np.array_equal(a.masks["lung_left"], b.masks["lung_left"])
    assert a.labels == b.labels  # acquisition has its own random stream


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=\.)\s+", text) if s.strip()]


@pytest.mark.parametrize("name,words", [
    ("Pleural Effusion", ["effusion"]), ("Pneumothorax", ["pneumothorax"]), ("Consolidation", ["consolidation"]),
    ("Cardiomegaly", ["cardiomegaly", "heart is", "cardiac silhouette"]), ("Edema", ["edema"]),
    ("Lung Lesion", ["nodule", "mass"]), ("Fracture", ["fracture"]), ("Atelectasis", ["atelectasis"]),
    ("Support Devices", ["tube", "catheter", "pacemaker", "leads"]), ("Pleural Thickening", ["pleural thickening"]),
])
def test_text_mentions_positive_findings_with_side(name, words):
    for i in range(4):
        rec = generate(i, only(name))
        text = rec.findings.lower()
        assert rec.labels[name] == 1 and rec.labels["No Finding"] == int(name == "Support Devices")
        assert any(w in text for w in words), (name, rec.findings)
        side = rec.extra["findings"][name].get("side")
        if side and name != "Edema":  # edema is bilateral by nature; reports rarely say so
            said = ("bilateral", "both") if side == "bilateral" else (side,)
            hits = [s for s in _sentences(text) if any(w in s for w in words)]
            assert any(w in s for s in hits for w in said), (side, rec.findings)
        assert rec.impression


def test_negative_cases_negate_or_omit():
    cfg = PhantomConfig(size=SMALL, prevalence=NONE, cooccurrence={})
    negated = 0
    for i in range(12):
        rec = generate(i, cfg)
        assert rec.labels["No Finding"] == 1
        for s in _sentences(rec.findings.lower()):
            if any(w in s for w in ("effusion", "pneumothorax", "consolidation", "edema", "fracture", "nodule")):
                assert re.search(r"\bno\b|without", s), s  # only ever mentioned as a negation
                negated += 1
        assert "acute" in rec.impression.lower() or "normal" in rec.impression.lower()
    assert negated > 0


def test_effusion_side_and_geometry():
    """A large right effusion whitens the right base, not the left."""
    cfg = PhantomConfig(size=128, prevalence={**NONE, "Pleural Effusion": 1.0}, cooccurrence={}, difficulty=0.0)
    for i in range(8):
        rec = generate(i, cfg)
        t = rec.extra["findings"]["Pleural Effusion"]
        if t["side"] != "bilateral" and t["strength"] > 0.6:
            other = "left" if t["side"] == "right" else "right"
            sick, well = rec.masks[f"{t['side']}_lower"], rec.masks[f"{other}_lower"]
            assert rec.image[sick].mean() > rec.image[well].mean() + 0.05
            return
    pytest.fail("no large unilateral effusion among the samples")


def test_prevalence_matches_config():
    prev = {**PhantomConfig().prevalence, "Pleural Effusion": 0.4, "Pneumothorax": 0.0, "Support Devices": 0.25}
    cfg = PhantomConfig(size=48, prevalence=prev, cooccurrence={})
    n = 200
    recs = [generate(i, cfg) for i in range(n)]
    for name, p in prev.items():
        rate = np.mean([r.labels[name] for r in recs])
        assert abs(rate - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-9, (name, rate, p)


def test_cooccurrence_is_honoured_and_marginal_kept():
    prev = {**NONE, "Pneumothorax": 0.3, "Pleural Effusion": 0.3}
    co = {"Pneumothorax": {"Pleural Effusion": 0.9}}
    rng = np.random.default_rng(0)
    draws = [sample_labels(rng, prev, co) for _ in range(4000)]
    ptx = np.array([d["Pneumothorax"] for d in draws])
    eff = np.array([d["Pleural Effusion"] for d in draws])
    assert abs(eff[ptx == 1].mean() - 0.9) < 0.04
    assert abs(eff.mean() - 0.3) < 0.03  # the marginal stays as configured
    # and through the generator itself
    cfg = PhantomConfig(size=48, prevalence=prev, cooccurrence=co)
    recs = [generate(i, cfg) for i in range(150)]
    pos = [r.labels["Pleural Effusion"] for r in recs if r.labels["Pneumothorax"]]
    assert len(pos) > 20 and np.mean(pos) > 0.75


def test_difficulty_skews_towards_subtle():
    labels = {n: 1 for n in FINDINGS}
    easy = [sample_truth(np.random.default_rng(i), labels, 0.0)["Pneumothorax"]["strength"] for i in range(300)]
    hard = [sample_truth(np.random.default_rng(i), labels, 1.0)["Pneumothorax"]["strength"] for i in range(300)]
    assert np.mean(easy) > 0.7 and np.mean(hard) < 0.3


def test_config_validation():
    with pytest.raises(ValueError, match="Pleural Efusion"):
        PhantomConfig(prevalence={"Pleural Efusion": 0.1})
    with pytest.raises(ValueError, match="not a probability"):
        PhantomConfig(prevalence={"Edema": 1.5})
    with pytest.raises(ValueError, match="cycle"):
        PhantomConfig(cooccurrence={"Edema": {"Cardiomegaly": 0.5}, "Cardiomegaly": {"Edema": 0.5}})
    with pytest.raises(ValueError, match="Pneumothrax"):
        PhantomConfig(cooccurrence={"Pneumothrax": {"Pleural Effusion": 0.5}})
    with pytest.raises(ValueError, match="difficulty"):
        PhantomConfig(difficulty=2.0)


def test_fracture_text_names_the_rib():
    rec = generate(0, only("Fracture"))
    t = rec.extra["findings"]["Fracture"]
    assert f"{t['side']} {t['rib']}" in rec.findings.replace("st ", " ").replace("nd ", " ").replace("rd ", " ").replace("th ", " ")


def test_synthetic_source_picklable_and_consistent():
    from radjepa_cli.data.sources import get_source
    src = get_source("synthetic", n=4, seed=2, size=SMALL, difficulty=0.7)
    src = pickle.loads(pickle.dumps(src))
    items = list(src.items())
    assert [it.key for it in items] == [f"phantom-{i:07d}" for i in range(4)]
    assert all(it.path is None and it.split is None for it in items)
    rec = src.load(items[3])
    ref = generate(3, PhantomConfig(size=SMALL, seed=2, difficulty=0.7))
    assert np.array_equal(rec.image, ref.image) and rec.view == items[3].view == ref.view
    assert rec.patient == items[3].patient


def test_contact_sheet_writes_png(tmp_path):
    from radjepa_cli.data.contact_sheet import contact_sheet
    recs = [generate(i, PhantomConfig(size=64)) for i in range(3)]
    out = contact_sheet(recs, tmp_path / "sheet.png", cols=2)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        contact_sheet([], tmp_path / "empty.png")
