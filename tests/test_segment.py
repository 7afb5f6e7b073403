"""Segmentation: decoders, Dice, laterality-safe augmentation, and the `segment` run end to end."""
import json

import pytest
import torch
import torch.nn.functional as F

from _downstream_shards import write_phantom_shards
from radjepa_cli.data.labels import LUNG_ZONES, LUNGS, RIBS
from radjepa_cli.downstream.augment import AugmentConfig, augment, lr_swap_permutation
from radjepa_cli.downstream.decoders import build_decoder, default_layers
from radjepa_cli.downstream.segment import SegmentConfig, dice_per_structure, run_segment, train_decoder


@pytest.mark.parametrize("name", ["linear", "vitdet", "upernet"])
def test_decoders_shapes_and_gradients(name):
    dec = build_decoder(name, in_dim=32, num_classes=3, channels=16)
    feats = [torch.randn(2, 32, 4, 4, requires_grad=True) for _ in range(4 if name == "upernet" else 1)]
    out = dec(feats, (32, 32))
    assert out.shape == (2, 3, 32, 32)
    out.mean().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)


def test_default_layers_follow_the_paper():
    assert default_layers(12) == (3, 5, 7, 11)
    assert default_layers(24) == (7, 11, 15, 23)
    assert len(default_layers(2)) == 4 and max(default_layers(2)) == 1


def test_dice():
    truth = torch.zeros(2, 2, 8, 8, dtype=torch.bool)
    truth[:, 0, :4] = True  # 32 px
    pred = torch.zeros_like(truth)
    pred[:, 0, :2] = True  # 16 px inside → Dice = 2*16/(16+32)
    known = torch.ones(2, 2, dtype=torch.bool)
    d = dice_per_structure(pred, truth, known)
    assert d[0] == pytest.approx(2 / 3) and d[1] is None  # structure 1 absent everywhere: undefined


def test_lr_swap_and_flip_keep_laterality():
    assert lr_swap_permutation(LUNGS) == [1, 0]
    assert [LUNG_ZONES[i] for i in lr_swap_permutation(LUNG_ZONES)] == [
        "left_upper", "left_middle", "left_lower", "right_upper", "right_middle", "right_lower"]
    assert [RIBS[i] for i in lr_swap_permutation(RIBS)][:2] == ["L1", "L2"]
    img = torch.zeros(1, 1, 8, 8)
    img[..., :, :3] = 1.0  # bright band on the image's left
    masks = torch.zeros(1, 2, 8, 8)
    masks[:, 0, :, :3] = 1  # "lung_right" sits on the image's left in a PA view
    flip_only = AugmentConfig(hflip=True, degrees=0, translate=0, scale=(1, 1), shear=0, brightness=0, contrast=0)
    g = torch.Generator().manual_seed(0)
    for _ in range(8):  # some draws flip, some do not
        out, m, was_flipped = augment(img, masks, flip_only, g, flip_perm=[1, 0])
        flipped = out[0, 0, 0, -1] > 0.5
        assert bool(was_flipped[0]) == bool(flipped)
        assert torch.equal(out[0, 0] > 0.5, (img.flip(-1) if flipped else img)[0, 0] > 0.5)
        # after a mirror the band is the patient's LEFT lung (channel 1) on the image's right
        assert torch.equal(m[0, 1 if flipped else 0] > 0.5, out[0, 0] > 0.5)
    with pytest.raises(ValueError, match="flip_perm"):
        for _ in range(8):
            augment(img, masks, flip_only, g)


def test_decoder_learns_masks_from_informative_features():
    """Features that encode the mask at patch level → the linear decoder reaches a high Dice; noise does not."""
    g = torch.Generator().manual_seed(0)
    n, s = 48, 32
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    cx = torch.randint(8, 24, (n,), generator=g)
    masks = torch.stack([((xx[None] - c).abs() < 6) & ((yy[None] - 16).abs() < 10) for c in cx]).to(torch.uint8)
    informative = F.avg_pool2d(masks.float(), 4).repeat(1, 8, 1, 1) + 0.1 * torch.randn(n, 8, 8, 8, generator=g)
    known = torch.ones(n, 1, dtype=torch.bool)
    cfg = SegmentConfig(shards="", encoder="", out="", decoder="linear", epochs=25, lr=5e-2, batch_size=16)
    scores = {}
    for name, feats in (("informative", informative), ("noise", torch.randn(n, 8, 8, 8, generator=g))):
        dec, hist = train_decoder(cfg, 0, 8, 1, ([feats[:32]], masks[:32], known[:32]), None, torch.device("cpu"))
        with torch.no_grad():
            pred = torch.sigmoid(dec([feats[32:]], (s, s))) > 0.5
        scores[name] = dice_per_structure(pred, masks[32:].bool(), known[32:])[0]
        assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert scores["informative"] > 0.85 and scores["informative"] > scores["noise"] + 0.2


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_phantom_shards(tmp_path_factory.mktemp("ph"), n=24, size=48)


def test_segment_end_to_end_schema(shards, tmp_path):
    out = tmp_path / "seg"
    cfg = SegmentConfig(shards=str(shards), encoder="pixels:16", out=str(out), decoder="upernet", task="lungs",
                        seeds=2, epochs=1, channels=8, batch_size=8, image_size=32, device="cpu", progress=False,
                        cache_dir=str(tmp_path / "cache"), overlays=2)
    r = run_segment(cfg)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(r))
    assert {"kind", "encoder", "decoder", "task", "structures", "per_structure", "mean_dice", "per_seed",
            "config"} <= set(r)
    assert r["kind"] == "segment" and r["structures"] == list(LUNGS) and len(r["per_seed"]) == 2
    for s in r["structures"]:
        assert set(r["per_structure"][s]) == {"dice_mean", "dice_std"} and 0 <= r["per_structure"][s]["dice_mean"] <= 1
    assert set(r["mean_dice"]) == {"mean", "std"} and r["layers"] == [0, 0, 0, 0]
    assert (out / "overlays.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="UPerNet takes 4 blocks"):
        run_segment(SegmentConfig(**{**cfg.__dict__, "layers": (0, 0), "out": str(tmp_path / "bad")}))
    with pytest.raises(ValueError, match="unknown task"):
        run_segment(SegmentConfig(**{**cfg.__dict__, "task": "heart", "out": str(tmp_path / "bad")}))


def test_segment_augment_mode_ribs(shards, tmp_path):
    cfg = SegmentConfig(shards=str(shards), encoder="pixels:16", out=str(tmp_path / "ribs"), decoder="linear",
                        task="ribs", seeds=1, epochs=1, batch_size=8, image_size=32, device="cpu", progress=False,
                        augment=True, use_cache=False, overlays=0)
    r = run_segment(cfg)
    assert r["task"] == "ribs" and len(r["structures"]) > 10
