"""Bootstrap over per-report statistics == recomputing each resample from text; F1 from counts == sklearn."""
import numpy as np
import pytest

from radjepa_cli.data.labels import CHEXPERT_14
from radjepa_cli.metrics import bootstrap as bs
from radjepa_cli.metrics import f1 as f1m


@pytest.fixture(scope="module")
def pairs():
    from radjepa_cli.metrics.iu_xray_mesh import load_reports

    refs = [f"{r.findings} {r.impression}".strip() for r in load_reports() if r.findings][:250]
    return refs[7:] + refs[:7], refs


def test_resample_metrics_equal_naive_recomputation(pairs):
    import sacrebleu
    from sklearn.metrics import f1_score

    from radjepa_cli.metrics.chexpert_rules import label_reports
    from radjepa_cli.metrics.lexical import rouge_l

    gens, refs = pairs
    stats = bs.compute_report_stats(gens, refs, uncertain_as="positive")
    w = bs.resample_counts(stats.n, 2, seed=11)
    fast = bs._weighted(stats, w)
    for b in range(2):
        idx = np.repeat(np.arange(stats.n), w[b].astype(int))
        g, r = [gens[i] for i in idx], [refs[i] for i in idx]
        assert fast["bleu4"][b] == pytest.approx(sacrebleu.corpus_bleu(g, [r]).score, abs=1e-9)
        assert fast["rougeL"][b] == pytest.approx(100 * rouge_l(g, r).mean(), abs=1e-9)
        yg = f1m.positive_matrix(label_reports(g), CHEXPERT_14, "positive")
        yr = f1m.positive_matrix(label_reports(r), CHEXPERT_14, "positive")
        assert fast["f1_14_macro"][b] == pytest.approx(100 * f1_score(yr, yg, average="macro", zero_division=0))
        assert fast["f1_14_micro"][b] == pytest.approx(100 * f1_score(yr, yg, average="micro", zero_division=0))


def test_bootstrap_ci_is_seeded_and_ordered(pairs):
    gens, refs = pairs
    stats = bs.compute_report_stats(gens[:150], refs[:150], means={"rger": np.linspace(0, 100, 150)})
    a, b = bs.bootstrap(stats, 200, seed=3), bs.bootstrap(stats, 200, seed=3)
    assert a == b
    assert a != bs.bootstrap(stats, 200, seed=4)
    for k, v in a.items():
        assert v["ci_low"] <= v["median"] <= v["ci_high"], k
    assert a["rger"]["value"] == pytest.approx(50.0)
    point = bs.bootstrap(stats, 0)
    assert point["bleu4"]["median"] is None and point["bleu4"]["value"] == a["bleu4"]["value"]


def test_resample_counts_draw_n_with_replacement():
    w = bs.resample_counts(50, 20, seed=0)
    assert w.shape == (20, 50) and (w.sum(1) == 50).all() and (w >= 0).all()
    assert (w.max(1) >= 2).all()  # with replacement: some report drawn more than once


def test_f1_from_counts_matches_sklearn_and_zero_division():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    gen = [{n: int(rng.integers(-1, 2)) for n in CHEXPERT_14[:5]} for _ in range(60)]
    ref = [{n: int(rng.integers(-1, 2)) for n in CHEXPERT_14[:5]} for _ in range(60)]
    for unc in ("positive", "negative"):
        counts = f1m.f1_counts(gen, ref, CHEXPERT_14, unc).sum(0)
        yg, yr = f1m.positive_matrix(gen, CHEXPERT_14, unc), f1m.positive_matrix(ref, CHEXPERT_14, unc)
        f = f1m.f1_from_counts(counts)
        assert f["macro"] == pytest.approx(f1_score(yr, yg, average="macro", zero_division=0))
        assert f["per_label"][-1] == 0.0  # Support Devices never present: F1 0, not NaN
    with pytest.raises(ValueError, match="uncertain_as"):
        f1m.positive_matrix(gen, CHEXPERT_14, "mask")


def test_bootstrap_speed_on_3000_reports():
    """The resampling itself (500 x 3,000, all metrics) is a fraction of a second; see benchmarks/bootstrap.py."""
    import time

    rng = np.random.default_rng(0)
    n = 3000
    stats = bs.ReportStats(bleu=rng.integers(0, 20, (n, 10)), bleu_coco=rng.integers(0, 20, (n, 10)),
                           rouge_l=rng.random(n),
                           label_counts={"f1_14": rng.integers(0, 2, (n, 14, 3)), "f1_5": rng.integers(0, 2, (n, 5, 3))})
    t = time.perf_counter()
    out = bs.bootstrap(stats, 500)
    assert time.perf_counter() - t < 5.0
    assert set(out) >= {"bleu4", "rougeL", "f1_14_macro", "f1_5_macro"}
