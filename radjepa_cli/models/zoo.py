"""The encoder zoo: one frozen-encoder interface over our runs, baselines and Hugging Face models.

`load_encoder(spec)` returns a `FrozenEncoder`: it takes chest X-rays as [B, 1, H, W] in [0, 1] (what the data
loader yields), applies the encoder's own preprocessing (resolution, normalisation, 1→3 channels) and returns
patch tokens [B, N, D], a pooled embedding [B, D'] and the patch grid; `intermediate` gives block feature maps
for the ViTDet / UPerNet decoders. Everything loads from local files (or the HF cache); nothing is downloaded.

Spec names (also printed by `radjepa probe --help`):
  RUN_DIR | CKPT.pt | EXPORT_DIR     an encoder of ours (`radjepa pretrain` run dir, checkpoint, `radjepa export` dir)
  random:vit_tiny[@SEED][:SIZE/PATCH] the random-init twin (same architecture, untrained); random:RUN_DIR[@SEED]
                                     copies the architecture of a run
  pixels:32                          raw-pixel baseline: image resized to 32×32 (pooled = the flattened pixels,
                                     patch tokens = 8×8 pixel blocks)
  ijepa:PATH_OR_ID                   Hugging Face IJepaModel
  ijepa-official:FILE.pth            an official I-JEPA (facebookresearch/ijepa) checkpoint
  dinov2:PATH_OR_ID                  Hugging Face Dinov2Model (DINOv2)
  rad-dino:PATH_OR_ID                RAD-DINO (a Dinov2Model with its own preprocessing)
  clip:PATH_OR_ID                    Hugging Face CLIPVisionModel (CLIP and CLIP-format medical encoders)
  radjepa-release:PATH               the RadJEPA release directory (custom code: needs --trust-remote-code)
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch

from radjepa_cli.models import zoo_hf
from radjepa_cli.models.frozen import (  # noqa: F401 - re-exported: the zoo is where callers find encoders
    ZOO_VERSION, EncoderOutput, FrozenEncoder, OursEncoder, PixelsEncoder, Preprocess, weights_fingerprint)
from radjepa_cli.models.vit import DEFAULT_MEAN, DEFAULT_STD, build_encoder

ENCODER_SPEC_HELP = (
    "Encoder: a run dir / checkpoint / export dir of ours; random:vit_tiny@SEED:SIZE/PATCH or random:RUN_DIR@SEED "
    "(random-init twin, seed and size optional); pixels:32 (raw-pixel baseline); ijepa:PATH (HF IJepaModel); ijepa-official:FILE.pth; "
    "dinov2:PATH; rad-dino:PATH; clip:PATH (HF CLIPVisionModel); radjepa-release:PATH (needs --trust-remote-code). "
    "PATH is a local directory or a model id already in the Hugging Face cache: nothing is downloaded."
)

# ---- spec parsing and our own encoders ----------------------------------------------------------------------------

_RANDOM_RE = re.compile(r"^(?P<what>[^@:]+|.+?)(?:@(?P<seed>\d+))?(?::(?P<size>\d+)/(?P<patch>\d+))?$")


def _load_random(arg: str) -> FrozenEncoder:
    m = _RANDOM_RE.match(arg)
    if not m:
        raise ValueError(f"random:{arg}: expected random:MODEL[@SEED][:SIZE/PATCH] or random:RUN_DIR[@SEED]")
    what, seed = m["what"], int(m["seed"] or 0)
    from radjepa_cli.models.vit import ENCODER_PRESETS
    if what in ENCODER_PRESETS:
        kw = {"model": what, "img_size": int(m["size"] or 224), "patch_size": int(m["patch"] or 14), "in_chans": 1}
        mean, std = DEFAULT_MEAN, DEFAULT_STD
    else:
        path = Path(what)
        if not path.exists():
            raise FileNotFoundError(f"random:{arg}: {what!r} is neither a model preset "
                                    f"({', '.join(ENCODER_PRESETS)}) nor an existing run dir")
        from radjepa_cli.models.checkpoint import build_encoder_from_config
        cfg = _read_encoder_config(path if path.is_dir() else path.parent)
        if m["size"]:
            cfg.update(img_size=int(m["size"]), patch_size=int(m["patch"]))
        mean, std = cfg.get("mean", DEFAULT_MEAN), cfg.get("std", DEFAULT_STD)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit = build_encoder(**kw) if what in ENCODER_PRESETS else build_encoder_from_config(cfg)
    return OursEncoder(f"random:{arg}", vit, mean, std)


def _read_encoder_config(run_dir: Path) -> dict:
    p = run_dir / "encoder_config.json"
    if not p.is_file():
        raise FileNotFoundError(f"{run_dir}: expected encoder_config.json (a `radjepa pretrain` run dir or "
                                "`radjepa export` dir)")
    return json.loads(p.read_text())


def _load_ours(path: str) -> FrozenEncoder:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"encoder {path!r}: no such file or directory; expected a run dir, checkpoint or "
                                f"export dir of ours, or a prefixed spec. {ENCODER_SPEC_HELP}")
    from radjepa_cli.models.checkpoint import load_encoder_checkpoint  # run dir / .pt / export dir
    vit, info = load_encoder_checkpoint(p)
    return OursEncoder(str(path), vit, info.get("mean", DEFAULT_MEAN), info.get("std", DEFAULT_STD))


def split_spec(spec: str) -> tuple[str, str]:
    """'dinov2:/x' → ('dinov2', '/x'); a bare path → ('', path). Windows drive letters are not prefixes."""
    m = re.match(r"^([a-z][a-z0-9-]+):(.*)$", spec)
    if m and len(m[1]) > 1:
        return m[1], m[2]
    return "", spec


def load_encoder(spec: str, *, device: str | torch.device = "cpu", trust_remote_code: bool = False) -> FrozenEncoder:
    """Build a frozen encoder from a spec (see the module docstring / ENCODER_SPEC_HELP)."""
    prefix, arg = split_spec(spec.strip())
    if prefix and not arg:
        raise ValueError(f"encoder spec {spec!r} has an empty argument after '{prefix}:'")
    if prefix == "":
        enc = _load_ours(arg)
    elif prefix == "random":
        enc = _load_random(arg)
    elif prefix == "pixels":
        if not arg.isdigit():
            raise ValueError(f"pixels:{arg}: expected pixels:SIZE, e.g. pixels:32")
        enc = PixelsEncoder(int(arg))
    else:
        if prefix not in zoo_hf.LOADERS:
            raise ValueError(f"unknown encoder prefix {prefix!r} in {spec!r}. {ENCODER_SPEC_HELP}")
        enc = zoo_hf.LOADERS[prefix](arg, trust_remote_code=trust_remote_code)
        enc.name = spec
    return enc.to(device)


# ---- encoder references: what a saved model records, and loading it back ------------------------------------------

class EncoderMismatchError(ValueError):
    """The encoder found at a recorded (or user-given) location is not the one a saved head was trained on."""


def absolute_spec(spec: str) -> str:
    """The spec with its local path made absolute (so a saved model still finds it from another working dir);
    specs without a local path (pixels:32, random:vit_tiny, an HF-cache id) are returned unchanged."""
    prefix, arg = split_spec(spec.strip())
    what, rest = arg, ""
    if prefix == "pixels":
        return spec
    if prefix == "random":
        m = _RANDOM_RE.match(arg)
        if m is None:
            return spec
        what, rest = m["what"], arg[len(m["what"]):]
    p = Path(what).expanduser()
    if not p.exists():
        return spec
    return f"{prefix + ':' if prefix else ''}{p.resolve()}{rest}"


def encoder_reference(encoder: FrozenEncoder, spec: str) -> dict:
    """What a saved head records about its encoder: the spec as typed, the same spec with absolute paths, and
    the fingerprint (sha256 of weights + preprocessing + pooling) that must match when the head is used again."""
    return {"spec": spec, "spec_absolute": absolute_spec(spec), "name": encoder.name,
            "fingerprint": encoder.fingerprint, "embed_dim": encoder.embed_dim, "pooled_dim": encoder.pooled_dim,
            "num_layers": encoder.num_layers, "pooling": encoder.pooling, "image_size": encoder.image_size,
            "preprocessing": dataclasses.asdict(encoder.preprocessing)}


def load_referenced_encoder(ref: dict, *, where: str, override: str | None = None,
                            device: str | torch.device = "cpu", trust_remote_code: bool = False) -> FrozenEncoder:
    """Load the encoder a reference names (its absolute spec first, then the spec as typed, relative to the
    working dir), or `override` (a new location of the same encoder); refuse one whose fingerprint differs."""
    want = ref["fingerprint"]
    tried = [override] if override else list(dict.fromkeys([ref.get("spec_absolute") or ref["spec"], ref["spec"]]))
    missing = []
    for spec in tried:
        try:
            enc = load_encoder(spec, device=device, trust_remote_code=trust_remote_code)
        except FileNotFoundError as e:
            missing.append(str(e))
            continue
        if enc.fingerprint != want:
            raise EncoderMismatchError(
                f"{where}: encoder {spec!r} is not the one this model was trained on: its checksum is "
                f"{enc.fingerprint[:16]}…, the model expects {want[:16]}… (its weights, preprocessing or pooling "
                f"changed since training). Point --encoder at the original weights, or retrain the head.")
        return enc
    if override:
        raise FileNotFoundError(f"{where}: --encoder {override!r} cannot be loaded: {missing[0]}")
    raise FileNotFoundError(
        f"{where}: the encoder this model was trained on, {ref['spec']!r} (recorded as {tried[0]!r}), cannot be "
        f"loaded: {'; '.join(missing)}. If it moved, pass --encoder NEW_LOCATION (its checksum "
        f"{want[:16]}… is checked).")
