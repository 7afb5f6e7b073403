"""The shared SVD ridge core (metrics/ridge.py): weights equal the normal equations', GCV equals its definition
with the hat matrix, and the two constant-feature guards (absolute, relative to the largest sd) differ as stated."""
import numpy as np
import pytest

from radjepa_cli.metrics.ridge import RidgeSVD


def _data(seed=0, n=50, d=8):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * rng.uniform(0.1, 50, d)
    x[:, 0] = 4.0                                       # constant: standardises to 0 under either guard
    x[:, 1] = 2.0 + 1e-7 * rng.standard_normal(n)       # kept by the absolute guard, dropped by the relative one
    return x, rng.standard_normal((n, 3))


def test_weights_and_gcv_match_the_direct_formulas():
    x, t = _data()
    r = RidgeSVD(x)
    a = r.transform(x)
    assert np.allclose(a[:, 0], 0) and np.allclose(a[:, 2:].std(0), 1)
    tc = t - t.mean(0)
    uty = r.project(tc)
    for lam in (1e-3, 1.0, 30.0):
        w_direct = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ tc)
        assert np.allclose(r.weights(uty, lam), w_direct, atol=1e-8)
        assert np.allclose(r.weights(uty[:, 0], lam), w_direct[:, 0], atol=1e-8)
        h = a @ np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T)
        n = len(x)
        gcv = n * np.sum((tc[:, 0] - h @ tc[:, 0]) ** 2) / (n - np.trace(h)) ** 2
        assert r.gcv(tc[:, 0], uty[:, 0], lam) == pytest.approx(gcv, rel=1e-8)


def test_constant_feature_guards():
    x, _ = _data(1)
    absolute, relative = RidgeSVD(x), RidgeSVD(x, relative=True)
    assert absolute.sd[0] == relative.sd[0] == 1.0
    assert absolute.sd[1] < 1e-6 and relative.sd[1] == 1.0
    assert np.array_equal(absolute.sd[2:], relative.sd[2:])
