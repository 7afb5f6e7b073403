"""Start pretraining on 1 process, N local processes (`--gpus N` NCCL / `--procs N` gloo), several nodes, or inside a
process that torchrun or SLURM already started (detected from the environment).

Local and multi-node starts go through torch.distributed's elastic launcher (what torchrun uses): it runs the
rendezvous, restarts the whole group up to `--max-restarts` times (workers then resume from RUN's latest
checkpoint), and when a worker dies it stops the others; we turn its failure record into a message naming the rank.
"""
from __future__ import annotations

import dataclasses
import os
import re
import uuid
from typing import Any

from radjepa_cli import config as config_mod
from radjepa_cli.pretrain.train import DistInfo, PretrainConfig, train


DEVICES = ("auto", "cuda", "cpu")


def _check_device(requested: str) -> None:
    """The --device check shared by LaunchOptions.validate (before any work) and resolve_device (its own callers)."""
    if requested not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}, not {requested!r}")


class WorkerFailedError(RuntimeError):
    """A training process failed; the message names its rank and says why."""


@dataclasses.dataclass
class LaunchOptions:
    gpus: int = 0                      # local CUDA processes (NCCL)
    procs: int = 0                     # local CPU processes (gloo)
    nnodes: int = 1
    node_rank: int | None = None       # given → static rendezvous (each node knows its rank); else c10d assigns
    rdzv_endpoint: str | None = None   # HOST:PORT of the rendezvous (node 0); needed with nnodes > 1
    rdzv_id: str | None = None         # same on every node of one job
    max_restarts: int = 0
    device: str = "auto"               # auto | cuda | cpu (see resolve_device)

    def validate(self) -> None:
        _check_device(self.device)
        if self.gpus and self.device == "cpu":
            raise ValueError("--gpus N runs CUDA processes; with --device cpu use --procs N")
        if self.gpus and self.procs:
            raise ValueError("give --gpus N or --procs N, not both")
        if self.gpus < 0 or self.procs < 0 or self.nnodes < 1 or self.max_restarts < 0:
            raise ValueError("--gpus/--procs/--max-restarts must be >= 0 and --nnodes >= 1")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (node 0's address, same on every node)")
        if self.node_rank is not None and not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"--node-rank {self.node_rank} is outside 0..{self.nnodes - 1}")


# ---------------------------------------------------------------------------------------------- environment
def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list: 'gpu[003-004,010],cpu1' → 'gpu003'."""
    m = re.match(r"([^\[,]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise ValueError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "")


def external_launch(env: dict[str, str] | None = None) -> dict[str, str] | None:
    """The torch.distributed env vars when started by torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) or by `srun` with
    several tasks (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID/SLURM_JOB_NODELIST); None for a plain start."""
    env = dict(os.environ if env is None else env)
    if all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                    "MASTER_PORT") if k in env}
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist and "MASTER_ADDR" not in env:
            raise RuntimeError("SLURM with several tasks but no SLURM_JOB_NODELIST/MASTER_ADDR to rendezvous at")
        per_node = env.get("SLURM_NTASKS_PER_NODE", env.get("SLURM_TASKS_PER_NODE", "1")).split("(")[0]
        return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": env["SLURM_NTASKS"],
                "LOCAL_RANK": env.get("SLURM_LOCALID", "0"), "LOCAL_WORLD_SIZE": per_node.split(",")[0],
                "MASTER_ADDR": env.get("MASTER_ADDR") or first_slurm_host(nodelist),
                # one port per job, so two jobs sharing a node do not collide
                "MASTER_PORT": env.get("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))}
    return None


# ---------------------------------------------------------------------------------------------- devices
def _nvidia_present() -> bool:
    """An NVIDIA driver or device node exists, so a user on this machine expects the GPU to be used."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")


def cuda_problem() -> str | None:
    """None when CUDA works here; otherwise one sentence on why not (CPU-only torch, GPUs hidden, driver)."""
    import warnings

    import torch
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build (install a CUDA build of torch)"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = torch.cuda.is_available()
    if ok:
        return None
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    # torch's own warning says why, e.g. "The NVIDIA driver on your system is too old (found version 12020)".
    why = " ".join(str(caught[-1].message).split()) if caught else "no CUDA device found (no driver or no GPU)"
    return f"CUDA is not usable with torch {torch.__version__} (CUDA {torch.version.cuda}): {why}"


def resolve_device(requested: str = "auto", *, gpus: int = 0, procs: int = 0) -> str:
    """"cuda" or "cpu" for the training processes. `cpu` (or --procs) always gives CPU; `cuda` or --gpus need a
    working CUDA and raise a clear error otherwise; `auto` uses CUDA when it works and CPU on a machine without
    NVIDIA hardware — but where a GPU is present and CUDA fails (e.g. a driver too old for this torch) it raises
    rather than train silently on the CPU, unless the user says --device cpu."""
    _check_device(requested)
    if requested == "cpu" or (procs and requested == "auto"):
        return "cpu"
    problem = cuda_problem()
    if problem is None:
        return "cuda"
    if requested == "cuda" or gpus:
        flag = "--device cuda" if requested == "cuda" else f"--gpus {gpus}"
        raise RuntimeError(f"{flag} needs CUDA: {problem}. Use --device cpu (with --procs N for several CPU "
                           "processes) to train on the CPU")
    if _nvidia_present():
        raise RuntimeError(f"this machine has an NVIDIA GPU but {problem}; fix CUDA, or pass --device cpu to "
                           "train on the CPU on purpose")
    return "cpu"


