"""I-JEPA pretraining: the config and the training loop (one process; `launch.py` starts several).

The loop, per optimizer step: `grad_accum` micro-batches (DDP syncs gradients only on the last; a step may take the
end of one epoch and the start of the next, so every batch trains once), then LR/WD from the schedules, optional
clipping, AdamW, and the EMA of the target encoder — schedules and EMA step once per optimizer step. bf16 autocast
on CUDA (no GradScaler), fp32 on CPU. Batches arrive as uint8 and are normalised on the device. Checkpoints,
telemetry and monitors are rank 0's job. `train()` reads top to bottom; each stage it calls is a helper above it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from radjepa_cli import config as config_mod
from radjepa_cli.pretrain import run_state
from radjepa_cli.pretrain.masks import MaskConfig
from radjepa_cli.pretrain.monitors import NonFiniteLossError

# I-JEPA warms up for 40 of 300 epochs; we keep that fraction whatever the run length.
WARMUP_FRACTION = 40 / 300


@dataclasses.dataclass
class PretrainConfig:
    shards: str = ""
    out: str = ""
    split: str = "train"
    # model
    model: str = "vit_base"
    depth: int | None = None               # None: the preset's; fewer blocks = more steps on a small budget
    embed_dim: int | None = None           # None: the preset's width
    num_heads: int | None = None           # None: the preset's heads
    image_size: int = 224
    crop_scale: tuple[float, float] = (0.3, 1.0)   # RandomResizedCrop area range (I-JEPA)
    patch_size: int = 14
    pred_depth: int | None = None          # None: the preset's default (models/predictor.PREDICTOR_DEPTH)
    pred_dim: int = 384
    init: str = "official"                 # official (I-JEPA training's) | rescaled (1/sqrt(2·layer) departure)
    init_from: str = ""                    # official I-JEPA .pth.tar to start from (weights + AdamW state)
    loss: str = "smooth_l1"                # smooth_l1 (I-JEPA code, default) | l2 (the papers' written objective)
    reg_var: float = 0.0                   # VICReg variance term on pooled context embeddings (0: I-JEPA)
    reg_cov: float = 0.0                   # VICReg covariance term (0: I-JEPA)
    masks: MaskConfig = dataclasses.field(default_factory=MaskConfig)
    # length: exactly one of steps / epochs (optimizer steps; an epoch = one pass over the split)
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 64                   # per process and micro-batch; global = batch_size·world·grad_accum
    grad_accum: int = 1
    # optimisation (I-JEPA: lr 2e-4 → 1e-3 → 1e-6, wd 0.04 → 0.4, EMA 0.996 → 1.0)
    lr: float = 1e-3
    start_lr: float = 2e-4
    final_lr: float = 1e-6
    warmup_steps: int | None = None        # None: 40/300 of the run, as I-JEPA
    wd: float = 0.04
    final_wd: float = 0.4
    ema_start: float = 0.996
    ema_end: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = None
    seed: int = 0
    # runtime
    kernels: str = "auto"                  # auto | triton | eager
    num_workers: int | None = None         # loader workers per process (None: workers_per_process())
    threads: int | None = None             # CPU threads per process (None: cores / local processes)
    log_every: int = 10
    monitor_every: int = 100
    ckpt_every: int = 200                  # latest.pt
    milestone_every: int = 0               # step_XXXXXXX.pt (0: only the final one)
    keep_milestones: int = 0               # 0: keep all
    tensorboard: bool = True
    probe_every: int | None = None         # [online probe, issue 15] None: ≤6, ≤5% of wall, if labelled; 0: off
    probe_train: int = 512                 # [online probe, issue 15] subset sizes (pretrain/online_probe.py)
    probe_val: int = 256
    resume: bool = False

    def validate(self) -> None:
        if not self.shards or not self.out:
            raise ValueError("pretrain needs shards and out")
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps or epochs")
        for name in ("batch_size", "grad_accum", "log_every", "monitor_every", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if (self.steps or 1) < 1 or (self.epochs or 1) < 1:
            raise ValueError("steps/epochs must be >= 1")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for name in ("depth", "embed_dim", "num_heads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (or unset for one per core), got {self.num_workers}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {tuple(self.crop_scale)}")
        if self.reg_var < 0 or self.reg_cov < 0:
            raise ValueError(f"reg_var and reg_cov must be >= 0, got {self.reg_var} and {self.reg_cov}")
        if self.init not in ("official", "rescaled"):   # models/vit.INIT_SCHEMES
            raise ValueError(f"init must be official or rescaled, not {self.init!r}")
        if self.kernels not in ("auto", "triton", "eager"):
            raise ValueError(f"kernels must be auto, triton or eager, not {self.kernels!r}")


# Changing these on --resume would silently make a different experiment than the checkpoint's.
RESUME_LOCKED = ("model", "depth", "embed_dim", "num_heads", "image_size", "crop_scale", "patch_size", "pred_depth",
                 "pred_dim", "loss", "reg_var", "reg_cov", "masks", "steps", "epochs",
                 "batch_size", "grad_accum", "lr", "start_lr", "final_lr", "warmup_steps", "wd", "final_wd",
                 "ema_start", "ema_end", "betas", "clip_grad", "seed", "split")


def resolve_config(toml_path: str | Path | None, overrides: dict[str, Any]) -> PretrainConfig:
    """Defaults ← TOML ← CLI overrides (None = unset). With resume and an existing RUN/config.json, the saved
    config is the base, so `--resume` alone continues the run; changing an experiment-defining field is an error."""
    data = config_mod.read_toml(toml_path)
    over = {k: v for k, v in overrides.items() if v is not None}
    mask_over = over.pop("masks", None) or {}
    saved = run_state.saved_config(over.get("out") or data.get("out", "")) if (over.get("resume")
                                                                                 or data.get("resume")) else None
    base = {k: v for k, v in (saved or {}).items() if k != "type"}
    explicit = {**data, **over}
    merged = {**base, **explicit}
    merged["masks"] = {**base.get("masks", {}), **data.get("masks", {}), **mask_over}
    # The run length given explicitly replaces the one from the file/saved config (one of the two is None).
    if "steps" in explicit and "epochs" not in explicit:
        merged["epochs"] = None
    elif "epochs" in explicit and "steps" not in explicit:
        merged["steps"] = None
    cfg = config_mod.from_dict(PretrainConfig, merged, where=str(toml_path or "pretrain options"))
    if saved is not None:
        was = config_mod.from_dict(PretrainConfig, base, where=f"{over.get('out')}/config.json")
        changed = [f"{k}: {getattr(was, k)!r} → {getattr(cfg, k)!r}" for k in RESUME_LOCKED
                   if getattr(was, k) != getattr(cfg, k)]
        if changed:
            raise ValueError("--resume with options that differ from the run's config.json: " + "; ".join(changed)
                             + ". Resume with the same options, or start a new --out.")
    cfg.validate()
    return cfg


def count_samples(shards: str | Path, split: str) -> int:
    """Samples of `split` from the shard folder's manifest.json (needed to turn epochs into steps)."""
    from radjepa_cli.io import read_json
    path = Path(shards) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --epochs needs the shard manifest (or give --steps)")
    n = read_json(path).get("counts", {}).get("split", {}).get(split)
    if not n:
        raise ValueError(f"{path}: no samples in split {split!r}")
    return int(n)


