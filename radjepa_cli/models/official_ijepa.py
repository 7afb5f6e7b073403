"""Official I-JEPA training checkpoints (facebookresearch/ijepa `*.pth.tar`) → our encoder, predictor, target encoder
and AdamW state, to continue pretraining from them (`radjepa pretrain --init-from`).

What differs between the official layout and ours, and how each part maps:
  - keys: DDP's `module.` prefix (dropped); otherwise both use timm's names (`blocks.N.attn.qkv`, fused qkv rows
    [q; k; v] reshaped the same way, `mlp.fc1/fc2`, `norm1/norm2`), the predictor's `predictor_*` names included;
  - the fixed sin-cos tables `pos_embed` / `predictor_pos_embed` are stored parameters there and computed buffers
    here: each is checked to BE the sin-cos table of its grid, then dropped (our models compute the table for any
    grid, so the run's image size may differ from the checkpoint's);
  - released checkpoints see RGB images normalised with ImageNet's mean/std; our pretraining sees one grey channel
    normalised as (x − mean) / std. The RGB patch embedding is folded exactly: a grey image gives the same patch
    tokens as the official model on that image replicated to RGB (`fold_rgb_patch_embed`);
  - the optimizer: official AdamW has 4 param groups (encoder weights, predictor weights, encoder biases/1-D,
    predictor biases/1-D); ours has 2 (weights, biases/1-D; encoder then predictor). Moments and per-parameter step
    counts are moved by parameter name; a parameter whose shape changed (the folded patch embedding) starts with
    fresh moments, and the returned info says which.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import torch

from radjepa_cli.models.checkpoint import IMAGENET_MEAN, IMAGENET_STD, convert_official, load_state
from radjepa_cli.models.vit import DEFAULT_MEAN, DEFAULT_STD

log = logging.getLogger(__name__)
PARTS = ("encoder", "predictor", "target_encoder")


def fold_rgb_patch_embed(weight: torch.Tensor, bias: torch.Tensor, rgb_mean=IMAGENET_MEAN, rgb_std=IMAGENET_STD,
                         mean: float = DEFAULT_MEAN, std: float = DEFAULT_STD) -> tuple[torch.Tensor, torch.Tensor]:
    """A [D, 3, p, p] patch embedding fed (g − rgb_mean_c) / rgb_std_c → a [D, 1, p, p] one fed (g − mean) / std
    giving identical outputs for every grey image g: W' = std·Σ_c W_c / s_c, b' = b − Σ_c (m_c / s_c) ΣW_c + (mean /
    std)·ΣW'."""
    m = torch.tensor(rgb_mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(rgb_std, dtype=torch.float64).view(1, 3, 1, 1)
    w = weight.double()
    folded = std * (w / s).sum(1, keepdim=True)
    b = bias.double() - (w * m / s).sum((1, 2, 3)) + (mean / std) * folded.sum((1, 2, 3))
    return folded.to(weight.dtype), b.to(bias.dtype)


def official_parts(path: str | Path, in_chans: int = 1) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """The state dicts of an official checkpoint in our layout (RGB folded to grey when in_chans == 1) and the
    checkpoint itself (for its optimizer state and epoch)."""
    obj = load_state(path)
    sds, cfg = convert_official(obj, path)
    missing = [p for p in PARTS if p not in sds]
    if missing:
        raise KeyError(f"{path}: an official I-JEPA training checkpoint needs {list(PARTS)}; {missing} missing")
    for part in ("encoder", "target_encoder"):
        sd = sds[part]
        c = sd["patch_embed.proj.weight"].shape[1]
        if c == 3 and in_chans == 1:
            sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"] = fold_rgb_patch_embed(
                sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"])
        elif c != in_chans:
            raise ValueError(f"{path} [{part}]: patch embedding has {c} input channels; this run needs {in_chans}")
    return sds, {**cfg, "raw": obj}


def check_architecture(sds: dict[str, dict[str, torch.Tensor]], model, path) -> None:
    """Refuse, naming the part and the options to pass, when the run's models differ from the checkpoint's."""
    for part in PARTS:
        ours = getattr(model, part).state_dict()
        theirs = sds[part]
        extra, missing = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
        shapes = [k for k in set(ours) & set(theirs) if ours[k].shape != theirs[k].shape]
        if extra or missing or shapes:
            raise ValueError(
                f"{path} [{part}]: cannot map onto this run's {part}: {_describe(part, theirs)} in the checkpoint, "
                f"{_describe(part, ours)} here (keys only there: {extra[:3]}, only here: {missing[:3]}, other "
                f"shapes: {sorted(shapes)[:3]}). Pass --model/--patch-size/--depth/--embed-dim or "
                "--pred-depth/--pred-dim to match the checkpoint.")


def _describe(part: str, sd: dict[str, torch.Tensor]) -> str:
    prefix = "predictor_blocks." if part == "predictor" else "blocks."
    depth = len({k.split(".")[1] for k in sd if k.startswith(prefix)})
    key = "predictor_embed.weight" if part == "predictor" else "patch_embed.proj.weight"
    width = sd[key].shape[0] if key in sd else "?"
    return f"{depth} blocks of width {width}"


def official_optimizer_names(raw: dict) -> list[list[tuple[str, str]]]:
    """(part, key) of each parameter index of the official optimizer, per group, rebuilt the way its `init_opt`
    builds the 4 groups from `named_parameters()` (= state-dict order: these models have no buffers)."""
    def split(part: str, decay: bool) -> list[tuple[str, str]]:
        sd = {k.removeprefix("module."): v for k, v in raw[part].items()}
        return [(part, k) for k, v in sd.items() if (("bias" not in k) and v.ndim != 1) == decay]
    return [split("encoder", True), split("predictor", True), split("encoder", False), split("predictor", False)]


def convert_optimizer_state(raw: dict, opt: torch.optim.Optimizer, names: dict[int, str], path
                            ) -> tuple[dict, list[str]]:
    """The official AdamW state as a state dict for our optimizer `opt` (whose params are named by
    `names[id(param)]` = "encoder.…" / "predictor.…"). Returns it and the parameters left with fresh moments."""
    osd = raw.get("opt")
    if not isinstance(osd, dict) or "param_groups" not in osd:
        raise KeyError(f"{path}: no optimizer state ('opt')")
    groups = official_optimizer_names(raw)
    if len(osd["param_groups"]) != len(groups):
        raise ValueError(f"{path} [opt]: {len(osd['param_groups'])} param groups, not the official 4")
    by_name = {}
    for i, (g, expect) in enumerate(zip(osd["param_groups"], groups)):
        if len(g["params"]) != len(expect):
            raise ValueError(f"{path} [opt]: param group {i} holds {len(g['params'])} parameters, but the checkpoint's "
                             f"{expect[0][0] if expect else '?'} has {len(expect)} for it; cannot map the state")
        for idx, (part, key) in zip(g["params"], expect):
            if idx in osd["state"] or str(idx) in osd["state"]:
                by_name[f"{part}.{key}"] = osd["state"].get(idx, osd["state"].get(str(idx)))
    ours = opt.state_dict()
    state, fresh, i = {}, [], 0
    for g in opt.param_groups:
        for p in g["params"]:
            name, st = names[id(p)], by_name.get(names[id(p)])
            if st is not None and st["exp_avg"].shape == p.shape:
                state[i] = {k: (v.to(p.dtype) if torch.is_tensor(v) and k != "step" else v) for k, v in st.items()}
            else:
                fresh.append(name)
            i += 1
    return {"state": state, "param_groups": ours["param_groups"]}, fresh


@torch.no_grad()
def load_official_training_state(model, opt: torch.optim.Optimizer | None, path: str | Path,
                                 named_params: Iterable[tuple[str, torch.nn.Parameter]] = ()) -> dict[str, Any]:
    """Load an official checkpoint into `model` (encoder / predictor / target_encoder attributes; a JEPA) and, when
    `opt` is given, its AdamW state. Returns what was mapped (epoch, AdamW step count, fresh-moment parameters)."""
    in_chans = int(model.encoder.patch_embed.proj.weight.shape[1])
    sds, info = official_parts(path, in_chans)
    check_architecture(sds, model, path)
    for part in PARTS:
        getattr(model, part).load_state_dict(sds[part], strict=True)
    out = {"source": str(path), "epoch": info.get("epoch"), "optimizer": "not loaded", "fresh_moments": []}
    if opt is not None and not info["raw"].get("opt"):
        out["optimizer"] = "not in the checkpoint: fresh AdamW state"
        log.warning(f"{path}: no optimizer state ('opt'); AdamW starts fresh")
    elif opt is not None:
        names = {id(p): n for n, p in named_params}
        sd, fresh = convert_optimizer_state(info["raw"], opt, names, path)
        opt.load_state_dict(sd)
        steps = [float(s["step"]) for s in sd["state"].values() if "step" in s]
        out.update(optimizer="loaded", fresh_moments=fresh, adamw_step=int(max(steps)) if steps else 0)
        if fresh:
            log.warning(f"{path}: optimizer moments of {fresh} do not fit their new shape; they start fresh")
    return out
