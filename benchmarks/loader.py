"""Loader throughput per stage and end to end, in images/s and images/s per CPU core, beside the step's images/s.

    python benchmarks/loader.py --n 1536 --workers 0 1 2 [--image-size 224] [--out DIR] [--shards DIR]
                                [--step-images-per-s 1800]

Stages (one process, one thread, the pretraining path): read (tar members + the json), decode (PNG → grey levels),
crop/resize (RandomResizedCrop 0.3–1 → S, flip), collate (stack a batch), masks (I-JEPA multi-block masks per
batch). Each runs as the old path (PIL decode, float32 resize and batches) and the new one (libpng through
torchvision.io, uint8 resize and batches); decode also as two what-ifs (png0*: the same images as level-0 PNGs;
raw*: bare uint8 pixels), and "stages one after another" sums each path's per-image CPU. End to end: `make_loader` as pretraining builds it, for each --workers.
Per core = images / CPU seconds of the process and its workers, so a busy machine lowers img/s but barely the per
core figure. With --step-images-per-s the table shows loader ÷ step: under 1 the GPU waits for data.
Needs only torch, torchvision, numpy and pillow (no webdataset, no pydicom). Phantom shards (256 px) are made
unless --shards is given.
"""
from __future__ import annotations

import argparse
import io
import json
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


def timed(fn, n: int, repeats: int = 1) -> dict:
    """Run fn() (which handles n images) `repeats` times; wall and CPU rates of the fastest (least disturbed) run."""
    best = None
    for _ in range(repeats):
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0   # workers' CPU counts once they are joined
        best = (wall, cpu) if best is None or cpu < best[1] else best
    wall, cpu = best
    return {"n": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "images_per_s": n / max(wall, 1e-9),
            "images_per_s_per_core": n / max(cpu, 1e-9)}


def pil_decode(data: bytes):
    """The loader's decode before torchvision.io: PIL → numpy float32 in [0, 1]."""
    import numpy as np
    from PIL import Image
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img, dtype=np.uint8).astype(np.float32) / 255.0


