"""`radjepa evaluate agreement RATINGS.csv`: the paper's grading-study statistics (Appendix 14, Tables 10–11).

RATINGS.csv: one row per graded report, an id column and one integer column per rater (0–5 clinical score; blank
= missing). Humans and LLM judges are named by the caller; the judges' per-item majority becomes the "Master vote".
The binary Acceptable flag is score >= threshold (the paper: 4).
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..metrics import agreement as ag

MASTER = "LLM Master vote"


@dataclasses.dataclass
class AgreementConfig:
    ratings: str
    id_column: str = "id"
    humans: tuple[str, ...] = ()
    judges: tuple[str, ...] = ()
    acceptable_threshold: int = 4


def read_ratings(path: str | Path, id_column: str = "id") -> tuple[list[str], dict[str, np.ndarray]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or id_column not in reader.fieldnames:
            raise ValueError(f"{path}: no {id_column!r} column (columns: {reader.fieldnames})")
        raters = [c for c in reader.fieldnames if c != id_column]
        if len(raters) < 2:
            raise ValueError(f"{path}: need at least two rater columns besides {id_column!r}")
        ids, cols = [], {r: [] for r in raters}
        for line, row in enumerate(reader, 2):
            ids.append(row[id_column])
            for r in raters:
                v = (row[r] or "").strip()
                try:
                    cols[r].append(float(v) if v else np.nan)
                except ValueError:
                    raise ValueError(f"{path}:{line}: rater {r!r} has non-numeric score {v!r}") from None
    return ids, {r: np.asarray(v) for r, v in cols.items()}


def _pair(a: np.ndarray, b: np.ndarray, thr: int) -> dict[str, float]:
    ok = ~np.isnan(a) & ~np.isnan(b)
    a, b = a[ok], b[ok]
    labels = sorted(set(a.tolist()) | set(b.tolist()))
    return {"n": int(ok.sum()), "qwk": ag.cohen_kappa(a, b, "quadratic", labels),
            "kappa_acceptable": ag.cohen_kappa(a >= thr, b >= thr, None, [False, True]),
            "within_1": ag.within(a, b, 1)}


def agreement_study(cfg: AgreementConfig) -> dict[str, Any]:
    ids, cols = read_ratings(cfg.ratings, cfg.id_column)
    for name in (*cfg.humans, *cfg.judges):
        if name not in cols:
            raise ValueError(f"{cfg.ratings}: no rater column {name!r} (columns: {list(cols)})")
    raters = list(cols)
    humans = list(cfg.humans) or ([] if cfg.judges else raters)
    judges = list(cfg.judges)
    if judges:
        cols[MASTER] = ag.majority_vote(np.stack([cols[j] for j in judges], 1))
    pairs: list[tuple[str, str]] = list(itertools.combinations(humans, 2))
    pairs += [(h, x) for h in humans for x in ([MASTER] if judges else []) + judges]
    thr = cfg.acceptable_threshold
    pairwise = [{"pair": [a, b], **_pair(cols[a], cols[b], thr)} for a, b in pairs]
    panel = [r for r in raters if r in humans or r in judges] or raters
    mat = np.stack([cols[r] for r in panel], 1)
    complete = mat[~np.isnan(mat).any(1)]
    multi = {
        "raters": panel, "items": len(ids), "complete_items": int(len(complete)),
        "krippendorff_alpha_ordinal": ag.krippendorff_alpha(mat.T, "ordinal"),
        "icc_2_1": ag.icc_2_1(complete) if len(complete) > 1 else None,
        "fleiss_kappa_acceptable": ag.fleiss_kappa(complete >= thr) if len(complete) else None,
    }
    if judges and humans:
        multi["within_1_human_vs_master"] = float(np.mean([_pair(cols[h], cols[MASTER], thr)["within_1"]
                                                           for h in humans]))
    return {"kind": "agreement", "config": dataclasses.asdict(cfg), "pairwise": pairwise, "multi_rater": multi,
            "master_vote": cols[MASTER].tolist() if judges else None}
