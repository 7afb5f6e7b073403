"""The sample record every data source produces and every shard stores (DESIGN.md, shard contract)."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

VIEWS = ("PA", "AP", "LATERAL", "LL", "AP_SUPINE", "UNKNOWN")
SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Record:
    """One chest radiograph with its metadata.

    image: float32 [H, W] in [0, 1], radiographic polarity (air dark, bone bright).
    masks: named binary masks (bool/uint8 [H, W], same size as image), e.g. 'lung_left', 'R3', 'right_upper'.
    labels: {name: 1 | 0 | -1 | None} (data.labels contract).
    patient: a salted hash, never a raw identifier.
    """

    key: str
    image: np.ndarray
    dataset: str
    view: str = "UNKNOWN"
    patient: str = ""
    study: str = ""
    split: str = "train"
    labels: dict[str, int | None] = dataclasses.field(default_factory=dict)
    findings: str = ""
    impression: str = ""
    masks: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # source-specific, JSON-serialisable

    def meta(self) -> dict[str, Any]:
        """The JSON part of a shard sample (everything except pixels and masks)."""
        return {
            "dataset": self.dataset, "view": self.view, "patient": self.patient, "study": self.study,
            "split": self.split, "labels": dict(self.labels), "findings": self.findings,
            "impression": self.impression, **({"extra": self.extra} if self.extra else {}),
        }
