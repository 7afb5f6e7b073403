"""Loader throughput: images/s (wall) and images/s per core (CPU time of the process and its workers).

    python benchmarks/loader.py --n 512 --workers 0 1 2 --out benchmarks/results/loader.json

Builds phantom shards (or reads --shards DIR), then iterates `make_loader` with the train transform
(RandomResizedCrop 0.3–1 → 224) and with the eval transform, batch 64, reporting decode+transform+collate speed.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from radjepa_cli.io import write_json  # noqa: E402


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(shards: Path, workers: int, train: bool, batch: int, size: int, masks: bool) -> dict:
    import torch
    from radjepa_cli.data.labels import LUNGS
    from radjepa_cli.data.loader import make_loader
    loader = make_loader(shards, split=None, batch_size=batch, image_size=size, train=train, num_workers=workers,
                         label_names=["Cardiomegaly", "Pleural Effusion"], mask_names=LUNGS if masks else None)
    cpu0, wall0, n = cpu_seconds(), time.perf_counter(), 0
    for b in loader:
        n += b["image"].shape[0]
        assert b["image"].dtype == torch.float32
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0  # worker CPU is counted once they exit
    return {"workers": workers, "transform": "train" if train else "eval", "masks": masks, "n": n, "batch": batch,
            "image_size": size, "wall_s": wall, "cpu_s": cpu, "images_per_s": n / wall,
            "images_per_s_per_core": n / cpu}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=Path, default=None, help="existing shard folder (default: make phantoms)")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/loader.json"))
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    shards = a.shards
    if shards is None:
        from radjepa_cli.data.prepare import PrepareConfig, prepare_data
        shards = Path(tempfile.mkdtemp(prefix="radjepa-loader-bench-"))
        prepare_data(PrepareConfig(dataset="synthetic", out=str(shards), n=a.n, workers=2, salt="b", shard_size=128))
    load0 = os.getloadavg()[0]
    rows = [measure(shards, w, train, a.batch, a.size, masks)
            for w in a.workers for train, masks in ((True, False), (False, False), (True, True))]
    print(f"{'workers':>7s} {'transform':>9s} {'masks':>5s} {'img/s':>8s} {'img/s/core':>11s}")
    for r in rows:
        print(f"{r['workers']:7d} {r['transform']:>9s} {str(r['masks']):>5s} {r['images_per_s']:8.1f} "
              f"{r['images_per_s_per_core']:11.1f}")
    result = {"benchmark": "loader", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()} {os.cpu_count()} cpus, load {load0:.1f}",
              "command": "python benchmarks/loader.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "results": rows}
    write_json(a.out, result)
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
