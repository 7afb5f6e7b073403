"""Reading what the other stages wrote: predictions.jsonl, probe / segment results.json (DESIGN.md contracts).

Every reader validates and fails with the file name and the problem; discovery walks a runs directory.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ..io import read_json

PREDICTIONS_NAME = "predictions.jsonl"
RESULTS_NAME = "results.json"
PROBE_KEYS = ("encoder", "label_set", "per_class", "aggregate")
SEGMENT_KEYS = ("encoder", "decoder", "task", "per_structure", "mean_dice")


def load_predictions(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a predictions.jsonl; each needs `id` and `generated` (str); `reference` is needed for scoring."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    rows = []
    with path.open() as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
            if not isinstance(row.get("generated"), str):
                raise ValueError(f"{path}:{i}: missing string field 'generated'")
            if "reference" in row and row["reference"] is not None and not isinstance(row["reference"], str):
                raise ValueError(f"{path}:{i}: 'reference' must be a string")
            row.setdefault("id", f"{path.stem}:{i}")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no predictions in the file")
    return rows


def load_results(path: str | Path) -> dict[str, Any]:
    """A probe or segment results.json, checked against its contract (`kind` decides which)."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    kind = data.get("kind")
    keys = {"probe": PROBE_KEYS, "segment": SEGMENT_KEYS}.get(kind)
    if keys is None:
        raise ValueError(f"{path}: 'kind' is {kind!r}; expected 'probe' or 'segment'")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{path}: {kind} results lack {missing}")
    data["_path"] = str(path)
    return data


def discover(runs: str | Path) -> dict[str, list[Path]]:
    """{'predictions': [...], 'probe': [...], 'segment': [...]} found recursively under `runs` (sorted)."""
    runs = Path(runs)
    found: dict[str, list[Path]] = {"predictions": [], "probe": [], "segment": []}
    if not runs.is_dir():
        return found
    found["predictions"] = sorted(p for p in runs.rglob(PREDICTIONS_NAME) if p.is_file())
    for p in sorted(runs.rglob(RESULTS_NAME)):
        try:
            kind = json.loads(p.read_text()).get("kind")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue  # other tools' results.json (e.g. our own report scores) are not inputs here
        if kind in ("probe", "segment"):
            found[kind].append(p)
    return found


def classify_inputs(paths: Iterable[str | Path]) -> dict[str, list[Path]]:
    """Sort explicit INPUTS (files or directories) into predictions / probe / segment."""
    found: dict[str, list[Path]] = {"predictions": [], "probe": [], "segment": []}
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for k, v in discover(p).items():
                found[k] += v
        elif p.suffix == ".jsonl":
            found["predictions"].append(p)
        elif p.suffix == ".json":
            found[load_results(p)["kind"]].append(p)
        else:
            raise ValueError(f"{p}: not a predictions .jsonl, a results.json or a directory holding them")
    return found
