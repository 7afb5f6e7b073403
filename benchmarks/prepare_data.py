"""prepare-data throughput: wall clock and CPU time for phantom shards and for decoding a real DICOM radiograph.

    python benchmarks/prepare_data.py --n 2000 --workers 2 --out benchmarks/results/prepare_data.json

Issue 2 target: `radjepa prepare-data synthetic --n 2000` in under 2 minutes on 2 cores. CPU seconds (this process
plus its workers) give the per-core rate, independent of how busy a shared machine is; wall time and the load
average say how busy it was. Also times the per-sample stages (phantom render, PNG + mask encoding) and the
decode + resize of RG1_UNCR.dcm (1955x1841, 15-bit) as a stand-in for real DICOM datasets.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
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


def end_to_end(n: int, workers: int, size: int) -> dict:
    from radjepa_cli.data.prepare import PrepareConfig, prepare_data
    out = Path(tempfile.mkdtemp(prefix="radjepa-bench-"))
    try:
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        m = prepare_data(PrepareConfig(dataset="synthetic", out=str(out), n=n, size=size, workers=workers, salt="b"))
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        nbytes = sum(s["bytes"] for s in m["shards"])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"stage": "prepare-data synthetic (end to end)", "n": n, "workers": workers, "size": size, "wall_s": wall,
            "cpu_s": cpu, "images_per_s_wall": n / wall, "images_per_s_per_core": n / cpu,
            "mb_per_image": nbytes / n / 1e6}


def stages(n: int, size: int) -> list[dict]:
    from radjepa_cli.data.decode import decode_image
    from radjepa_cli.data.embedded import rg1_dicom
    from radjepa_cli.data.phantom import PhantomConfig, generate
    from radjepa_cli.data.shards import encode_record, resize_shorter
    cfg = PhantomConfig(size=size, seed=0)
    rows = []
    t = time.process_time()
    recs = [generate(i, cfg) for i in range(n)]
    rows.append({"stage": f"phantom render {size}px", "ms_cpu": 1000 * (time.process_time() - t) / n})
    t = time.process_time()
    for r in recs:
        encode_record(r, size)
    rows.append({"stage": "encode PNG + json + 29 masks", "ms_cpu": 1000 * (time.process_time() - t) / n})
    k = max(3, n // 20)
    t = time.process_time()
    for _ in range(k):
        resize_shorter(decode_image(rg1_dicom()), size)
    rows.append({"stage": f"decode RG1 DICOM 1955x1841 + resize to {size}", "ms_cpu": 1000 * (time.process_time() - t) / k})
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--stage-n", type=int, default=50, help="samples for the per-stage timings")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/prepare_data.json"))
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load0 = os.getloadavg()[0]
    per_stage = stages(a.stage_n, a.size)
    e2e = end_to_end(a.n, a.workers, a.size)
    for r in per_stage:
        print(f"{r['stage']:<48s} {r['ms_cpu']:8.1f} ms CPU")
    print(f"{e2e['stage']}: n={a.n} workers={a.workers}: {e2e['wall_s']:.1f} s wall, {e2e['cpu_s']:.1f} CPU-s → "
          f"{e2e['images_per_s_per_core']:.1f} img/s per core, {e2e['images_per_s_wall']:.1f} img/s wall "
          f"(load average {load0:.1f} on {os.cpu_count()} cpus)")
    result = {"benchmark": "prepare_data", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()} {os.cpu_count()} cpus, load {load0:.1f} → {os.getloadavg()[0]:.1f}",
              "command": "python benchmarks/prepare_data.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "target": "synthetic --n 2000 in < 120 s on 2 cores", "stages": per_stage, "end_to_end": e2e}
    write_json(a.out, result)
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
