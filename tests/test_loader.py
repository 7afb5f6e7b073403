"""The shard loader: records, batches, label/mask tensors, identical image/mask transforms, rank/worker splits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures.shard_factory import blocky_record, make_shards
from radjepa_cli.data.loader import (consumer_range, iter_records, make_loader, read_manifest, shard_paths)
from radjepa_cli.io import read_json, write_json


@pytest.fixture
def shards(tmp_path):
    keys = make_shards(tmp_path, {"train": [5, 3, 4], "val": [3]})
    return tmp_path, keys


def test_iter_records_roundtrip(shards):
    root, keys = shards
    recs = list(iter_records(root))
    assert [r.key for r in recs] == keys
    ref = blocky_record(0)
    assert np.abs(recs[0].image - ref.image).max() <= 0.5 / 255 + 1e-6
    assert recs[0].labels == ref.labels and recs[0].masks["bright"].sum() == ref.masks["bright"].sum()
    assert [p.name for p in shard_paths(root, "val")] == ["val-000000.tar"]
    assert len(list(iter_records(root, "train", with_masks=False))) == 12


def test_eval_batches_contract(shards):
    root, keys = shards
    batches = list(make_loader(root, split="train", batch_size=5, image_size=48, label_names=["A", "B", "C"],
                               mask_names=["bright", "absent"]))
    b = batches[0]
    assert b["image"].shape == (5, 1, 48, 48) and b["image"].dtype == torch.float32
    assert 0 <= b["image"].min() and b["image"].max() <= 1
    assert b["labels"].shape == (5, 3) and b["label_known"].dtype == torch.bool
    # A cycles 1, 0, -1 (masked as uncertain), None; B = i % 2; C never given
    assert b["label_known"][:, 0].tolist() == [True, True, False, False, True]
    assert b["labels"][:, 1].tolist() == [0, 1, 0, 1, 0] and not b["label_known"][:, 2].any()
    assert b["masks"].shape == (5, 2, 48, 48) and b["mask_known"][:, 0].all() and not b["mask_known"][:, 1].any()
    assert [k for bb in batches for k in bb["key"]] == keys[:12]  # eval: deterministic manifest order
    assert b["meta"][0]["findings"] == "finding 0"


def test_positive_uncertain_policy(shards):
    root, _ = shards
    b = next(iter(make_loader(root, split="train", batch_size=4, image_size=32, label_names=["A"],
                              uncertain="positive")))
    assert b["labels"][:, 0].tolist() == [1, 0, 1, 0] and b["label_known"][:, 0].tolist() == [True, True, True, False]


@pytest.mark.parametrize("hflip", [False, True])
def test_train_crops_move_masks_with_the_image(shards, hflip):
    root, _ = shards
    flipped = 0
    for epoch in range(3):
        for b in make_loader(root, split="train", batch_size=4, image_size=32, train=True, mask_names=["bright"],
                             hflip=hflip, epoch=epoch):
            img, mask = b["image"][:, 0], b["masks"][:, 0]
            agree = ((img > 0.5) == (mask > 0.5)).float().mean()
            assert agree > 0.9, agree  # same crop/flip for image and mask (only block edges may differ)
            left, right = img[..., :16].mean((1, 2)), img[..., 16:].mean((1, 2))
            flipped += int((left < right).sum())
    assert (flipped > 0) == hflip  # the bright left half never swaps sides without hflip


def test_shuffle_is_seeded_by_seed_and_epoch(shards):
    root, _ = shards
    def order(**kw):
        return [k for b in make_loader(root, split="train", batch_size=3, image_size=16, train=True, **kw)
                for k in b["key"]]
    a = order(seed=1, epoch=0)
    assert a == order(seed=1, epoch=0) and sorted(a) == sorted(order(seed=1, epoch=1))
    assert a != order(seed=1, epoch=1) and a != order(seed=2, epoch=0)


@pytest.mark.parametrize("world,workers", [(2, 2), (3, 1), (1, 2)])
def test_ranks_and_workers_see_disjoint_samples(shards, world, workers):
    root, keys = shards  # 3 train shards: fewer than ranks x workers in some cases → sample-level split
    seen = []
    for rank in range(world):
        ks = [k for b in make_loader(root, split="train", batch_size=2, image_size=16, train=True, rank=rank,
                                     world_size=world, num_workers=workers, seed=3) for k in b["key"]]
        seen.append(ks)
    flat = [k for ks in seen for k in ks]
    assert len(flat) == len(set(flat))                      # nobody sees a sample twice
    assert len({len(ks) for ks in seen}) == 1               # equal per rank: DDP steps stay in lockstep
    assert len(flat) == (12 // world) * world and set(flat) <= set(keys[:12])


def test_consumer_range_partitions():
    for total in (0, 1, 7, 100):
        for world in (1, 2, 3):
            for workers in (1, 4):
                spans = [consumer_range(total, r, world, w, workers) for r in range(world) for w in range(workers)]
                covered = [i for a, b in spans for i in range(a, b)]
                assert len(covered) == len(set(covered)) == (total // world * world if world > 1 else total)


def test_collate_hook_and_incomplete_manifest(shards):
    root, _ = shards
    calls = []
    def collate(samples):
        calls.append(len(samples))
        return {"n": len(samples), "keys": [s["key"] for s in samples]}
    out = list(make_loader(root, split="val", batch_size=2, image_size=16, collate_fn=collate))
    assert calls == [2, 1] and out[0]["n"] == 2
    m = read_json(root / "manifest.json")
    m["complete"] = False
    write_json(root / "manifest.json", m)
    with pytest.raises(ValueError, match="not complete"):
        read_manifest(root)
    with pytest.raises(ValueError, match="not complete"):
        make_loader(root, split="val", batch_size=2)


def test_crop_scale_sets_the_random_resized_crop_area(tmp_path):
    from radjepa_cli.data.transforms import random_resized_crop_params
    rng = np.random.default_rng(0)
    areas = [h * w / (200 * 200) for _, _, h, w in
             (random_resized_crop_params(rng, 200, 200, scale=(0.5, 0.6)) for _ in range(200))]
    assert 0.49 <= min(areas) and max(areas) <= 0.61
    make_shards(tmp_path, {"train": [4]})
    with pytest.raises(ValueError, match="crop_scale"):
        make_loader(tmp_path, split="train", batch_size=2, train=True, crop_scale=(0.0, 1.0))


def test_uint8_batches_match_the_float_path_within_one_grey_level(shards):
    # The pretraining loader resizes in uint8 (torch's fixed-point kernel); the departure from the float path
    # must stay within rounding: ≤ 1 grey level anywhere, ~¼ level on average, same crops, flips and masks.
    root, _ = shards
    kw = dict(split="train", batch_size=4, image_size=48, train=True, hflip=True, epoch=1, seed=5,
              mask_names=["bright"])
    for f, u in zip(make_loader(root, **kw), make_loader(root, uint8=True, **kw), strict=True):
        assert u["image"].dtype == torch.uint8 and f["image"].dtype == torch.float32 and u["key"] == f["key"]
        diff = (f["image"] * 255 - u["image"].float()).abs()
        assert diff.max() <= 1 + 1e-3 and diff.mean() < 0.5, (diff.max(), diff.mean())
        assert torch.equal(u["masks"], f["masks"])


def test_prefetch_and_pinning_reach_the_dataloader(shards):
    root, _ = shards
    dl = make_loader(root, split="train", batch_size=2, num_workers=1, pin_memory=True)
    assert dl.prefetch_factor == 4
    assert dl.pin_memory == torch.cuda.is_available()     # pinning without CUDA would fail or waste a thread


def test_loader_benchmark_cli_reports_every_stage_and_the_step_ratio(shards, tmp_path, capsys):
    # The device check calls this CLI; it must keep its flags and table.
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import loader as bench
    root, _ = shards
    res = bench.main(["--shards", str(root), "--n", "12", "--workers", "0", "1", "--image-size", "224", "--batch",
                      "4", "--step-images-per-s", "1000", "--out", str(tmp_path / "o")])
    stages = {(r["stage"], r["path"]) for r in res["results"]}
    for stage in ("decode", "crop/resize", "collate"):
        assert {(stage, "old"), (stage, "new")} <= stages
    assert {("read", "both"), ("masks", "both"), ("decode", "raw*"), ("decode", "png0*")} <= stages
    e2e = [(r["workers"], r["path"], r["n"]) for r in res["results"] if r["stage"] == "end-to-end"]
    assert e2e == [(0, "old", 12), (0, "new", 12), (1, "old", 12), (1, "new", 12)]
    assert read_json(tmp_path / "o" / "loader.json")["step_images_per_s"] == 1000
    assert "÷ step" in capsys.readouterr().out


def test_drop_last_never_starves_workers_into_an_empty_epoch(shards):
    # 12 train samples, batch 4: with 4 workers each held 3 samples and dropped them all (0 batches). The pretrain
    # default now sizes workers from the cores (16 on the GPU machine), so small sets must still yield batches.
    root, _ = shards
    with pytest.warns(UserWarning, match="3 loader worker"):
        batches = list(make_loader(root, split="train", batch_size=4, num_workers=4, drop_last=True, train=True))
    assert len(batches) == 3 and all(len(b["key"]) == 4 for b in batches)


def test_uint8_batches_from_16_bit_pngs_are_the_float_path_rounded(tmp_path):
    from radjepa_cli.data.shards import ShardWriter, encode_record
    with ShardWriter(tmp_path / "train-000000.tar") as w:   # a bare folder of tars: counts come from the tar
        for i in range(4):
            rec = blocky_record(i)
            w.write(rec.key, encode_record(rec, 64, bits=16))
    kw = dict(split="train", batch_size=4, image_size=40, train=True, seed=2)
    f, u = next(iter(make_loader(tmp_path, **kw))), next(iter(make_loader(tmp_path, uint8=True, **kw)))
    assert u["image"].dtype == torch.uint8 and torch.equal(u["image"], (f["image"] * 255).round().to(torch.uint8))
