"""`radjepa probe --baselines`: the same probe (head, seeds, epochs, cache, metrics) on two encoders that learned
nothing from the data, so a probe figure always has its floor beside it (issue 15):
  random-init twin  the encoder's own architecture with random weights (`random:ENC@0`; our encoders only)
  raw pixels        the image resized to 32×32 (`pixels:32`; patch tokens = 8×8 pixel blocks for --head attentive)
Each writes OUT/baselines/<name>/ (results.json carrying `"baseline": name`), like any probe run.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from radjepa_cli.downstream.probe import ProbeConfig, run_probe
from radjepa_cli.io import write_json

PIXELS = "pixels:32"


def baseline_specs(encoder: str) -> dict[str, str]:
    """{name: encoder spec}; the random twin only where `random:` can rebuild the architecture (our run dirs,
    checkpoints, exports: a bare path or one without a zoo prefix)."""
    from radjepa_cli.models.zoo import split_spec
    prefix, _ = split_spec(encoder)
    out = {}
    if prefix == "":
        out["random-init"] = f"random:{encoder}@0"
    out["pixels"] = PIXELS
    return out


def run_baselines(cfg: ProbeConfig) -> dict[str, dict]:
    """{name: results} of every baseline probe, written under cfg.out/baselines/."""
    results = {}
    for name, spec in baseline_specs(cfg.encoder).items():
        if spec == cfg.encoder:
            continue
        bcfg = dataclasses.replace(cfg, encoder=spec, out=str(Path(cfg.out) / "baselines" / name))
        res = run_probe(bcfg)
        res["baseline"] = name
        write_json(Path(bcfg.out) / "results.json", res)
        results[name] = res
    return results
