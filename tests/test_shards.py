"""Shard codec and writer: round trips, 8/16-bit, mask resizing, atomic and byte-reproducible tars, manifests."""
from __future__ import annotations

import tarfile

import numpy as np
import pytest

from fixtures.shard_factory import blocky_record, make_shards
from radjepa_cli.data import manifest as mf
from radjepa_cli.data.shards import (ShardWriter, decode_png, decode_sample, encode_png, encode_record, iter_tar,
                                     resize_mask, resize_shorter)


def test_resize_shorter_side_and_masks_stay_binary():
    img = np.random.default_rng(0).random((300, 200)).astype(np.float32)
    out = resize_shorter(img, 64)
    assert out.shape == (96, 64) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    # antialiased: a 300x200 noise image averages out when shrunk (plain subsampling would keep the variance)
    assert out.std() < 0.5 * img.std()
    m = resize_mask(img > 0.5, out.shape)
    assert m.dtype == bool and m.shape == out.shape and 0.3 < m.mean() < 0.7


@pytest.mark.parametrize("bits,tol", [(8, 0.5 / 255), (16, 0.5 / 65535)])
def test_png_roundtrip_precision(bits, tol):
    x = np.random.default_rng(1).random((20, 30)).astype(np.float32)
    y = decode_png(encode_png(x, bits))
    assert y.shape == x.shape and np.abs(y - x).max() <= tol + 1e-7


def test_record_roundtrip_through_a_tar(tmp_path):
    rec = blocky_record(3, size=64)
    with ShardWriter(tmp_path / "train-000000.tar") as w:
        w.write(rec.key, encode_record(rec, 32))
    [(key, files)] = list(iter_tar(tmp_path / "train-000000.tar"))
    assert key == rec.key and set(files) == {"png", "json", "masks.npz"}
    back = decode_sample(key, files)
    assert back.image.shape == (32, 32) and back.masks["bright"].shape == (32, 32)
    assert back.labels == rec.labels and back.findings == rec.findings and back.patient == rec.patient
    with tarfile.open(tmp_path / "train-000000.tar") as t:
        assert all(m.mtime == 0 for m in t.getmembers())


def test_writer_is_atomic_and_reproducible(tmp_path):
    recs = [blocky_record(i) for i in range(3)]
    shas = []
    for name in ("a.tar", "b.tar"):
        with ShardWriter(tmp_path / name) as w:
            for r in recs:
                w.write(r.key, encode_record(r, 64))
        shas.append(w.sha256)
    assert shas[0] == shas[1]  # same inputs → same bytes: reruns can verify finished shards by sha256
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "c.tar") as w:
            w.write(recs[0].key, encode_record(recs[0], 64))
            raise RuntimeError("crash mid-shard")
    assert not (tmp_path / "c.tar").exists() and not list(tmp_path.glob(".c.tar*"))
    with pytest.raises(ValueError, match="must not contain"):
        ShardWriter(tmp_path / "d.tar").write("bad.key", {"png": b""})


def test_manifest_counts_and_merge(tmp_path):
    make_shards(tmp_path, {"train": [3, 2], "val": [2]})
    m = mf.merge_manifests([__import__("json").loads((tmp_path / "manifest.json").read_text())])
    assert m["counts"]["split"] == {"train": 5, "val": 2} and m["counts"]["total"] == 7
    assert m["counts"]["dataset"]["toy"]["train"] == {"PA": 5}
    lab = m["labels"]["train"]["B"]  # B = i % 2 for i = 0..4 → 2 positives, 3 negatives
    assert (lab["positive"], lab["negative"], lab["prevalence"]) == (2, 3, 0.4)
    a = m["labels"]["train"]["A"]  # A cycles 1, 0, -1, None
    assert (a["positive"], a["negative"], a["uncertain"], a["unknown"]) == (2, 1, 1, 1)
    assert m["mask_names"] == ["bright"]


def test_merge_manifests_checks_parts():
    def part(i, n, names, fp="f", complete=True):
        shards = [{"name": nm, "split": "train", "samples": 1, "sha256": "x", "bytes": 1, "views": {"PA": 1},
                   "datasets": {"d": {"PA": 1}}, "labels": {}, "masks": [], "rejected": []} for nm in names]
        return mf.build_manifest({"part": f"{i}/{n}"}, fp, shards, {}, complete, (i, n), len(names))
    merged = mf.merge_manifests([part(0, 2, ["train-000000.tar"]), part(1, 2, ["train-000001.tar"])])
    assert merged["complete"] and merged["counts"]["total"] == 2 and len(merged["shards"]) == 2
    assert not mf.merge_manifests([part(0, 2, ["train-000000.tar"])])["complete"]  # part 1 missing
    assert not mf.merge_manifests([part(0, 2, ["a.tar"]), part(1, 2, ["b.tar"], complete=False)])["complete"]
    with pytest.raises(ValueError, match="different"):
        mf.merge_manifests([part(0, 2, ["a.tar"]), part(1, 2, ["b.tar"], fp="g")])
    with pytest.raises(ValueError, match="overlap"):
        mf.merge_manifests([part(0, 2, ["a.tar"]), part(1, 2, ["a.tar"])])


@pytest.mark.parametrize("bits", [8, 16])
def test_libpng_decode_equals_the_pil_decode(bits, monkeypatch):
    import io

    import torch
    from PIL import Image

    from radjepa_cli.data import shards
    data = encode_png(np.random.default_rng(2).random((21, 33)).astype(np.float32), bits)
    with Image.open(io.BytesIO(data)) as img:   # what the loader decoded before torchvision.io
        pil = np.asarray(img, dtype=np.int32 if bits == 16 else np.uint8).astype(np.float32) / (2 ** bits - 1)
    fast = shards._decode_png_torchvision(data)
    assert fast is not None and fast.dtype == (torch.uint8 if bits == 8 else torch.uint16)
    assert np.array_equal(decode_png(data), pil)
    monkeypatch.setattr(shards, "_decode_png_torchvision", lambda _: None)   # no torchvision: the PIL fallback
    slow = shards.decode_png_raw(data)
    assert slow.dtype == fast.dtype and torch.equal(slow.to(torch.int32), fast.to(torch.int32))
    assert np.array_equal(decode_png(data), pil)


def test_level_0_pngs_decode_to_the_same_pixels_and_are_larger():
    # level 0 trades bytes for decode speed (benchmarks/loader.py); the pixels must not change
    x = np.random.default_rng(3).random((40, 40)).astype(np.float32)
    x[:, :20] = 0.5                                     # a flat half, so level 2 has something to compress
    stored, deflated = encode_png(x, 8, level=0), encode_png(x, 8)
    assert len(stored) > len(deflated)
    assert np.array_equal(decode_png(stored), decode_png(deflated))
