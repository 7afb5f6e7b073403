"""AUPRC/AUROC with unknown labels masked; Dice."""
import numpy as np
import pytest

from radjepa_cli.metrics import classification as cl
from radjepa_cli.metrics.dice import dice, dice_per_structure


def test_per_class_masks_unknowns_and_matches_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (100, 2)).astype(float)
    s = y + rng.normal(0, 0.8, (100, 2))
    known = np.ones_like(y, bool)
    known[:30, 0] = False
    y[:30, 0] = 1  # garbage under the mask must not matter
    out = cl.per_class(y, s, known, ["A", "B"])
    assert out["A"]["auprc"] == pytest.approx(average_precision_score(y[30:, 0], s[30:, 0]))
    assert out["A"]["auroc"] == pytest.approx(roc_auc_score(y[30:, 0], s[30:, 0]))
    assert out["A"]["n"] == 70
    y[:, 1] = 0
    out = cl.per_class(y, s, known, ["A", "B"])
    assert np.isnan(out["B"]["auprc"])  # undefined, never a fake number
    assert cl.aggregate(out)["auprc"] == pytest.approx(out["A"]["auprc"])


def test_dice_and_its_empty_mask_rule():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert dice(a, b) == pytest.approx(2 * 4 / 16)
    assert dice(np.zeros((2, 2)), np.zeros((2, 2))) is None  # empty ground truth: not scored, never a free 1
    assert dice(np.ones((2, 2)), np.zeros((2, 2))) is None  # …and a false positive there is not scored either
    with pytest.raises(ValueError):
        dice(a, b[:2])
    # [N=3, M=2]: image 2 lacks structure 0 (empty truth, prediction present) and structure 1 is not annotated
    # on image 0: both are left out of the means, whatever was predicted there.
    truth = np.stack([np.stack([a, b]), np.stack([b, b]), np.stack([np.zeros_like(a), a])])
    pred = np.stack([np.stack([a, np.ones_like(a)]), np.stack([a, b]), np.stack([np.ones_like(a), a])])
    known = np.array([[True, False], [True, True], [True, True]])
    import torch
    per = dice_per_structure(torch.from_numpy(pred), torch.from_numpy(truth), torch.from_numpy(known))
    assert per[0] == pytest.approx((1.0 + 0.5) / 2) and per[1] == pytest.approx(1.0)
    assert dice_per_structure(torch.from_numpy(pred[2:]), torch.from_numpy(truth[2:]))[0] is None
