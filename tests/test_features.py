"""Feature cache: computed once per (encoder, shards, split, transform); any change there recomputes."""
import pytest
import torch

from _downstream_shards import write_phantom_shards
from radjepa_cli.models import features as F
from radjepa_cli.models.features import FeatureSpec, extract_features
from radjepa_cli.models.vit import build_encoder
from radjepa_cli.models.zoo import OursEncoder, load_encoder


def tiny(seed: int) -> OursEncoder:
    """A 2-block ViT-tiny at 32 px (the machine is shared: keep encoders small)."""
    torch.manual_seed(seed)
    return OursEncoder(f"tiny{seed}", build_encoder("vit_tiny", img_size=32, patch_size=16, depth=2))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_phantom_shards(tmp_path_factory.mktemp("ph"), n=16, size=48)


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = F.compute_features

    def spy(*a, **k):
        calls.append(a[2])
        return real(*a, **k)
    monkeypatch.setattr(F, "compute_features", spy)
    return calls


def test_cache_hit_returns_the_same_features(shards, tmp_path, counted):
    enc = tiny(0)
    spec = FeatureSpec(image_size=32)
    a = extract_features(enc, shards, "train", spec, cache_dir=tmp_path, progress=False)
    b = extract_features(enc, shards, "train", spec, cache_dir=tmp_path, progress=False)
    assert counted == ["train"] and not a.from_cache and b.from_cache
    assert a.keys == b.keys and a.meta == b.meta and b.pooled.dtype == torch.float16
    fresh = F.compute_features(enc, shards, "train", spec, progress=False)
    torch.testing.assert_close(b.pooled.float(), fresh.pooled.float())
    assert set(b.meta[0]) == set(F.META_FIELDS) and "labels" in b.meta[0]


def test_changed_encoder_transform_or_shards_recompute(shards, tmp_path, counted):
    spec = FeatureSpec(image_size=32)
    e0, e1 = tiny(0), tiny(1)
    extract_features(e0, shards, "test", spec, cache_dir=tmp_path, progress=False)
    extract_features(e1, shards, "test", spec, cache_dir=tmp_path, progress=False)  # other weights
    extract_features(e0, shards, "test", FeatureSpec(image_size=48), cache_dir=tmp_path, progress=False)
    extract_features(e0, shards, "val", spec, cache_dir=tmp_path, progress=False)  # other split
    assert len(counted) == 4
    # same weights, other preprocessing → other fingerprint
    e2 = tiny(0)
    e2.preprocessing = type(e2.preprocessing)(size=32, mean=(0.4,), std=(0.25,))
    e2._fingerprint = None
    assert e2.fingerprint != e0.fingerprint
    # changed shard contents (new checksum in the manifest) → another key
    assert F.shards_fingerprint(shards, "test") != F.shards_fingerprint(shards, "train")
    key = F.cache_key(e0.fingerprint, F.shards_fingerprint(shards, "test"), "test", spec)
    key2 = F.cache_key(e0.fingerprint, "different-shards", "test", spec)
    assert key != key2


def test_layers_and_masks_are_cached(shards, tmp_path):
    enc = tiny(0)
    spec = FeatureSpec(image_size=32, layers=(0, 1), mask_names=("lung_right", "lung_left"))
    fs = extract_features(enc, shards, "test", spec, cache_dir=tmp_path, progress=False)
    again = extract_features(enc, shards, "test", spec, cache_dir=tmp_path, progress=False)
    assert again.from_cache
    l1, l11 = again.layers((0, 1))
    assert l1.shape == (len(fs), 192, 2, 2) and not torch.equal(l1, l11)
    assert again.tensors["masks"].shape == (len(fs), 2, 32, 32) and again.tensors["masks"].dtype == torch.uint8
    assert again.tensors["masks"].sum() > 0 and again.tensors["mask_known"].all()


def test_cache_dir_env_and_corrupt_entry(shards, tmp_path, monkeypatch, counted):
    monkeypatch.setenv("RADJEPA_CACHE", str(tmp_path / "envcache"))
    assert F.default_cache_dir() == tmp_path / "envcache"
    enc = load_encoder("pixels:16")
    fs = extract_features(enc, shards, "val", FeatureSpec(image_size=32), progress=False)
    assert fs.cache_path is not None and fs.cache_path.is_relative_to(tmp_path / "envcache")
    fs.cache_path.write_bytes(b"truncated")
    again = extract_features(enc, shards, "val", FeatureSpec(image_size=32), progress=False)
    assert not again.from_cache and len(counted) == 2
    torch.testing.assert_close(again.pooled, fs.pooled)
