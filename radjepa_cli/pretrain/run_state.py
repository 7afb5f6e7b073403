"""The run directory: checkpoints (atomic, I-JEPA-compatible keys), exact-resume state and the run markers.

RUN/
  config.json            resolved PretrainConfig           encoder_config.json   to rebuild the encoder
  checkpoints/latest.pt  every `ckpt_every` steps          checkpoints/step_0001000.pt   milestones
  metrics.jsonl  tb/     telemetry                          COMPLETE | FAILED.json  how the run ended

A checkpoint is a plain dict loadable with torch.load(weights_only=True): `encoder, predictor, target_encoder,
opt, scaler, epoch, loss, batch_size, world_size, lr` as in I-JEPA (weights without the DDP `module.` prefix),
plus what exact resume needs: `step`, `batch_in_epoch`, per-rank `rng` states and the monitors' state.
"""
from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radjepa_cli.io import read_json, write_json

FORMAT_VERSION = 1
_MILESTONE = re.compile(r"^step_(\d{7,})\.pt$")


def ckpt_dir(run: str | Path) -> Path:
    return Path(run) / "checkpoints"


def latest_path(run: str | Path) -> Path:
    return ckpt_dir(run) / "latest.pt"


def milestone_path(run: str | Path, step: int) -> Path:
    return ckpt_dir(run) / f"step_{step:07d}.pt"


def list_milestones(run: str | Path) -> list[Path]:
    d = ckpt_dir(run)
    found = [(int(m.group(1)), p) for p in d.glob("step_*.pt") if (m := _MILESTONE.match(p.name))] if d.is_dir() else []
    return [p for _, p in sorted(found)]


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """torch.save into a temp file beside `path`, fsync, rename: a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; checkpoints are shared like any output
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------------- RNG
def capture_rng() -> dict[str, Any]:
    """This process's RNG states as weights_only-loadable values (tensors, ints, tuples)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


# ---------------------------------------------------------------------------------------------- checkpoints
def make_checkpoint(model, opt: torch.optim.Optimizer, *, step: int, epoch: int, batch_in_epoch: int, loss: float,
                    lr: float, batch_size: int, world_size: int, rng: list[dict], extra: dict | None = None) -> dict:
    """`model` is the unwrapped JEPA module (never the DDP wrapper, so no `module.` prefixes)."""
    return {
        "encoder": model.encoder.state_dict(),
        "predictor": model.predictor.state_dict(),
        "target_encoder": model.target_encoder.state_dict(),
        "opt": opt.state_dict(),
        "scaler": None,                      # bf16 autocast needs no GradScaler; key kept for I-JEPA tools
        "epoch": epoch, "loss": float(loss), "batch_size": batch_size, "world_size": world_size, "lr": float(lr),
        "step": step, "batch_in_epoch": batch_in_epoch, "rng": rng, "format_version": FORMAT_VERSION,
        **(extra or {}),
    }


def save_checkpoint(run: str | Path, ckpt: dict, *, milestone: bool = False, keep_milestones: int = 0) -> Path:
    """Write latest.pt (and a milestone copy); prune milestones beyond the newest `keep_milestones` (0 = keep all)."""
    path = atomic_torch_save(ckpt, latest_path(run))
    if milestone:
        atomic_torch_save(ckpt, milestone_path(run, ckpt["step"]))
        if keep_milestones > 0:
            for old in list_milestones(run)[:-keep_milestones]:
                old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated or foreign files: name the file and the problem
        raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    missing = {"encoder", "predictor", "target_encoder", "opt", "step"} - set(ckpt)
    if missing:
        raise ValueError(f"checkpoint {path} lacks {sorted(missing)}; not a radjepa pretraining checkpoint")
    return ckpt


def restore(model, opt: torch.optim.Optimizer, ckpt: dict) -> None:
    """Load the weights and optimizer state of OUR checkpoint (`make_checkpoint`; DDP `module.` prefixes are
    tolerated). Official I-JEPA checkpoints do not load here — their stored sin-cos tables, RGB patch embedding and
    4 optimizer groups need converting: start a run from one with `init_from_official` (`--init-from`)."""
    for part in ("encoder", "predictor", "target_encoder"):
        sd = {k.removeprefix("module."): v for k, v in ckpt[part].items()}
        getattr(model, part).load_state_dict(sd)
    opt.load_state_dict(ckpt["opt"])


def init_from_official(model, opt: torch.optim.Optimizer, path: str | Path) -> dict[str, Any]:
    """Start a fresh run from an official I-JEPA `.pth.tar`: encoder, predictor and target encoder, and the AdamW
    moments / per-parameter step counts where shapes allow (models/official_ijepa.py). The run's own schedules
    still start at step 0: the official run's step belongs to its own run length and data."""
    from radjepa_cli.models.official_ijepa import load_official_training_state
    return load_official_training_state(model, opt, path, model.trainable_parameters())


# ---------------------------------------------------------------------------------------------- run files
def write_run_files(run: str | Path, cfg, encoder) -> None:
    from radjepa_cli import config as config_mod
    from radjepa_cli.models.checkpoint import encoder_config

    config_mod.save(cfg, run)
    write_json(Path(run) / "encoder_config.json", encoder_config(encoder))


def is_complete(run: str | Path) -> bool:
    return (Path(run) / "COMPLETE").is_file()


def mark_complete(run: str | Path, summary: dict) -> None:
    (Path(run) / "FAILED.json").unlink(missing_ok=True)
    write_json(Path(run) / "COMPLETE", summary)


def mark_failed(run: str | Path, reason: str, **info: Any) -> None:
    write_json(Path(run) / "FAILED.json", {"reason": reason, **info})


def saved_config(run: str | Path) -> dict | None:
    p = Path(run) / "config.json"
    return read_json(p) if p.is_file() else None