def _visible_note(env) -> str:
    """How this process's GPUs were narrowed, for errors about too few of them (ordinals are relative to it)."""
    return f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '<unset>')!r}"


def cuda_device_index(env: dict[str, str] | None = None) -> int:
    """The CUDA ordinal (among the devices this process sees) that this process should use.

    torchrun, or srun with every GPU of the node visible to every task: LOCAL_RANK (SLURM_LOCALID).
    srun --gpus-per-task=1 (or a per-task CUDA_VISIBLE_DEVICES): the task sees one GPU, ordinal 0, whatever its
    local rank. Ordinals are always relative to CUDA_VISIBLE_DEVICES, which torch's device count reflects."""
    import torch
    env = dict(os.environ if env is None else env)
    local = int(env.get("LOCAL_RANK", env.get("SLURM_LOCALID", "0")))
    visible = torch.cuda.device_count()
    if visible < 1:
        raise RuntimeError(f"local rank {local} needs a GPU but none is visible ({_visible_note(env)})")
    if visible == 1:
        return 0
    if local < visible:
        return local
    raise RuntimeError(
        f"local rank {local} but only {visible} GPU(s) visible to this process "
        f"({_visible_note(env)}): start at most {visible} "
        "processes per node, or give each process its own GPU (srun --gpus-per-task=1)")


def bind_cuda_device(spec: str | int) -> "torch.device":
    """Make `spec` ("cuda", "cuda:1", 1) the current CUDA device and return it. Triton launches its kernels and
    do_bench/synchronize act on the *current* device, so a benchmark given --device cuda:1 must bind it."""
    import torch
    dev = torch.device("cuda", spec) if isinstance(spec, int) else torch.device(spec)
    if dev.type != "cuda":
        raise ValueError(f"{spec!r} is not a CUDA device")
    n = torch.cuda.device_count()
    index = 0 if dev.index is None else dev.index
    if index >= n:
        raise RuntimeError(f"CUDA device {index} requested but only {n} visible ({_visible_note(os.environ)})")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


# ---------------------------------------------------------------------------------------------- workers
def _worker(cfg_dict: dict[str, Any], device: str) -> dict[str, Any] | None:
    """One training process under an initialised environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
    import torch.distributed as tdist

    cfg = config_mod.from_dict(PretrainConfig, cfg_dict)
    info = DistInfo(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")), device=device)
    if device == "cuda":
        import torch
        info.cuda_index = cuda_device_index()
        torch.cuda.set_device(info.cuda_index)   # before NCCL init, so each rank binds its own GPU
    if info.world_size > 1 and not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    try:
        return train(cfg, info)
    finally:
        if tdist.is_initialized():
            tdist.destroy_process_group()


def _elastic_entry(cfg_dict: dict[str, Any], device: str) -> dict[str, Any] | None:
    # `record` writes the worker's traceback to the error file the agent reads, so the parent can report it.
    from torch.distributed.elastic.multiprocessing.errors import record
    return record(_worker)(cfg_dict, device)


def _failure_message(err: Exception) -> str:
    failures = getattr(err, "failures", {}) or {}
    if not failures:
        return str(err)
    lines = []
    for rank, f in sorted(failures.items()):
        why = f"signal {f.signal_name()}" if f.exitcode is not None and f.exitcode < 0 else f"exit code {f.exitcode}"
        msg = f.message
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
        text = str(msg).strip().splitlines()
        detail = next((t for t in reversed(text) if t.strip()), "") if text else ""
        lines.append(f"rank {rank} (local rank {f.local_rank}, pid {f.pid}) failed with {why}"
                     + (f": {detail}" if detail and "To enable traceback" not in detail else ""))
    return "pretraining stopped: " + "; ".join(lines)


def run_pretrain(cfg: PretrainConfig, opts: LaunchOptions | None = None) -> dict[str, Any] | None:
    """Train cfg with the process layout of `opts` (or the environment's). Returns rank 0's summary (None on
    nodes that do not host rank 0)."""
    opts = opts or LaunchOptions()
    opts.validate()
    cfg.validate()
    import torch

    device = resolve_device(opts.device, gpus=opts.gpus, procs=opts.procs)
    ext = external_launch()
    if ext is not None:
        os.environ.update(ext)
        return _worker(config_mod.to_dict(cfg), device)

    nproc = opts.gpus or opts.procs or 1
    if opts.gpus and opts.gpus > torch.cuda.device_count():
        raise RuntimeError(f"--gpus {opts.gpus} but only {torch.cuda.device_count()} CUDA device(s) visible")
    if nproc == 1 and opts.nnodes == 1 and opts.max_restarts == 0:
        # a plain start: the first visible GPU (cuda_index 0), or the CPU
        return train(cfg, DistInfo(device=device, cuda_index=0 if device == "cuda" else None))

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    static = opts.node_rank is not None and opts.nnodes > 1
    lc = LaunchConfig(
        min_nodes=opts.nnodes, max_nodes=opts.nnodes, nproc_per_node=nproc,
        run_id=opts.rdzv_id or (f"radjepa-{uuid.uuid4().hex[:8]}" if opts.nnodes == 1 else "radjepa"),
        rdzv_backend="static" if static else "c10d",
        rdzv_endpoint=opts.rdzv_endpoint or "localhost:0",
        rdzv_configs={"rank": opts.node_rank} if static else {},
        max_restarts=opts.max_restarts, monitor_interval=0.5, start_method="spawn")
    try:
        results = elastic_launch(lc, _elastic_entry)(config_mod.to_dict(cfg), device)
    except ChildFailedError as e:
        raise WorkerFailedError(_failure_message(e)) from None
    return results.get(0) if results else None
