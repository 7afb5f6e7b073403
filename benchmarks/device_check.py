"""The one prepared device check: correctness and speed of the GPU path in one call, everything written to --out.

    python benchmarks/device_check.py --out OUT            # one GPU, <= 8 minutes   (make device-check OUT=DIR)
    python benchmarks/device_check.py --out OUT --cpu      # CPU smoke mode, ~1-2 minutes (make device-check-cpu)

Parts, each a subprocess of this script (so a crash or a hang is recorded and the others still run) with its own
time budget inside a total one:
  kernel_check     kernels/check.py on every family the predictor uses: attention dense / key padding / packed
                   varlen × head dims 32, 64, 128 × bf16, fp16, fp32; gather; EMA
  kernel_timing    benchmarks/kernels.py: ours vs eager, each pinned SDPA backend and torch.compile (+ its own
                   correctness pass at predictor-size shapes on a GPU)
  pretrain_step    benchmarks/pretrain_step.py: ViT-B/14 step, eager vs triton vs torch.compile, first-step losses
                   compared, peak memory per backend, MFU
  loader           benchmarks/loader.py with all cores (its CLI is being reworked: a usage error, exit 2, is recorded
                   as "skipped", not a failure)
  phantom_pretrain prepare-data synthetic, then `pretrain --gpus 1` through the real launcher (~2 minutes)
  generate         benchmarks/generate.py: report generation tokens/s with and without the KV cache

Writes OUT/device_check.json, OUT/SUMMARY.md, and per part OUT/<part>.log plus its own JSON. Exit 1 when any part
fails. The device machine has no network and no pip install of this package: every part runs from this source tree
(PYTHONPATH) with the machine's torch; `radjepa_kernels` is mapped to kernels/ by a symlink, and --cpu mode blocks
the packages that machine lacks (webdataset, pydicom, rouge_score, gguf, xformers) so a top-level import of one of
them fails here first.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MISSING_ON_DEVICE = ("webdataset", "pydicom", "rouge_score", "gguf", "xformers")
TOTAL_BUDGET_S = {"gpu": 470.0, "cpu": 150.0}
# Seconds per part (GPU, CPU). A part past its budget is killed and fails; the sum stays inside the total.
# kernel_check compiles every autotune candidate (10 per attention family, ~1 s each) and pretrain_step compiles
# the whole model once with torch.compile: the largest shares. The GPU column sums to the GPU total.
BUDGETS = {"kernel_check": (120, 40), "kernel_timing": (100, 25), "pretrain_step": (110, 50), "loader": (30, 25),
           "phantom_pretrain": (80, 45), "generate": (30, 25)}
USAGE_ERROR = 2   # argparse's exit status for a command line it does not accept

BLOCKER = '''"""Written by benchmarks/device_check.py --cpu: the device machine lacks these packages; fail on import."""
import importlib.abc
import sys

BLOCKED = {names!r}


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not installed on the device machine (blocked by device_check --cpu)")
        return None


sys.meta_path.insert(0, _Blocker())
'''


# ---------------------------------------------------------------------------------------------- environment
def part_env(work: Path, cpu: bool) -> dict[str, str]:
    """Environment for every part: this tree on PYTHONPATH, `radjepa_kernels` → kernels/ (a symlink, as the
    package's setuptools mapping does), and in CPU mode the interpreter for Triton and the import blocker."""
    site = work / "site"
    site.mkdir(parents=True, exist_ok=True)
    link = site / "radjepa_kernels"
    if not link.exists():
        link.symlink_to(ROOT / "kernels", target_is_directory=True)
    # Keep the caller's PYTHONPATH after ours: wheels of missing pure-Python packages may be carried on it.
    path = [str(site), str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RADJEPA_KERNEL_CACHE": str(work / "selfcheck.json"),
           "MPLBACKEND": "Agg"}
    if cpu:
        (site / "sitecustomize.py").write_text(BLOCKER.format(names=set(MISSING_ON_DEVICE)))
        env.update(TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    return env


def python() -> list[str]:
    return [sys.executable]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from radjepa_cli.cli import app; app()", *args]


# ---------------------------------------------------------------------------------------------- parts
def part_commands(name: str, out: Path, work: Path, cpu: bool, budget: float) -> list[list[str]]:
    """The command(s) of one part, run in order; the part fails at the first non-zero exit."""
    b = ROOT / "benchmarks"
    if name == "kernel_check":
        return [python() + [str(Path(__file__)), "--inner-kernel-check", str(out / "kernel_check.json"),
                            "--inner-deadline-s", str(int(budget - 10))] + (["--cpu"] if cpu else [])]
    if name == "kernel_timing":
        skip = ["--skip", "check,ema,gather"] if cpu else []   # CPU smoke: attention only (kernel_check checked)
        return [python() + [str(b / "kernels.py"), "--out", str(out / "kernels"), *skip,
                            "--budget-s", str(int(0.8 * budget))]]
    if name == "pretrain_step":
        args = (["--model", "vit_tiny", "--depth", "2", "--pred-depth", "1", "--pred-dim", "96", "--image-size",
                 "32", "--patch-size", "8", "--batch-size", "4", "--steps", "1", "--warmup", "0", "--min-keep", "0",
                 "--kernels", "eager,triton", "--device", "cpu"] if cpu else
                ["--model", "vit_base", "--image-size", "224", "--patch-size", "14", "--batch-size", "128",
                 "--steps", "10", "--warmup", "3", "--kernels", "eager,triton,compile"])
        return [python() + [str(b / "pretrain_step.py"), *args, "--out", str(out / "pretrain_step.json")]]
    shards = work / "shards"
    if name == "loader":
        cores = str(os.cpu_count() or 1)
        args = ["--n", "64", "--workers", "0", "--batch", "16", "--size", "64"] if cpu else \
            ["--n", "1024", "--workers", cores, "--batch", "64", "--size", "224"]
        return [python() + [str(b / "loader.py"), "--shards", str(shards), *args, "--out", str(out / "loader.json")]]
    if name == "phantom_pretrain":
        run = work / "run"
        common = ["--log-every", "5", "--ckpt-every", "1000", "--milestone-every", "100000"]
        train = (["--device", "cpu", "--model", "vit_tiny", "--depth", "2", "--image-size", "32", "--patch-size",
                  "8", "--pred-depth", "1", "--pred-dim", "96", "--min-keep", "0", "--batch-size", "8", "--steps",
                  "6", "--num-workers", "0", "--threads", "1"] if cpu else
                 ["--gpus", "1", "--model", "vit_base", "--batch-size", "64", "--steps", "200", "--num-workers",
                  str(max(1, (os.cpu_count() or 2) - 2))])
        return [cli("pretrain", str(shards), "--out", str(run), *train, *common)]
    if name == "generate":
        args = ["--batch-sizes", "1", "--new-tokens", "8", "--image-tokens", "16", "--device", "cpu",
                "--threads", "1"] if cpu else ["--batch-sizes", "1,8", "--new-tokens", "150", "--device", "cuda"]
        return [python() + [str(b / "generate.py"), *args, "--out", str(out / "generate.json")]]
    raise ValueError(f"unknown part {name!r}")


def run_cmd(cmd: list[str], env: dict, log, timeout: float) -> int:
    """Run cmd with output to log; past `timeout` kill its whole process group (loader workers, compile workers),
    not only the direct child, so nothing of a killed part keeps using the machine."""
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def make_shards(work: Path, env: dict, cpu: bool, log, timeout: float) -> int:
    """Phantom shards for the loader and the pretraining parts, made once with the real prepare-data CLI."""
    if (work / "shards" / "manifest.json").is_file():
        return 0
    n, size = ("64", "64") if cpu else ("2048", "256")
    cmd = cli("prepare-data", "synthetic", "--out", str(work / "shards"), "--n", n, "--size", size,
              "--shard-size", "256", "--salt", "devcheck", "--split", "all")
    return run_cmd(cmd, env, log, timeout)


def run_part(name: str, out: Path, work: Path, env: dict, cpu: bool, budget: float) -> dict:
    t0 = time.perf_counter()
    row = {"part": name, "budget_s": budget, "log": f"{name}.log"}
    with open(out / f"{name}.log", "w") as log:
        try:
            if name in ("loader", "phantom_pretrain") and make_shards(work, env, cpu, log, budget) != 0:
                row.update(status="failed", why="prepare-data synthetic failed (see the log)")
                return _done(row, t0)
            for cmd in part_commands(name, out, work, cpu, budget):
                rc = run_cmd(cmd, env, log, budget - (time.perf_counter() - t0))
                if rc != 0:
                    tolerated = name == "loader" and rc == USAGE_ERROR
                    row.update(status="skipped" if tolerated else "failed", rc=rc,
                               why="benchmarks/loader.py rejected the command line (its CLI is being reworked)"
                               if tolerated else f"exit code {rc} (see the log)")
                    return _done(row, t0)
            row["status"] = "ok"
        except subprocess.TimeoutExpired:
            row.update(status="failed", why=f"over its {budget:.0f} s budget (killed)")
        except Exception as e:  # noqa: BLE001 - the orchestrator itself must never stop the other parts
            row.update(status="failed", why=f"{type(e).__name__}: {e}")
    return _done(row, t0)


def _done(row: dict, t0: float) -> dict:
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


# ---------------------------------------------------------------------------------------------- kernel check
def kernel_families(cpu: bool):
    """Every family the predictor's attention uses on a GPU; under the interpreter (~0.5 ms per program) a subset
    that still covers each op, mode, head dim and dtype once."""
    from radjepa_kernels.check import Family
    if cpu:
        return [Family("attention", "fp32", 32, "dense"), Family("attention", "bf16", 128, "kpm"),
                Family("attention_varlen", "fp16", 64), Family("gather_tokens", "bf16", variant="pos"),
                Family("ema_update_", "fp32")]
    fams = []
    for dtype in ("bf16", "fp32", "fp16"):   # what training runs first, then inference; the deadline cuts the end
        for hd in (32, 64, 128):
            fams += [Family("attention", dtype, hd, "dense"), Family("attention", dtype, hd, "kpm"),
                     Family("attention_varlen", dtype, hd)]
        fams += [Family("gather_tokens", dtype, variant=v) for v in ("pos", "nopos")] + [Family("ema_update_", dtype)]
    return fams


def inner_kernel_check(path: Path, cpu: bool, deadline_s: float) -> int:
    """Check each family once (selfcheck fills the verdict cache the later parts' `--kernels auto` reads), writing
    the JSON after every family so a kill keeps what was done; families the deadline leaves out fail the part."""
    import torch

    from radjepa_kernels.check import selfcheck
    t0 = time.perf_counter()
    device = torch.device("cpu" if cpu else "cuda")
    fams = kernel_families(cpu)
    rows: dict[str, dict] = {}
    for i, fam in enumerate(fams):
        if time.perf_counter() - t0 > deadline_s:
            for f in fams[i:]:
                rows[f.name] = {"op": f.op, "dtype": f.dtype, "head_dim": f.head_dim or None, "passed": False,
                                "error": "not run: the part's time budget ran out"}
            print(f"time budget: {len(fams) - i} families not checked", flush=True)
            break
        r = rows[fam.name] = selfcheck(device, [fam], use_cache=False)["checks"][fam.name]
        print(f"[{'ok' if r['passed'] else 'FAIL'}] {fam.name:40s} "
              + (f"rel.err {r['max_rel_err']:.2e} (tol {r['tol']:.1e})" if r["error"] is None else r["error"])
              + f"  {r['seconds']:.1f} s", flush=True)
        path.write_text(json.dumps({"device": str(device), "checks": rows}, indent=1))
    path.write_text(json.dumps({"device": str(device), "checks": rows}, indent=1))
    return 0 if all(r["passed"] for r in rows.values()) else 1


# ---------------------------------------------------------------------------------------------- report
def figures(name: str, out: Path, work: Path) -> dict:
    """The few numbers of a part worth a line in the summary (read back from its own JSON)."""
    def load(p: Path):
        return json.loads(p.read_text()) if p.is_file() else None
    try:
        if name == "kernel_check" and (d := load(out / "kernel_check.json")):
            c = d["checks"].values()
            return {"families": len(c), "failed": [f"{r['op']}[{r['dtype']},d{r['head_dim']}"
                                                   f"{',' + r['variant'] if r.get('variant') else ''}]"
                                                   for r in c if not r["passed"]]}
        if name == "kernel_timing" and (d := load(out / "kernels" / "kernels.json")):
            return {"rows": len(d["results"]), "copy_gbps": round(d["meta"]["copy_gbps"]),
                    "budget_cut": d["meta"].get("budget_cut", [])}
        if name == "pretrain_step" and (d := load(out / "pretrain_step.json")):
            return {r["kernels"]: {k: (round(r[k], 4) if isinstance(r.get(k), float) else r.get(k))
                                   for k in ("images_per_s", "mfu", "max_memory_gib", "loss_first_step",
                                             "loss_rel_err", "error")} for r in d}
        if name == "loader" and (d := load(out / "loader.json")):
            return {"best_images_per_s": round(max(r["images_per_s"] for r in d["results"]), 1)}
        if name == "phantom_pretrain" and (m := work / "run" / "metrics.jsonl").is_file():
            lines = [json.loads(x) for x in m.read_text().splitlines() if x.strip()]
            steps = [x for x in lines if "loss" in x]
            return {"steps": steps[-1].get("step") if steps else None,
                    "first_loss": steps[0]["loss"] if steps else None, "last_loss": steps[-1]["loss"] if steps
                    else None, "complete": (work / "run" / "COMPLETE").exists()}
        if name == "generate" and (d := load(out / "generate.json")):
            return {f"b{r['batch_size']}{'' if r['kv_cache'] else ' no-cache'}": r["tokens_per_s"] for r in d["rows"]}
    except Exception as e:  # noqa: BLE001 - a malformed part output must not hide the other parts
        return {"unreadable": f"{type(e).__name__}: {e}"}
    return {}


def summary_markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"# Device check ({meta['mode']})", "",
             f"{meta['device']}; torch {meta['torch']}, triton {meta['triton']}, Python {meta['python']}; "
             f"{meta['date']}; {meta['seconds']:.0f} s of a {meta['total_budget_s']:.0f} s budget.", "",
             "| part | status | s (budget) | figures / why |", "|---|---|---:|---|"]
    for r in rows:
        detail = r.get("why") or json.dumps(r.get("figures", {}))[:300]
        lines.append(f"| {r['part']} | {r['status']} | {r['seconds']:.0f} ({r['budget_s']:.0f}) | {detail} |")
    failed = [r["part"] for r in rows if r["status"] == "failed"]
    lines += ["", f"Result: {'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}. "
              "Logs: <part>.log; numbers: device_check.json and each part's JSON."]
    return "\n".join(lines) + "\n"


def versions() -> dict:
    import platform

    import torch
    try:
        import triton
        tv = triton.__version__
    except Exception:  # noqa: BLE001
        tv = "not installed"
    gpu = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name(0) if gpu else f"CPU {platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__, "triton": tv, "python": platform.python_version()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="folder for every result (created)")
    ap.add_argument("--cpu", action="store_true", help="CPU smoke mode: small shapes, the Triton interpreter")
    ap.add_argument("--parts", default=",".join(BUDGETS), help=f"comma list of parts (default all: "
                                                               f"{','.join(BUDGETS)})")
    ap.add_argument("--total-budget-s", type=float, default=None, help="default 470 on a GPU, 150 in --cpu mode")
    ap.add_argument("--inner-kernel-check", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--inner-deadline-s", type=float, default=1e9, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.inner_kernel_check:
        return inner_kernel_check(a.inner_kernel_check, a.cpu, a.inner_deadline_s)
    if a.out is None:
        ap.error("--out DIR is required")
    parts = [p for p in a.parts.split(",") if p]
    unknown = set(parts) - set(BUDGETS)
    if unknown:
        ap.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(BUDGETS)}")
    mode = "cpu" if a.cpu else "gpu"
    total = a.total_budget_s or TOTAL_BUDGET_S[mode]
    out = a.out.resolve()
    work = out / "work"
    out.mkdir(parents=True, exist_ok=True)
    env = part_env(work, a.cpu)
    Path(env["RADJEPA_KERNEL_CACHE"]).unlink(missing_ok=True)   # verdicts of an earlier run into this OUT: recheck
    meta = {"mode": mode, "total_budget_s": total, "date": dt.datetime.now(dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC"), **versions()}
    if mode == "gpu" and "CPU" in meta["device"]:
        print("no CUDA device: run with --cpu for the smoke mode", file=sys.stderr)
        return 1
    t0, rows = time.perf_counter(), []
    for name in parts:
        left = total - (time.perf_counter() - t0)
        budget = min(BUDGETS[name][1 if a.cpu else 0], left)
        if budget < 5:
            rows.append({"part": name, "status": "failed", "why": "no time left in the total budget",
                         "seconds": 0.0, "budget_s": max(budget, 0.0)})
            continue
        print(f"== {name} (budget {budget:.0f} s)", flush=True)
        row = run_part(name, out, work, env, a.cpu, budget)
        row["figures"] = figures(name, out, work)
        rows.append(row)
        print(f"   {row['status']} in {row['seconds']:.0f} s {row.get('why', '')} {json.dumps(row['figures'])[:200]}",
              flush=True)
    meta["seconds"] = time.perf_counter() - t0
    (out / "device_check.json").write_text(json.dumps({"meta": meta, "parts": rows}, indent=1))
    (out / "SUMMARY.md").write_text(summary_markdown(meta, rows))
    failed = [r["part"] for r in rows if r["status"] == "failed"]
    print(f"wrote {out / 'SUMMARY.md'}; {'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