def stage_rows(shards: Path, n: int, size: int, batch: int) -> list[dict]:
    import numpy as np
    import torch

    from radjepa_cli.data.loader import shard_paths
    from radjepa_cli.data.shards import decode_png_raw, iter_tar
    from radjepa_cli.data.transforms import apply_transform
    from radjepa_cli.pretrain.masks import MultiBlockMaskCollator

    files = []

    def read():
        for path in shard_paths(shards):
            for _, f in iter_tar(path):
                json.loads(f["json"])
                files.append(f)
    rows = [{"stage": "read", "path": "both", **timed(read, n)}]
    files[:] = files[:n]
    pngs = [f["png"] for f in files]
    decoded = {"old": pil_decode(pngs[0]), "new": decode_png_raw(pngs[0])}   # imports (torchvision: ~1 s) untimed
    decoders = {"old": pil_decode, "new": decode_png_raw}
    for path, dec in decoders.items():
        rows.append({"stage": "decode", "path": path,
                     **timed(lambda dec=dec, path=path: decoded.update({path: [dec(d) for d in pngs]}), len(pngs), 2)})
    # what-ifs: the same images as level-0 PNGs (stored, no deflate; prepare-data writes level 2 today), and as
    # bare uint8 pixels (not a shard format)
    from radjepa_cli.data.shards import encode_png
    png0 = [encode_png(x.numpy() / 255.0, 8, level=0) for x in decoded["new"]]
    rows.append({"stage": "decode", "path": "png0*",
                 **timed(lambda: [decode_png_raw(d) for d in png0], len(png0), 2)})
    raw = [x.numpy().tobytes() for x in decoded["new"]]
    shape = tuple(decoded["new"][0].shape)
    rows.append({"stage": "decode", "path": "raw*", **timed(
        lambda: [torch.frombuffer(bytearray(b), dtype=torch.uint8).view(shape) for b in raw], len(raw), 2)})
    crops = {}
    for path in ("old", "new"):
        def crop(path=path):
            rng = np.random.default_rng(0)
            crops[path] = [apply_transform(x, None, size, train=True, hflip=True, rng=rng)[0] for x in decoded[path]]
        rows.append({"stage": "crop/resize", "path": path, **timed(crop, len(pngs), 2)})
    for path in ("old", "new"):
        def collate(path=path):
            for i in range(0, len(crops[path]) - batch + 1, batch):
                torch.stack(crops[path][i:i + batch])
        rows.append({"stage": "collate", "path": path, **timed(collate, len(pngs) // batch * batch, 2)})
    col = MultiBlockMaskCollator(grid=(size // 14, size // 14))
    rows.append({"stage": "masks", "path": "both",
                 **timed(lambda: [col.sample_masks(batch, i) for i in range(len(pngs) // batch)],
                         len(pngs) // batch * batch, 2)})
    return rows


def end_to_end(shards: Path, workers: int, path: str, size: int, batch: int) -> dict:
    """The pretraining loader (train crops + multi-block masks); old = PIL decode + float, new = libpng + uint8."""
    from radjepa_cli.data import shards as shards_mod
    from radjepa_cli.data.loader import make_loader
    from radjepa_cli.pretrain.masks import MultiBlockMaskCollator
    saved = shards_mod._decode_png_torchvision
    if path == "old":   # the PIL fallback is the old decode; forked workers inherit the patch
        shards_mod._decode_png_torchvision = lambda _: None
    try:
        loader = make_loader(shards, split=None, batch_size=batch, image_size=size, train=True, num_workers=workers,
                             drop_last=True, uint8=path == "new", collate_fn=MultiBlockMaskCollator(
                                 grid=(size // 14, size // 14)))
        count = {"n": 0}

        def run():
            for b, _, _ in loader:
                count["n"] += b["image"].shape[0]
        row = timed(run, 0)
    finally:
        shards_mod._decode_png_torchvision = saved
    n = count["n"]
    row.update(n=n, images_per_s=n / row["wall_s"], images_per_s_per_core=n / max(row["cpu_s"], 1e-9))
    return {"stage": "end-to-end", "path": path, "workers": workers, **row}


def serial_rate(rows: list[dict], path: str) -> float:
    """Images/s per core of the stages run one after another (the sum of their per-image CPU times)."""
    per_image = sum(1 / r["images_per_s_per_core"] for r in rows if r["path"] in (path, "both")
                    or (path.endswith("*") and r["path"] == "new" and r["stage"] != "decode"))
    return 1 / per_image


def print_table(rows: list[dict], step: float | None) -> None:
    print(f"{'stage':<12s} {'path':>4s} {'workers':>7s} {'img/s':>8s} {'img/s/core':>10s}"
          + (f" {'÷ step':>7s}" if step else ""))
    for r in rows:
        w = str(r.get("workers", "-"))
        ratio = f" {r['images_per_s'] / step:7.2f}" if step and r["stage"] == "end-to-end" else ""
        print(f"{r['stage']:<12s} {r['path']:>4s} {w:>7s} {r['images_per_s']:8.0f} "
              f"{r['images_per_s_per_core']:10.0f}{ratio}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=Path, default=None, help="existing shard folder (default: make phantoms)")
    ap.add_argument("--n", type=int, default=1536, help="phantom images to make (and at most to time per stage)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--image-size", "--size", dest="image_size", type=int, default=224)
    ap.add_argument("--step-images-per-s", type=float, default=None, help="the training step's images/s")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder (or .json file)")
    ap.add_argument("--paths", nargs="+", default=["old", "new"], choices=["old", "new"])
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)   # as in a loader worker
    shards = a.shards
    if shards is None:
        from radjepa_cli.data.prepare import PrepareConfig, prepare_data
        shards = Path(tempfile.mkdtemp(prefix="radjepa-loader-bench-"))
        prepare_data(PrepareConfig(dataset="synthetic", out=str(shards), n=a.n, size=256, workers=2, salt="b",
                                   shard_size=512, split="all"))
    load0 = os.getloadavg()[0]
    rows = stage_rows(shards, a.n, a.image_size, a.batch)
    rows += [end_to_end(shards, w, p, a.image_size, a.batch) for w in a.workers for p in a.paths]
    print_table(rows, a.step_images_per_s)
    serial = {p: serial_rate([r for r in rows if r["stage"] != "end-to-end"], p)
              for p in ("old", "new", "png0*", "raw*")}
    print("stages one after another, img/s per core: " + ", ".join(f"{p} {v:.0f}" for p, v in serial.items()))
    result = {"benchmark": "loader", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()} {os.cpu_count()} cpus, load {load0:.1f} at start",
              "torch": torch.__version__, "image_size": a.image_size, "batch": a.batch,
              "step_images_per_s": a.step_images_per_s, "serial_stages_per_core": serial,
              "command": "python benchmarks/loader.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "results": rows}
    out = a.out if a.out.suffix == ".json" else a.out / "loader.json"
    write_json(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
