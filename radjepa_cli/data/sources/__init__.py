"""Dataset sources: name → Source class, imported lazily so a missing optional module breaks only its own name."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .base import Source, SourceItem

# name → (module, class). Order = order in `radjepa prepare-data --help`.
SOURCES: dict[str, tuple[str, str]] = {
    "synthetic": ("synthetic", "SyntheticSource"),
    "folder": ("folder", "FolderSource"),
    "mimic-cxr": ("mimic", "MimicCxrSource"),
    "chexpert": ("chexpert", "ChexpertSource"),
    "nih14": ("nih", "Nih14Source"),
    "padchest": ("padchest", "PadChestSource"),
    "brax": ("brax", "BraxSource"),
    "vindr-cxr": ("vindr", "VindrCxrSource"),
    "rsna": ("rsna", "RsnaSource"),
    "iu-xray": ("iuxray", "IuXraySource"),
    "vindr-ribcxr": ("vindr_rib", "VindrRibCxrSource"),
    "imagenome": ("imagenome", "ImagenomeSource"),
}


def source_class(name: str) -> type[Source]:
    if name not in SOURCES:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(SOURCES)}")
    module, cls = SOURCES[name]
    try:
        mod = importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"{__name__}.{module}":
            raise KeyError(f"dataset {name!r} is not available in this build (module {e.name} missing)") from None
        raise
    return getattr(mod, cls)


def get_source(name: str, root: str | Path | None = None, **opts: Any) -> Source:
    """Instantiate a source: `synthetic` takes (n, seed, **phantom options); every other source takes ROOT first."""
    cls = source_class(name)
    if name == "synthetic":
        return cls(**opts)
    if root is None:
        raise ValueError(f"dataset {name!r} needs ROOT, the folder holding its files")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{name} ROOT {root} does not exist")
    return cls(root, **opts)


def describe(name: str) -> str:
    """First paragraph of the source class docstring, read without importing the module (fast `--help`)."""
    import ast
    module, cls = SOURCES[name]
    path = Path(__file__).with_name(f"{module}.py")
    doc = None
    if path.is_file():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name == cls:
                doc = ast.get_docstring(node)
    if not doc:
        return f"{name}: (not available in this build)"
    text = " ".join(doc.strip().split("\n\n")[0].split())
    return text if text.startswith(f"{name}:") else f"{name}: {text}"


__all__ = ["Source", "SourceItem", "SOURCES", "get_source", "source_class", "describe"]