@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"     # "cpu" or "cuda"
    cuda_index: int | None = None   # visible CUDA ordinal (launch.cuda_device_index); None: local_rank


def _setup(cfg: PretrainConfig, dist: DistInfo) -> torch.device:
    import radjepa_kernels
    radjepa_kernels.set_backend(cfg.kernels)
    if dist.device == "cuda":
        device = torch.device("cuda", dist.local_rank if dist.cuda_index is None else dist.cuda_index)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device("cpu")
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // local))
    return device


def build_model(cfg: PretrainConfig):
    from radjepa_cli.models.predictor import build_predictor
    from radjepa_cli.models.vit import build_encoder
    from radjepa_cli.pretrain.jepa import JEPA

    arch = {k: getattr(cfg, k) for k in ("depth", "embed_dim", "num_heads") if getattr(cfg, k) is not None}
    enc = build_encoder(cfg.model, img_size=cfg.image_size, patch_size=cfg.patch_size, in_chans=1, init=cfg.init,
                        **arch)
    pred = build_predictor(enc, depth=cfg.pred_depth, dim=cfg.pred_dim, model=cfg.model, init=cfg.init)
    return JEPA(enc, pred, loss=cfg.loss, reg_var=cfg.reg_var, reg_cov=cfg.reg_cov)


