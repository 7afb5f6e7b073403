"""Multi-block mask collator: I-JEPA statistics, its quirks and their fixes, determinism across workers."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from radjepa_cli.pretrain import masks as masks_mod
from radjepa_cli.pretrain.masks import MaskConfig, MultiBlockMaskCollator

G = 16
FIXED = dict(independent_scale_aspect=True, reach_last_row_col=True)


def _draw(cfg=None, n_batches=200, B=4, seed=0, **kw):
    c = MultiBlockMaskCollator(cfg or MaskConfig(**kw), grid=(G, G), seed=seed)
    return [c.sample_masks(B, i) for i in range(n_batches)]


def _block_dims(idx: torch.Tensor) -> tuple[int, int]:
    idx = idx[idx >= 0]
    return len(torch.unique(idx // G)), len(torch.unique(idx % G))


def _target_dims(draws):
    # Targets are unconstrained rectangles with one size per batch: read (h, w) off the first one.
    return np.array([_block_dims(pred[0, 0]) for _, pred in draws], dtype=float)


def _coverage(draws, which):
    seen = torch.zeros(G * G, dtype=torch.bool)
    for d in draws:
        m = d[which]
        seen[m[m >= 0]] = True
    return seen.reshape(G, G)


def test_shapes_and_target_blocks_are_rectangles():
    enc, pred = _draw(n_batches=1, B=5)[0]
    assert enc.dtype == pred.dtype == torch.int64
    assert enc.shape[:2] == (1, 5) and pred.shape[:2] == (4, 5)
    for m in pred.reshape(-1, pred.shape[-1]):
        h, w = _block_dims(m)
        assert h * w == len(m)                       # a full h×w block
        assert torch.all(m[1:] > m[:-1])             # ascending, no repeats


@pytest.mark.parametrize("independent", [False, True])
def test_target_scale_and_aspect_distributions(independent):
    dims = _target_dims(_draw(n_batches=600, B=1, independent_scale_aspect=independent))
    scale, aspect = dims[:, 0] * dims[:, 1] / (G * G), dims[:, 0] / dims[:, 1]
    # Uniform scale in [0.15, 0.2] up to integer rounding of h and w.
    assert 0.12 <= scale.min() and scale.max() <= 0.235
    assert abs(scale.mean() - 0.175) < 0.012
    assert 0.6 <= aspect.min() and aspect.max() <= 1.85
    assert abs(np.log(aspect).mean() - np.log([0.75, 1.5]).mean()) < 0.1
    corr = np.corrcoef(scale, np.log(aspect))[0, 1]
    if independent:
        assert abs(corr) < 0.2
    else:
        assert corr > 0.7  # the quirk: one draw sets both, so large targets are always tall


def test_faithful_sizes_lie_on_the_single_draw_curve():
    c = MultiBlockMaskCollator(MaskConfig(), grid=(G, G))
    curve = {c._size_for(0.15 + r * 0.05, 0.75 + r * 0.75) for r in np.linspace(0, 1, 2001)}
    dims = {tuple(map(int, d)) for d in _target_dims(_draw(n_batches=300, B=1))}
    assert dims <= curve
    off_curve = {tuple(map(int, d)) for d in _target_dims(_draw(n_batches=300, B=1, **FIXED))} - curve
    assert off_curve  # independent draws reach sizes the faithful sampler never produces


@pytest.mark.parametrize("kw", [{}, FIXED, dict(variable_length=True)])
def test_context_never_overlaps_targets(kw):
    for enc, pred in _draw(n_batches=100, B=4, **kw):
        for b in range(enc.shape[1]):
            ctx = set(enc[:, b][enc[:, b] >= 0].tolist())
            tgt = set(pred[:, b][pred[:, b] >= 0].tolist())
            assert ctx and not ctx & tgt


def test_last_row_and_column_quirk_and_fix():
    faithful = _draw(n_batches=150, B=8)
    for which in (0, 1):
        cov = _coverage(faithful, which)
        assert not cov[-1].any() and not cov[:, -1].any()      # I-JEPA never reaches them
        assert cov[:-1, :-1].all()
    fixed = _draw(n_batches=150, B=8, **FIXED)
    assert _coverage(fixed, 0).all() and _coverage(fixed, 1).all()  # every position reachable


def test_min_keep_and_relaxation():
    # Adversarial: a small context under many large targets is often left with <= min_keep patches.
    cfg = MaskConfig(n_targets=6, target_scale=(0.2, 0.25), context_scale=(0.3, 0.3), variable_length=True)
    overlapped = 0
    for enc, pred in _draw(cfg, n_batches=40, B=8):
        counts = (enc >= 0).sum(-1)
        assert (counts > cfg.min_keep).all()
        for b in range(enc.shape[1]):
            overlapped += bool(set(enc[0, b].tolist()) & set(pred[:, b].reshape(-1).tolist()) - {-1})
    assert overlapped > 0  # some contexts were only satisfiable by relaxing a target constraint, as I-JEPA does
    with pytest.raises(ValueError, match="min_keep"):
        MultiBlockMaskCollator(MaskConfig(), grid=(4, 4))


def test_relaxations_are_counted_and_logged(caplog):
    cfg = MaskConfig(n_targets=6, target_scale=(0.2, 0.25), context_scale=(0.3, 0.3), variable_length=True)
    c = MultiBlockMaskCollator(cfg, grid=(G, G))
    with caplog.at_level("WARNING", logger=masks_mod.__name__):
        for i in range(40):
            c.sample_masks(8, i)
    assert c.relaxations > 0
    logged = [r.getMessage() for r in caplog.records if "relaxation" in r.getMessage()]
    assert logged and "batch" in logged[0] and f"{c.relaxations} so far" in logged[-1]


def test_repair_loop_is_bounded():
    c = MultiBlockMaskCollator(MaskConfig(), grid=(G, G))
    c.cfg.min_keep = G * G   # impossible after construction: the loop must stop with an error, not spin
    with pytest.raises(RuntimeError, match="min_keep=256"):
        c.sample_masks(2, 0)


@pytest.mark.parametrize("independent", [False, True])
@pytest.mark.parametrize("grid", [15, 16, 24])
def test_reachable_sizes_are_exactly_the_drawable_ones(grid, independent):
    c = MultiBlockMaskCollator(MaskConfig(independent_scale_aspect=independent), grid=(grid, grid))
    found = c.reachable_sizes((0.15, 0.2), (0.75, 1.5))
    r = np.random.default_rng(0).random((200_000, 2))
    ra = r[:, 1] if independent else r[:, 0]
    drawn = {c._size_for(0.15 + a * 0.05, 0.75 + b * 0.75) for a, b in zip(r[:, 0], ra)}
    assert drawn == found


def test_feasibility_sweeps_the_draw_curve_not_the_corners():
    # 15x15, default targets: 35 patches at every (scale, aspect) corner but 30 in between (STYLE §4.1).
    corners = [MultiBlockMaskCollator(MaskConfig(), grid=(15, 15))._size_for(s, a)
               for s in (0.15, 0.2) for a in (0.75, 1.5)]
    assert min(h * w for h, w in corners) == 35
    with pytest.raises(ValueError, match="= 30 patches"):
        MultiBlockMaskCollator(MaskConfig(min_keep=30), grid=(15, 15))
    MultiBlockMaskCollator(MaskConfig(min_keep=29), grid=(15, 15))
    # Coupled draws never reach the (small scale, extreme aspect) corner, so I-JEPA accepts this configuration.
    cfg = dict(target_scale=(0.2, 0.5), target_aspect=(1.0, 8.0), min_keep=8)
    c = MultiBlockMaskCollator(MaskConfig(**cfg), grid=(8, 8))
    h, w = c._size_for(0.2, 8.0)
    assert h * w <= 8                                        # the unreachable corner would have been refused
    assert all(h * w > 8 for h, w in c.reachable_sizes((0.2, 0.5), (1.0, 8.0)))
    with pytest.raises(ValueError, match="min_keep=8"):      # independent draws do reach it
        MultiBlockMaskCollator(MaskConfig(**cfg, independent_scale_aspect=True), grid=(8, 8))


def test_truncation_vs_variable_length():
    (enc_t, pred_t), = _draw(n_batches=1, B=16, seed=3)
    (enc_v, pred_v), = _draw(n_batches=1, B=16, seed=3, variable_length=True)
    counts = (enc_v >= 0).sum(-1)
    assert counts.min() < counts.max()                       # contexts differ in size…
    assert enc_t.shape[-1] == counts.min() and enc_v.shape[-1] == counts.max()
    assert torch.equal(enc_t, enc_v[..., :enc_t.shape[-1]])  # …truncation keeps the top rows of each
    for row, n in zip(enc_v.reshape(-1, enc_v.shape[-1]), counts.reshape(-1)):
        assert (row[:n] >= 0).all() and (row[n:] == -1).all()
    assert torch.equal(pred_t, pred_v)  # targets share one size per batch: nothing to truncate


def test_determinism_seeds_epochs_ranks():
    a = MultiBlockMaskCollator(grid=(G, G), seed=1)
    b = MultiBlockMaskCollator(grid=(G, G), seed=1)
    for x, y in zip(a.sample_masks(4, 7), b.sample_masks(4, 7)):
        assert torch.equal(x, y)
    assert not torch.equal(a.sample_masks(4, 7)[0], a.sample_masks(4, 8)[0])
    assert not torch.equal(a.sample_masks(4, 7)[0], MultiBlockMaskCollator(grid=(G, G), seed=2).sample_masks(4, 7)[0])
    b.set_epoch(1)
    assert not torch.equal(a.sample_masks(4, 7)[1], b.sample_masks(4, 7)[1])
    # Ranks agree on block sizes (same shapes) but place blocks differently.
    r1 = MultiBlockMaskCollator(grid=(G, G), seed=1, rank=1).sample_masks(4, 7)
    r0 = a.sample_masks(4, 7)
    assert r0[1].shape == r1[1].shape and not torch.equal(r0[1], r1[1])


def _samples(n, S=28):
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(1, S, S, generator=g), "labels": torch.tensor([1.0, 0.0]), "key": f"s{i}",
             "meta": {"view": "PA", "age": None}} for i in range(n)]


def test_collate_fn_batch_and_worker_agreement(monkeypatch):
    col = MultiBlockMaskCollator(grid=(2, 2), cfg=MaskConfig(min_keep=0, target_scale=(0.25, 0.25),
                                                              context_scale=(1.0, 1.0), reach_last_row_col=True))
    batch, enc, pred = col(_samples(3))
    assert batch["image"].shape == (3, 1, 28, 28) and batch["labels"].shape == (3, 2)
    assert batch["key"] == ["s0", "s1", "s2"] and batch["meta"][0]["age"] is None
    # Worker w of W collates global batches w, w+W, …: simulated workers reproduce the single-process stream.
    ref = MultiBlockMaskCollator(grid=(G, G), seed=5)
    expected = [ref(_samples(2))[2] for _ in range(4)]
    got = {}
    for wid in (0, 1):
        worker = MultiBlockMaskCollator(grid=(G, G), seed=5)
        monkeypatch.setattr(masks_mod, "get_worker_info", lambda wid=wid: type("I", (), {"id": wid, "num_workers": 2}))
        for k in range(2):
            got[wid + 2 * k] = worker(_samples(2))[2]
    assert all(torch.equal(got[i], expected[i]) for i in range(4))


def test_real_dataloader_workers():
    col = MultiBlockMaskCollator(grid=(G, G), seed=9)
    loader = DataLoader(_samples(8), batch_size=2, num_workers=2, collate_fn=col)
    ref = MultiBlockMaskCollator(grid=(G, G), seed=9)
    for i, (batch, enc, pred) in enumerate(loader):
        exp_enc, exp_pred = ref.sample_masks(2, i)
        assert torch.equal(enc, exp_enc) and torch.equal(pred, exp_pred)
        assert batch["image"].shape == (2, 1, 28, 28)
    col.set_epoch(1)  # a new epoch gives new masks for the same batch index
    _, enc1, _ = next(iter(DataLoader(_samples(8), batch_size=2, num_workers=0, collate_fn=col)))
    assert not torch.equal(enc1, ref.sample_masks(2, 0)[0])
