"""Rank-0 telemetry of a pretraining run: rich progress, RUN/metrics.jsonl and TensorBoard events.

metrics.jsonl has one JSON object per log step (step, epoch, loss, lr, wd, momentum, images_per_s and the monitor
values when measured). On resume, lines past the checkpoint's step are dropped first, so the file never holds two
records for one step.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from radjepa_cli.io import atomic_write_bytes


def truncate_metrics(path: Path, keep_through_step: int) -> None:
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= keep_through_step:
                keep.append(line)
        except json.JSONDecodeError:   # a line cut by a kill: drop it
            continue
    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())


class Telemetry:
    def __init__(self, run: str | Path, total_steps: int, start_step: int, tensorboard: bool = True,
                 console: Console | None = None):
        self.run = Path(run)
        self.console = console or Console(stderr=True)
        path = self.run / "metrics.jsonl"
        truncate_metrics(path, start_step)
        self._jsonl = path.open("a", buffering=1)   # line-buffered: a killed run loses at most one line
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(self.run / "tb"), purge_step=start_step or None)
        self._live = self.console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]pretrain"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  m {task.fields[m]}  {task.fields[ips]} img/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, disable=not self._live)
        self.task = self.progress.add_task("pretrain", total=total_steps, completed=start_step,
                                           loss="-", lr="-", m="-", ips="-")
        self.progress.start()
        self._t0 = time.time()

    def log(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time() - self._t0, 3), **record}
        self._jsonl.write(json.dumps(record) + "\n")
        step = record["step"]
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("step", "time") and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"pretrain/{k}", v, step)
        self.progress.update(self.task, completed=step, loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                             m=f"{record['momentum']:.4f}", ips=f"{record['images_per_s']:.1f}")
        if not self._live:   # logs to a file: one plain line per log step instead of a live bar
            extra = "".join(f" {k} {record[k]:.4g}" for k in ("rankme", "target_std") if k in record)
            self.console.print(f"step {step}/{self.progress.tasks[0].total} epoch {record['epoch']} "
                               f"loss {record['loss']:.4f} lr {record['lr']:.2e} m {record['momentum']:.4f} "
                               f"{record['images_per_s']:.1f} img/s{extra}", highlight=False, soft_wrap=True)

    def log_probe(self, record: dict[str, Any]) -> None:
        """An online-probe read-out (pretrain/online_probe.py): its own metrics.jsonl line (`"kind": "probe"`, so
        readers of the loss records can skip it), TensorBoard scalars under probe/, and a plain progress line."""
        record = {"time": round(time.time() - self._t0, 3), "kind": "probe", **record}
        self._jsonl.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k.startswith("probe_") and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"probe/{k[len('probe_'):]}", v, record["step"])
        figures = "  ".join(f"{k[len('probe_'):]} {record[k]:.3f}" for k in
                            ("probe_ridge_auprc", "probe_ridge_auroc", "probe_knn_auprc") if k in record)
        self.console.print(f"step {record['step']} online probe: {figures or 'no usable label'} "
                           f"({record.get('probe_seconds', 0):.1f} s)", highlight=False, soft_wrap=True)

    def advance(self, step: int) -> None:
        self.progress.update(self.task, completed=step)

    def warn(self, msg: str) -> None:
        self.console.print(f"[yellow]warning:[/] {msg}", soft_wrap=True)

    def info(self, msg: str) -> None:
        self.console.print(msg, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._jsonl.closed:
            return
        self.progress.stop()
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
