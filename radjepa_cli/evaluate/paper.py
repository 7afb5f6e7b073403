"""The paper's published numbers (shipped as data in paper_numbers.json) and name matching with ours."""
from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

DATASET_NAMES = {"mimic": "MIMIC-CXR", "mimiccxr": "MIMIC-CXR", "iu": "IU-Xray", "iuxray": "IU-Xray",
                 "openi": "IU-Xray", "vindr": "VinDr-CXR", "vindrcxr": "VinDr-CXR", "rsna": "RSNA"}
# What our method reproduces: an encoder the paper does not list is compared with this row.
OUR_METHOD = "RadJEPA"


@lru_cache(maxsize=1)
def paper_numbers() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath("paper_numbers.json").read_text())


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9@]", "", s.lower())


def display(name: str) -> str:
    """Paper key → printed name ('RadJEPA_control' → 'RadJEPA (control)')."""
    return name.replace("_control", " (control)")


def paper_encoder(ours: str) -> str | None:
    """Map our encoder string (a zoo spec like 'rad-dino:PATH', a run dir, a name) onto a paper encoder name."""
    head = ours.split(":", 1)[0] if ":" in ours and not ours.startswith("/") else ours
    head = head.rstrip("/").split("/")[-1]
    key = _norm(head)
    for name in paper_numbers()["encoders"]:
        if _norm(name.replace("_control", "control")) == key or _norm(name) == key:
            return name
    aliases = {"raddino": "RAD-DINO", "dinov2": "DINO-v2", "ijepa": "I-JEPA", "radjepa": "RadJEPA",
               "radjeparelease": "RadJEPA", "chexworld": "CheXWorld", "biomedclip": "BiomedCLIP"}
    return aliases.get(key)


def paper_dataset(ours: str) -> str:
    return DATASET_NAMES.get(_norm(ours), ours)