def workers_per_process(cores: int | None = None, local_procs: int | None = None) -> int:
    """Loader workers for one training process: this node's usable cores shared by its processes (one per GPU;
    LOCAL_WORLD_SIZE under the launcher). At least 1. The process itself mostly waits on the GPU, so it does not
    keep a core of its own; on a 16-core, 8-GPU node that is 2 workers per GPU."""
    if local_procs is None:
        local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", "0")) or max(1, torch.cuda.device_count())
    per_task = os.environ.get("SLURM_CPUS_PER_TASK")
    if cores is None and per_task:
        # Slurm gave each task its own cores: srun with a task per GPU, or one task running torchrun for all
        tasks = os.environ.get("SLURM_NTASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE", "1")
        m = re.match(r"\d+", tasks)   # "8(x2)": 8 tasks on each of 2 nodes
        procs_per_task = max(1, local_procs // max(1, int(m.group()) if m else 1))
        return max(1, int(per_task) // procs_per_task)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_procs))


def default_loader_factory(cfg: PretrainConfig, dist: DistInfo, grid: tuple[int, int]) -> Callable[[int], Iterable]:
    from radjepa_cli.data.loader import make_loader
    from radjepa_cli.pretrain.masks import MultiBlockMaskCollator

    collator = MultiBlockMaskCollator(cfg.masks, grid, seed=cfg.seed, rank=dist.rank)
    workers = workers_per_process() if cfg.num_workers is None else cfg.num_workers

    def for_epoch(epoch: int) -> Iterable:
        collator.set_epoch(epoch)   # skipped batches on resume are replayed, so the counter starts at 0
        # uint8 batches: 4× less to copy host→device; _to_device normalises in float on the device
        return make_loader(cfg.shards, split=cfg.split, batch_size=cfg.batch_size, image_size=cfg.image_size,
                           train=True, num_workers=workers, seed=cfg.seed, epoch=epoch, rank=dist.rank,
                           world_size=dist.world_size, drop_last=True, collate_fn=collator,
                           crop_scale=tuple(cfg.crop_scale), uint8=True, pin_memory=dist.device == "cuda")
    return for_epoch


# ------------------------------------------------------------------------------------------- loop helpers

def _build(cfg: PretrainConfig, dist: DistInfo, device: torch.device):
    """Model and AdamW; the same init on every rank (DDP also broadcasts rank 0's)."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    torch.manual_seed(cfg.seed + dist.rank)      # per-rank stream for anything random in the step (drop path)
    # fused AdamW on CUDA, multi-tensor on CPU: one kernel per step instead of one per parameter
    opt = torch.optim.AdamW(model.param_groups(), lr=cfg.start_lr, betas=tuple(cfg.betas), weight_decay=cfg.wd,
                            **({"fused": True} if device.type == "cuda" else {"foreach": True}))
    return model, opt


def _resume(cfg: PretrainConfig, run: Path, model, opt, dist: DistInfo) -> dict | None:
    """Load RUN's latest checkpoint into model/opt and this rank's RNG (or start from an official checkpoint);
    write the run files."""
    ckpt = None
    if run_state.latest_path(run).is_file():
        restarted = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0"   # --max-restarts: auto-resume
        if not (cfg.resume or restarted):
            raise FileExistsError(f"{run} already holds a run (checkpoints/latest.pt); pass --resume to continue "
                                  f"it or choose another --out")
        ckpt = run_state.load_checkpoint(run_state.latest_path(run))
        run_state.restore(model, opt, ckpt)
        if ckpt.get("world_size", 1) == dist.world_size and len(ckpt.get("rng", [])) == dist.world_size:
            run_state.restore_rng(ckpt["rng"][dist.rank])   # a changed world size starts fresh streams
    elif cfg.init_from:                          # a fresh run from an official I-JEPA checkpoint
        run_state.init_from_official(model, opt, cfg.init_from)
    if dist.rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        for stale in run_state.ckpt_dir(run).glob(".*.tmp"):   # left by a kill during a save
            stale.unlink(missing_ok=True)
        run_state.write_run_files(run, cfg, model.encoder)
    return ckpt


def _monitors(cfg: PretrainConfig, run: Path, ckpt: dict | None, total: int, is_main: bool):
    """The collapse monitor (its state restored), its sampling generator, and rank 0's telemetry."""
    from radjepa_cli.pretrain.monitors import CollapseMonitor
    from radjepa_cli.pretrain.telemetry import Telemetry
    monitor = CollapseMonitor()
    if ckpt and "monitor" in ckpt:
        monitor.load_state_dict(ckpt["monitor"])
    step = ckpt["step"] if ckpt else 0
    tel = Telemetry(run, total, step, tensorboard=cfg.tensorboard) if is_main else None
    if tel and ckpt:
        tel.info(f"resumed {run} at step {step}/{total} (epoch {ckpt['epoch']}, batch {ckpt['batch_in_epoch']})")
    return monitor, torch.Generator().manual_seed(cfg.seed), tel


def _run_length(cfg: PretrainConfig, dist: DistInfo) -> int:
    """Total optimizer steps: --steps, or --epochs × the steps in one pass over the split."""
    if cfg.steps is not None:
        return cfg.steps
    per_epoch = count_samples(cfg.shards, cfg.split) // (cfg.batch_size * dist.world_size) // cfg.grad_accum
    if per_epoch < 1:
        raise ValueError(f"{cfg.shards}: too few {cfg.split} samples for one step of global batch "
                         f"{cfg.batch_size * dist.world_size * cfg.grad_accum}")
    return cfg.epochs * per_epoch


def _schedules(cfg: PretrainConfig, total: int):
    from radjepa_cli.pretrain.schedules import Schedules
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(WARMUP_FRACTION * total)
    return Schedules(total_steps=total, warmup_steps=warmup, lr=cfg.lr, start_lr=cfg.start_lr,
                     final_lr=cfg.final_lr, wd=cfg.wd, final_wd=cfg.final_wd, ema_start=cfg.ema_start,
                     ema_end=cfg.ema_end)


def _ddp_wrap(core, dist: DistInfo, device: torch.device):
    if dist.world_size == 1:
        return core
    from torch.nn.parallel import DistributedDataParallel as DDP
    # Buffers (the predictor's fixed positions) are identical on every rank; syncing them costs ~nothing.
    return DDP(core, device_ids=[device.index] if device.type == "cuda" else None)


def _to_device(item, device: torch.device):
    """(batch, masks_enc, masks_pred) → normalised float images and the masks on the device. The loader sends
    uint8 (pinned on CUDA, so the copy is asynchronous); the /255 and (x − mean)/std run on the device in fp32."""
    from radjepa_cli.models.vit import DEFAULT_MEAN, DEFAULT_STD
    batch, masks_enc, masks_pred = item
    x = batch["image"].to(device, non_blocking=True)
    x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()   # div, not ×1/255: equals the old decode
    return ((x - DEFAULT_MEAN) / DEFAULT_STD, masks_enc.to(device, non_blocking=True),
            masks_pred.to(device, non_blocking=True))


class _Tally:
    """Loss sum and any-non-finite flag since the last log, kept on the device: no host sync per step."""

    def __init__(self, device: torch.device):
        self.device = device
        self.bad = torch.zeros((), dtype=torch.bool, device=device)   # never reset: a NaN stops the run
        self.loss_sum = torch.zeros((), device=device)
        self.steps = 0

    def add(self, loss: torch.Tensor, grad_accum: int) -> None:
        self.loss_sum += loss.detach().float() / grad_accum
        self.bad |= ~torch.isfinite(loss.detach())

    def check(self, distributed: bool) -> tuple[bool, float]:
        """All ranks: (every loss finite since the last check, mean loss) — one all-reduce at log/ckpt steps."""
        vals = torch.stack([self.bad.float(), self.loss_sum,
                            torch.tensor(float(max(self.steps, 1)), device=self.device)])
        if distributed:
            import torch.distributed as tdist
            tdist.all_reduce(vals)
        return vals[0].item() == 0, (vals[1] / vals[2]).item()

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.steps = 0


def _step(model, core, opt, micro: list, s: dict, cfg: PretrainConfig, device: torch.device, tally: _Tally) -> None:
    """One optimizer step: forward/backward over the micro-batches (DDP syncs on the last only), this step's
    LR/WD, optional clipping, AdamW, then the EMA of the target encoder."""
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    for i, (_, _, item) in enumerate(micro):
        images, masks_enc, masks_pred = _to_device(item, device)
        last = i == len(micro) - 1
        with (model.no_sync() if model is not core and not last else contextlib.nullcontext()):
            with autocast:
                loss = model(images, masks_enc, masks_pred)
            (loss / cfg.grad_accum).backward()
        tally.add(loss, cfg.grad_accum)
    for g in opt.param_groups:
        g["lr"] = s["lr"]
        if g.get("apply_wd"):
            g["weight_decay"] = s["wd"]
    if cfg.clip_grad:
        torch.nn.utils.clip_grad_norm_([p for _, p in core.trainable_parameters()], cfg.clip_grad)
    opt.step()
    opt.zero_grad(set_to_none=True)
    core.update_target(s["momentum"])


def _save(run: Path, core, opt, monitor, cfg: PretrainConfig, dist: DistInfo, *, step: int, ep: int, pos: int,
          total: int, loss: float, lr: float, milestone: bool) -> None:
    """Checkpoint after `step` optimizer steps, resumable at batch `pos` of epoch `ep` (all ranks: RNG gather)."""
    rng = [run_state.capture_rng()]
    if dist.world_size > 1:
        import torch.distributed as tdist
        rng = [None] * dist.world_size
        tdist.all_gather_object(rng, run_state.capture_rng())
    if dist.rank == 0:
        ck = run_state.make_checkpoint(core, opt, step=step, epoch=ep, batch_in_epoch=pos, loss=loss, lr=lr,
                                       batch_size=cfg.batch_size, world_size=dist.world_size, rng=rng,
                                       extra={"monitor": monitor.state_dict(), "total_steps": total})
        run_state.save_checkpoint(run, ck, milestone=milestone, keep_milestones=cfg.keep_milestones)


def _stream(cfg: PretrainConfig, dist: DistInfo, device, core, loader_factory, epoch: int, position: int):
    """Optimizer-step groups of micro-batches from (epoch, position) on; all ranks end each epoch together."""
    import torch.distributed as tdist

    from radjepa_cli.pretrain.batches import all_ranks_agree, batch_stream, micro_batches
    group = tdist.new_group(backend="gloo") if dist.world_size > 1 and device.type == "cuda" else None
    loader_factory = loader_factory or default_loader_factory(cfg, dist, core.encoder.grid_size)
    stream = batch_stream(loader_factory, epoch=epoch, skip=position, agree=all_ranks_agree(group))
    return micro_batches(stream, cfg.grad_accum)


def _fail(run: Path, err: Exception, step: int, last_good_step: int) -> NonFiniteLossError:
    good = run_state.latest_path(run)
    msg = (f"{err}; stopped. The last good checkpoint {good} (step {last_good_step}) is kept"
           if good.is_file() else f"{err}; stopped before any checkpoint was written")
    run_state.mark_failed(run, msg, step=step, last_good_step=last_good_step)
    return NonFiniteLossError(msg + ". Lower --lr or set clip_grad, then --resume.")


# ------------------------------------------------------------------------------------------------ the loop

def train(cfg: PretrainConfig, dist: DistInfo | None = None,
          loader_factory: Callable[[int], Iterable] | None = None) -> dict[str, Any]:
    """Train (or resume) the run in cfg.out; returns the summary also written to RUN/COMPLETE."""
    dist = dist or DistInfo()
    cfg.validate()
    run, is_main, distributed = Path(cfg.out), dist.rank == 0, dist.world_size > 1
    device = _setup(cfg, dist)
    core, opt = _build(cfg, dist, device)
    ckpt = _resume(cfg, run, core, opt, dist)
    if ckpt and run_state.is_complete(run) and ckpt["step"] >= (ckpt.get("total_steps") or 0):
        from radjepa_cli.io import read_json
        return {"already_complete": True, **read_json(run / "COMPLETE")}
    step, ep, pos = (ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]) if ckpt else (0, 0, 0)
    total = _run_length(cfg, dist)
    sched = _schedules(cfg, total)
    model = _ddp_wrap(core, dist, device)
    steps = _stream(cfg, dist, device, core, loader_factory, ep, pos)
    monitor, mon_gen, tel = _monitors(cfg, run, ckpt, total, is_main)
    from radjepa_cli.models.vit import DEFAULT_MEAN, DEFAULT_STD
    from radjepa_cli.pretrain import online_probe
    probe = online_probe.build(cfg, total, DEFAULT_MEAN, DEFAULT_STD, start=step) if is_main else None   # rank 0 read-outs
    imgs_per_step = cfg.batch_size * cfg.grad_accum * dist.world_size
    tally = _Tally(device)
    t_start = t_last = time.time()
    last_loss, last_mon, last_good_step = float("nan"), {}, step
    try:
        while step < total:
            micro = next(steps)
            s = sched.at(step)
            _step(model, core, opt, micro, s, cfg, device, tally)
            ep, pos = micro[-1][0], micro[-1][1]
            step += 1
            tally.steps += 1
            do_log = step % cfg.log_every == 0 or step == total
            do_ckpt = step % cfg.ckpt_every == 0 or step == total
            if do_log or do_ckpt:
                finite, mean_loss = tally.check(distributed)
                if not finite:
                    raise NonFiniteLossError(f"the loss became NaN/inf between steps {last_good_step} and {step}")
                last_good_step, last_loss = step, mean_loss
            # per-milestone measurements: collapse monitor here, the online probe after the log line
            if is_main and step % cfg.monitor_every == 0 and core.last_target_tokens is not None:
                last_mon = monitor.measure(core.last_target_tokens, generator=mon_gen)   # RankMe, target std
                for w in monitor.check(last_mon):
                    tel.warn(f"step {step}: {w}")
            if do_log:
                now = time.time()
                if is_main:   # loss is the interval mean; the separate terms are this step's (rank 0) values
                    terms = {k: v.item() for k, v in core.last_terms.items()} if len(core.last_terms) > 1 else {}
                    tel.log({"step": step, "epoch": ep, "loss": last_loss, **terms, **s,
                             "images_per_s": tally.steps * imgs_per_step / max(now - t_last, 1e-9), **last_mon})
                last_mon, t_last = {}, now
                tally.reset()
            elif tel:
                tel.advance(step)
            if probe is not None and probe.due(step, total):   # rank 0 only
                rec = probe.run(core.target_encoder, step)
                tel.log_probe(rec)
                t_last += rec["probe_seconds"]   # images/s counts training time only
            if do_ckpt:
                _save(run, core, opt, monitor, cfg, dist, step=step, ep=ep, pos=pos, total=total, loss=last_loss,
                      lr=sched.lr_at(max(step - 1, 0)),
                      milestone=step == total or (cfg.milestone_every > 0 and step % cfg.milestone_every == 0))
    except NonFiniteLossError as e:
        if is_main:
            raise _fail(run, e, step, last_good_step) from None
        raise
    finally:
        if tel:
            tel.close()

    summary = {"steps": step, "epoch": ep, "final_loss": last_loss, "wall_s": round(time.time() - t_start, 1),
               "world_size": dist.world_size, "global_batch": imgs_per_step,
               "monitors": monitor.measure(core.last_target_tokens) if core.last_target_tokens is not None else {}}
    if is_main:
        run_state.mark_complete(run, summary)
    return summary
