"""Procedural frontal chest radiographs with ground truth: the phantom benchmark.

    rec = generate(index, PhantomConfig(seed=0))      # deterministic in (seed, index), independent of call order

Each phantom draws its labels (configurable prevalence and pairwise co-occurrence), then the size / severity /
laterality of every finding (`difficulty` skews them towards subtle), a random anatomy, and an acquisition
(exposure, noise, blur, rotation, scale, shift, collimation, side marker, PA/AP). Geometry lives in
phantom_anatomy, findings in phantom_findings, the report text in phantom_text. Masks are evaluated on the same
warped grid as the image, so they stay aligned through every acquisition transform.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from .labels import LUNG_ZONES, LUNGS, PHANTOM, RIBS
from .phantom_anatomy import Canvas, render_anatomy, sample_anatomy
from .phantom_findings import FINDINGS, render_findings, sample_labels, sample_truth, topological_order
from .phantom_text import write_report
from .record import Record

assert set(FINDINGS) | {"No Finding"} == set(PHANTOM), "phantom findings and labels.PHANTOM disagree"
MASK_NAMES = LUNGS + LUNG_ZONES + RIBS + ("heart",)


def _default_prevalence() -> dict[str, float]:
    return {
        "Cardiomegaly": 0.15, "Enlarged Cardiomediastinum": 0.08, "Pleural Effusion": 0.17, "Pneumothorax": 0.08,
        "Consolidation": 0.08, "Lung Opacity": 0.12, "Atelectasis": 0.12, "Edema": 0.1, "Lung Lesion": 0.1,
        "Pleural Thickening": 0.07, "Support Devices": 0.2, "Fracture": 0.07, "Aortic Enlargement": 0.08,
    }


def _default_cooccurrence() -> dict[str, dict[str, float]]:
    # The paper's Table 5 (MIMIC-CXR): P(Pleural Effusion | Pneumothorax) = 3552 / 7667 = 0.463.
    return {"Pneumothorax": {"Pleural Effusion": 0.463}}


@dataclass
class PhantomConfig:
    size: int = 256
    seed: int = 0
    prevalence: dict[str, float] = field(default_factory=_default_prevalence)  # names left out keep the default
    # cooccurrence[A][B] = P(B | A present); B's rate without A is lowered so its marginal stays ≈ prevalence[B]
    cooccurrence: dict[str, dict[str, float]] = field(default_factory=_default_cooccurrence)
    difficulty: float = 0.5      # 0 = mostly conspicuous findings, 0.5 = uniform, 1 = mostly subtle
    ap_fraction: float = 0.3     # share of AP (portable) views; AP magnifies the heart
    acquisition: float = 1.0     # scales the acquisition variation (0 = canonical, centred, clean)

    def __post_init__(self):
        if not 32 <= self.size <= 4096:
            raise ValueError(f"PhantomConfig.size must be in [32, 4096], got {self.size}")
        if not (isinstance(self.seed, (int, np.integer)) and self.seed >= 0):
            raise ValueError(f"PhantomConfig.seed must be a non-negative integer, got {self.seed!r}")
        prevalence = {**_default_prevalence(), **dict(self.prevalence)}
        for name, p in prevalence.items():
            if name not in FINDINGS:
                raise ValueError(f"PhantomConfig.prevalence: unknown finding {name!r}; known: {', '.join(FINDINGS)}")
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"PhantomConfig.prevalence[{name!r}] = {p} is not a probability")
        self.prevalence = {k: float(v) for k, v in prevalence.items()}
        for a, row in self.cooccurrence.items():
            for b in (a, *row):
                if b not in FINDINGS:
                    raise ValueError(f"PhantomConfig.cooccurrence: unknown finding {b!r}; known: {', '.join(FINDINGS)}")
            for b, p in row.items():
                if not 0.0 <= float(p) <= 1.0 or a == b:
                    raise ValueError(f"PhantomConfig.cooccurrence[{a!r}][{b!r}] = {p} must be a probability, A != B")
        topological_order(self.cooccurrence)  # raises on a cycle (A conditions B conditions A)
        for name in ("difficulty", "ap_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"PhantomConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.acquisition <= 3.0:
            raise ValueError(f"PhantomConfig.acquisition must be in [0, 3], got {self.acquisition}")


# ----------------------------------------------------------------------------------------------- acquisition

@dataclass
class Acquisition:
    angle: float
    scale: float
    shift: tuple[float, float]
    lo: float
    hi: float
    gamma: float
    heel: float
    blur_px: float
    noise: float
    collimation: dict[str, float]   # image side ('top', 'bottom', 'left', 'right') -> border width (fraction)
    marker: str | None              # 'L' or 'R' (placed on the patient's side), or None


def sample_acquisition(rng: np.random.Generator, view: str, strength: float) -> Acquisition:
    a = strength
    rot = math.radians(float(np.clip(rng.normal(0, 2.5 if view == "PA" else 4.0), -9, 9))) * a
    coll = {}
    if rng.random() < 0.45 * min(1.0, a):
        coll = {s: float(rng.uniform(0.01, 0.07) * a) for s in ("top", "bottom", "left", "right") if rng.random() < 0.6}
    return Acquisition(
        angle=rot, scale=float(1 + a * rng.uniform(-0.1, 0.06)),
        shift=(float(a * rng.uniform(-0.05, 0.05)), float(a * rng.uniform(-0.03, 0.07))),
        lo=float(a * rng.uniform(-0.06, 0.08)), hi=float(0.95 + a * rng.uniform(-0.12, 0.15)),
        gamma=float(np.exp(a * rng.uniform(-0.3, 0.3))), heel=float(a * rng.uniform(-0.06, 0.06)),
        blur_px=float(0.5 + a * rng.uniform(-0.2, 0.7)), noise=float(0.006 + a * rng.uniform(0.0, 0.02)),
        collimation=coll, marker=(str(rng.choice(["L", "R"])) if rng.random() < 0.8 else None),
    )


_GLYPHS = {"L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
           "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"]}


def _apply_acquisition(density: np.ndarray, acq: Acquisition, view: str, rng: np.random.Generator) -> np.ndarray:
    size = density.shape[0]
    ramp = (np.arange(size, dtype=np.float32) / size - 0.5)[:, None]
    img = (density * (1 + acq.heel * 2 * ramp) - acq.lo) / (acq.hi - acq.lo)
    img = np.clip(img, 0, 1) ** np.float32(acq.gamma)
    if acq.marker:  # lead letter on the patient's side (frontal views are displayed with the patient's left on the right)
        glyph = np.array([[c == "1" for c in row] for row in _GLYPHS[acq.marker]], np.float32)
        k = max(1, round(size / 110))
        g = np.kron(glyph, np.ones((k, k), np.float32))
        on_right = acq.marker == "L"
        r0 = int(size * rng.uniform(0.06, 0.16))
        c0 = int(size * rng.uniform(0.05, 0.12))
        c0 = size - c0 - g.shape[1] if on_right else c0
        patch = img[r0:r0 + g.shape[0], c0:c0 + g.shape[1]]
        np.maximum(patch, 0.97 * g[: patch.shape[0], : patch.shape[1]], out=patch)
    if acq.blur_px > 0.05:
        img = gaussian_filter(img, acq.blur_px * size / 256, truncate=2.5)
    for side, w in acq.collimation.items():  # unexposed borders are bright
        n = int(round(w * size))
        if n:
            sl = {"top": np.s_[:n, :], "bottom": np.s_[-n:, :], "left": np.s_[:, :n], "right": np.s_[:, -n:]}[side]
            img[sl] = 0.9 + 0.05 * img[sl]
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    img += np.float32(acq.noise) * (0.5 + img) * noise
    return np.clip(img, 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------------------------- generation

def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _streams(index: int, cfg: PhantomConfig) -> list[np.random.Generator]:
    """Independent random streams (labels, anatomy, findings, acquisition, text) keyed by (seed, index) only."""
    if index < 0:
        raise ValueError(f"phantom index must be >= 0, got {index}")
    seeds = np.random.SeedSequence([int(cfg.seed), int(index), 0x5EED]).spawn(5)
    return [np.random.default_rng(s) for s in seeds]


def _view(r_acq: np.random.Generator, cfg: PhantomConfig) -> str:
    return "AP" if r_acq.random() < cfg.ap_fraction else "PA"


def phantom_view(index: int, cfg: PhantomConfig) -> str:
    """The view of phantom `index` without rendering it (sources enumerate items cheaply)."""
    return _view(_streams(index, cfg)[3], cfg)


def generate(index: int, cfg: PhantomConfig) -> Record:
    """Phantom number `index` of the population defined by `cfg` (same (seed, index) -> same record)."""
    r_labels, r_anat, r_find, r_acq, r_text = _streams(index, cfg)
    present = sample_labels(r_labels, cfg.prevalence, cfg.cooccurrence)
    truth = sample_truth(r_labels, present, cfg.difficulty)
    view = _view(r_acq, cfg)
    acq = sample_acquisition(r_acq, view, cfg.acquisition)
    anatomy = sample_anatomy(r_anat, view, truth)
    canvas = Canvas.warped(cfg.size, acq.angle, acq.scale, acq.shift)
    layers = render_anatomy(canvas, anatomy)
    render_findings(layers, canvas, anatomy, truth, view, r_find)
    image = _apply_acquisition(layers.compose(), acq, view, r_acq)
    findings, impression = write_report(truth, view, r_text)

    labels = {name: int(present.get(name, 0)) for name in PHANTOM}
    # CheXpert's rule: No Finding = 1 iff no abnormality other than Support Devices is present.
    labels["No Finding"] = int(not any(v for k, v in present.items() if k != "Support Devices"))
    patient = f"phantom-s{cfg.seed}-{index:07d}"
    extra = {
        "findings": truth, "ctr": round(anatomy.ctr, 3), "difficulty": cfg.difficulty,
        "acquisition": {k: v for k, v in dataclasses.asdict(acq).items()},
    }
    return Record(
        key=f"phantom-{index:07d}", image=image, dataset="synthetic", view=view, patient=patient,
        study=f"{patient}-study0", split="train", labels=labels, findings=findings, impression=impression,
        masks={name: layers.masks[name] for name in MASK_NAMES}, extra=_jsonable(extra),
    )
