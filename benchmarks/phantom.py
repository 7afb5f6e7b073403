"""Phantom generator throughput: phantoms per second per core (CPU time) and wall clock, at one or more sizes.

    python benchmarks/phantom.py --n 200 --sizes 256 518 --out benchmarks/results/phantom_throughput.json

Target (issue 2): >= 50 phantoms/s per core at 256 px. CPU time per phantom is the per-core figure (it is what a
worker process spends); wall time also shows how busy the machine was.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from radjepa_cli.data.phantom import PhantomConfig, generate  # noqa: E402
from radjepa_cli.io import write_json  # noqa: E402


def measure(size: int, n: int, seed: int = 0) -> dict:
    cfg = PhantomConfig(size=size, seed=seed)
    generate(0, cfg)  # warm-up (imports, caches)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(1, n + 1):
        generate(i, cfg)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"size": size, "n": n, "cpu_s": cpu, "wall_s": wall, "per_core_per_s": n / cpu, "wall_per_s": n / wall,
            "ms_per_phantom_cpu": 1000 * cpu / n}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/phantom_throughput.json"))
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = [measure(s, a.n) for s in a.sizes]
    print(f"{'size':>5s} {'n':>5s} {'ms/phantom (CPU)':>17s} {'phantoms/s/core':>16s} {'phantoms/s wall':>16s}")
    for r in rows:
        print(f"{r['size']:5d} {r['n']:5d} {r['ms_per_phantom_cpu']:17.1f} {r['per_core_per_s']:16.1f} {r['wall_per_s']:16.1f}")
    result = {"benchmark": "phantom_throughput", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, load "
                         f"{os.getloadavg()[0]:.1f}".strip(),
              "command": "python benchmarks/phantom.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "target_per_core_per_s_at_256": 50, "results": rows}
    write_json(a.out, result)
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
