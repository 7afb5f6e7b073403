"""Agreement statistics against published worked examples and sklearn."""
import numpy as np
import pytest

from radjepa_cli.metrics import agreement as ag

NAN = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", reliability data with missing values.
KRIPP = np.array([[1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
                  [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
                  [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
                  [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN]])


def test_krippendorff_published_values():
    assert ag.krippendorff_alpha(KRIPP, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert ag.krippendorff_alpha(KRIPP, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert ag.krippendorff_alpha(KRIPP, "interval") == pytest.approx(0.849, abs=5e-4)


def test_icc_shrout_fleiss_example():
    # Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges; ICC(2,1) = 0.29.
    x = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    assert ag.icc_2_1(x) == pytest.approx(0.29, abs=5e-3)
    with pytest.raises(ValueError):
        ag.icc_2_1(np.array([[1.0, NAN], [2.0, 3.0]]))


def test_fleiss_wikipedia_example():
    counts = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                       [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert ag.fleiss_kappa_from_counts(counts) == pytest.approx(0.210, abs=5e-4)
    ratings = np.array([[0, 0, 1], [1, 1, 1], [0, 1, 1], [0, 0, 0]])
    # same statistic from raw ratings as from the count table
    table = np.stack([(ratings == c).sum(1) for c in (0, 1)], 1)
    assert ag.fleiss_kappa(ratings) == pytest.approx(ag.fleiss_kappa_from_counts(table))


def test_cohen_against_sklearn():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, 300)
    b = np.clip(a + rng.integers(-1, 2, 300), 0, 5)
    for w in (None, "linear", "quadratic"):
        assert ag.cohen_kappa(a, b, w) == pytest.approx(cohen_kappa_score(a, b, weights=w))
    assert ag.cohen_kappa(a >= 4, b >= 4) == pytest.approx(cohen_kappa_score(a >= 4, b >= 4))


def test_within_and_majority():
    assert ag.within([0, 3, 5], [1, 5, 5]) == pytest.approx(2 / 3)
    votes = ag.majority_vote(np.array([[4, 4, 1], [1, 3, 5], [2, 2, 5], [0, 5, 3]]))
    assert votes.tolist() == [4, 3, 2, 3]
