"""Phantom findings: sampling the ground truth (prevalence, co-occurrence, subtlety) and drawing it onto the anatomy.

Opacities fill lung air (`air *= 1 - fill`), so they only show inside the lungs and silhouette the heart or the
diaphragm the way real air-space disease does; lucencies (pneumothorax) add air and remove vessel markings; devices
are drawn as strokes of radiopaque material. Geometric findings (heart size, mediastinum, aorta, volume loss, rib
fracture) are part of the anatomy (phantom_anatomy.sample_anatomy).
"""
from __future__ import annotations

import math

import numpy as np

from .phantom_anatomy import SIGN, Anatomy, Canvas, Layers, _smooth_step

CM_PER_UNIT = 20.0  # canonical units -> cm (a lung is ~1.2 units ≈ 24 cm tall)
FINDINGS = (
    "Cardiomegaly", "Enlarged Cardiomediastinum", "Pleural Effusion", "Pneumothorax", "Consolidation", "Lung Opacity",
    "Atelectasis", "Edema", "Lung Lesion", "Pleural Thickening", "Support Devices", "Fracture", "Aortic Enlargement",
)
DEVICES = ("endotracheal tube", "nasogastric tube", "central venous catheter", "pacemaker", "ecg leads")
ZONES = ("upper", "middle", "lower")


def topological_order(cooccurrence: dict[str, dict[str, float]]) -> list[str]:
    """Findings ordered so that every conditioning finding is sampled before the ones it conditions."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ValueError(f"cooccurrence has a cycle: {' -> '.join(path + (name,))}")
        state[name] = 1
        for parent, children in cooccurrence.items():
            if name in children:
                visit(parent, path + (name,))
        state[name] = 2
        order.append(name)

    for name in FINDINGS:
        visit(name, ())
    return order


def sample_labels(rng: np.random.Generator, prevalence: dict[str, float],
                  cooccurrence: dict[str, dict[str, float]]) -> dict[str, int]:
    """Bernoulli labels with marginals ≈ `prevalence` and P(child | parent present) = cooccurrence[parent][child].

    When no conditioning parent is present, the child's probability is lowered so its marginal stays close to the
    configured prevalence (exact for one parent; parents are assumed independent otherwise).
    """
    present: dict[str, int] = {}
    for name in topological_order(cooccurrence):
        p = prevalence.get(name, 0.0)
        parents = [(a, c[name]) for a, c in cooccurrence.items() if name in c]
        if parents:
            hits = [cond for a, cond in parents if present[a]]
            if hits:
                p = max(hits)
            else:
                mass = sum(prevalence.get(a, 0.0) * cond for a, cond in parents)
                p_any = 1 - math.prod(1 - prevalence.get(a, 0.0) for a, _ in parents)
                p = (p - mass) / max(1e-9, 1 - p_any)
        present[name] = int(rng.random() < min(1.0, max(0.0, p)))
    return {n: present[n] for n in FINDINGS}


def severity_word(q: float, words=("mild", "moderate", "severe")) -> str:
    return words[min(2, int(q * 3))]


def sample_truth(rng: np.random.Generator, labels: dict[str, int], difficulty: float) -> dict[str, dict]:
    """Size / severity / laterality / location of every present finding (JSON-serialisable)."""
    gamma = 4.0 ** (2 * difficulty - 1)  # difficulty 0: mostly conspicuous, 0.5: uniform, 1: mostly subtle

    def strength() -> float:
        return float(rng.random() ** gamma)

    def side(bilateral: float = 0.0) -> str:
        r = rng.random()
        return "bilateral" if r < bilateral else ("right" if rng.random() < 0.5 else "left")

    truth: dict[str, dict] = {}
    for name in FINDINGS:
        if not labels[name]:
            continue
        q = strength()
        t: dict = {"strength": round(q, 4)}
        if name in ("Cardiomegaly", "Enlarged Cardiomediastinum", "Aortic Enlargement"):
            t["severity"] = severity_word(q)
        elif name == "Pleural Effusion":
            t.update(side=side(0.25), severity=severity_word(q, ("small", "moderate", "large")))
        elif name == "Pneumothorax":
            t.update(side=side(), severity=severity_word(q, ("small", "moderate", "large")))
        elif name in ("Consolidation", "Lung Opacity"):
            t.update(side=side(0.2 if name == "Lung Opacity" else 0.1),
                     zone=str(rng.choice(ZONES, p=(0.25, 0.3, 0.45))), severity=severity_word(q))
        elif name == "Atelectasis":
            t.update(side=side(0.15), kind="volume loss" if q > 0.5 else "plate-like", zone="lower",
                     severity=severity_word(q, ("minimal", "mild", "moderate")))
            if t["kind"] == "volume loss" and t["side"] == "bilateral":
                t["side"] = "right" if rng.random() < 0.5 else "left"
        elif name == "Edema":
            t.update(side="bilateral", severity=severity_word(q))
        elif name == "Lung Lesion":
            d = 0.6 + 2.4 * q / 0.6 if q < 0.6 else 3.0 + 4.0 * (q - 0.6) / 0.4
            t.update(side=side(), zone=str(rng.choice(ZONES, p=(0.45, 0.3, 0.25))),
                     kind="nodule" if d < 3.0 else "mass", size_cm=round(d, 1))
        elif name == "Pleural Thickening":
            t.update(side=side(0.2), kind="apical" if rng.random() < 0.5 else "lateral",
                     severity=severity_word(q, ("minimal", "mild", "marked")))
        elif name == "Support Devices":
            k = 1 + int(rng.random() < 0.45) + int(rng.random() < 0.15)
            t["devices"] = sorted(str(d) for d in rng.choice(DEVICES, size=k, replace=False, p=(0.3, 0.22, 0.26, 0.1, 0.12)))
            t["ett_cm_above_carina"] = round(float(rng.uniform(2.0, 7.0)), 1)
            t["cvc"] = "right internal jugular" if rng.random() < 0.6 else "left subclavian"
        elif name == "Fracture":
            t.update(side=side(), rib=int(rng.integers(3, 10)), kind="displaced" if q > 0.55 else "nondisplaced")
        truth[name] = t
    return truth


def _sides(s: str) -> tuple[str, ...]:
    return ("right", "left") if s == "bilateral" else (s,)


def _wavy(rng: np.random.Generator, cv: Canvas, freq: float = 25.0, n: int = 3) -> np.ndarray:
    """Smooth random field in [-1, 1] (sum of random plane waves): ragged edges and mottling, cheaply."""
    out = np.zeros_like(cv.X)
    for _ in range(n):
        a, k, ph = rng.uniform(0, np.pi), freq * rng.uniform(0.6, 1.4), rng.uniform(0, 2 * np.pi)
        out += np.sin(k * (math.cos(a) * cv.X + math.sin(a) * cv.Y) + ph)
    return out / n


def _point_in_zone(rng: np.random.Generator, an: Anatomy, side: str, zone: str) -> tuple[float, float]:
    """A canonical point (X, Y) inside the lung's upper/middle/lower third, away from the mediastinum."""
    l = an.lungs[side]
    h = (l.base - l.apex) / 3
    i = ZONES.index(zone)
    y = l.apex + h * (i + rng.uniform(0.3, 0.8)) + (0.05 if i == 0 else 0.0)
    lat = l.lateral_at(y)
    med = 0.2 if zone == "upper" else 0.3
    xl = rng.uniform(med, max(med + 0.02, lat - 0.08))
    return SIGN[side] * xl, y


def _pleural_distance(an: Anatomy, L: Layers, side: str, Y: np.ndarray) -> np.ndarray:
    """Approximate distance (canonical units) from the lung's pleural ellipse, positive inside."""
    l = an.lungs[side]
    xl, rho2 = L.local_x[side], L.rho2[side]
    rho = np.sqrt(rho2) + 1e-4
    g = np.sqrt(((xl - l.cx) / l.ax ** 2) ** 2 + ((Y - l.cy) / l.ay ** 2) ** 2) / rho + 1e-4
    return (1 - rho) / g


def stroke(layer: np.ndarray, cv: Canvas, pts, value: float, width_px: float) -> None:
    """Draw a polyline given in canonical coordinates (max-composited; the acquisition blur anti-aliases it)."""
    p = cv.to_pixels(np.asarray(pts, np.float64))
    seg = np.diff(p, axis=0)
    n = np.maximum(2, np.ceil(np.hypot(seg[:, 0], seg[:, 1]) * 2).astype(int))
    dense = np.concatenate([p[i] + seg[i] * np.linspace(0, 1, n[i], endpoint=False)[:, None] for i in range(len(seg))]
                           + [p[-1:]])
    r = max(0.5, width_px / 2 * cv.size / 256)
    ri = int(math.ceil(r))
    H = layer.shape[0]
    for oy in range(-ri, ri + 1):
        for ox in range(-ri, ri + 1):
            if ox * ox + oy * oy > r * r + 0.25:
                continue
            cc, rr = np.rint(dense[:, 0] + ox).astype(int), np.rint(dense[:, 1] + oy).astype(int)
            ok = (cc >= 0) & (cc < H) & (rr >= 0) & (rr < H)
            rr, cc = rr[ok], cc[ok]
            layer[rr, cc] = np.maximum(layer[rr, cc], value)


def _bezier(p0, p1, p2, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t * t * np.asarray(p2)


def render_findings(L: Layers, cv: Canvas, an: Anatomy, truth: dict[str, dict], view: str,
                    rng: np.random.Generator) -> None:
    """Modify the anatomy layers in place for every finding in `truth`."""
    X, Y = cv.X, cv.Y
    lungs_any = L.masks["lung_right"] | L.masks["lung_left"]
    fill = np.zeros_like(X)  # fraction of lung air replaced by fluid/tissue, combined at the end

    def add_fill(f: np.ndarray) -> None:
        np.maximum(fill, f, out=fill)

    if (t := truth.get("Edema")) is not None:
        q = t["strength"]
        haze = np.exp(-((L.hilar_r / (0.22 + 0.25 * q)) ** 2)) * (0.2 + 0.45 * q)
        add_fill(haze * lungs_any)
        L.vessels *= 1 - 0.5 * np.clip(haze * 2, 0, 1)  # indistinct vessels
        if q > 0.35:  # Kerley B lines at the lateral bases
            for side in ("right", "left"):
                l = an.lungs[side]
                for y in rng.uniform(l.base - 0.28, l.base - 0.05, size=int(3 + 5 * q)):
                    lat = l.lateral_at(y) - 0.01
                    stroke(L.extra, cv, [(SIGN[side] * lat, y), (SIGN[side] * (lat - rng.uniform(0.04, 0.08)), y)],
                           0.05, 1.0)

    for name, alpha in (("Consolidation", 1.0), ("Lung Opacity", 0.45)):
        if (t := truth.get(name)) is None:
            continue
        q = t["strength"]
        for side in _sides(t["side"]):
            for _ in range(1 if name == "Consolidation" else int(rng.integers(1, 3))):
                x0, y0 = _point_in_zone(rng, an, side, t["zone"])
                sx, sy = (0.07 + 0.12 * q) * rng.uniform(0.8, 1.25), (0.06 + 0.1 * q) * rng.uniform(0.8, 1.25)
                e = 1 - ((X - x0) / sx) ** 2 - ((Y - y0) / sy) ** 2 + 0.3 * _wavy(rng, cv, 30.0)
                op = np.clip(e / 0.8, 0, 1) * L.masks[f"lung_{side}"]
                dens = alpha * (0.4 + 0.4 * q)
                if name == "Consolidation":  # air bronchograms: lucent branching tubes inside the opacity
                    br = np.clip((np.cos(17 * L.hilar_theta + rng.uniform(0, 6.3)) - 0.93) / 0.07, 0, 1)
                    op = op * (1 - 0.35 * br * (op > 0.6))
                else:
                    op = op * (0.7 + 0.3 * _wavy(rng, cv, 60.0))
                add_fill(op * dens)

    if (t := truth.get("Atelectasis")) is not None:
        q, side = t["strength"], t["side"]
        for s in _sides(side):
            l, m = an.lungs[s], L.masks[f"lung_{s}"]
            if t["kind"] == "plate-like":
                y0 = l.base - rng.uniform(0.12, 0.25)
                x0, ln = rng.uniform(0.3, 0.5), 0.08 + 0.12 * q
                tilt = rng.uniform(-0.25, 0.1)
                xl = L.local_x[s]
                band = np.abs(Y - y0 - tilt * (xl - x0)) < 0.006 + 0.01 * q
                add_fill(0.85 * band * (np.abs(xl - x0) < ln) * m)
            else:  # lower-lobe collapse: a wedge at the medial base beside the heart
                xl = L.local_x[s]
                top = l.base - 0.22 - 0.18 * q
                wedge = _smooth_step((Y - top) - 0.8 * (xl - 0.12), 0.03)
                add_fill((0.35 + 0.4 * q) * wedge * m)

    if (t := truth.get("Lung Lesion")) is not None:
        q = t["strength"]
        x0, y0 = _point_in_zone(rng, an, t["side"], t["zone"])
        r0 = t["size_cm"] / 2 / CM_PER_UNIT
        ang = np.arctan2(Y - y0, X - x0)
        lob = 1 + (0.15 * np.cos(3 * ang + rng.uniform(0, 6.3)) + 0.08 * np.cos(5 * ang)) * (t["kind"] == "mass")
        dist = np.sqrt((X - x0) ** 2 + (Y - y0) ** 2) / (r0 * lob)
        op = _smooth_step(1 - dist, 0.2) * L.masks[f"lung_{t['side']}"]
        c = 0.3 + 0.45 * min(1.0, q * 1.6)
        add_fill(op * c)
        L.extra += 0.03 * op * c

    if (t := truth.get("Pleural Thickening")) is not None:
        q = t["strength"]
        for s in _sides(t["side"]):
            l, m = an.lungs[s], L.masks[f"lung_{s}"]
            d = _pleural_distance(an, L, s, Y)
            thick = 0.012 + 0.03 * q
            band = _smooth_step(thick - d, 0.004) * m
            if t["kind"] == "apical":
                band *= _smooth_step(l.apex + 0.15 + 0.1 * q - Y, 0.03)
            else:
                y0 = rng.uniform(l.apex + 0.35, l.base - 0.3)
                band *= (np.abs(Y - y0) < 0.12 + 0.15 * q) * (L.local_x[s] > l.cx)
            add_fill(0.9 * band)

    if (t := truth.get("Pleural Effusion")) is not None:
        q = t["strength"]
        for s in _sides(t["side"]):
            l, m = an.lungs[s], L.masks[f"lung_{s}"]
            xl = L.local_x[s]
            u = np.clip((xl - 0.1) / (l.cx + l.ax - 0.1), 0, 1)
            h = (0.035 + 0.42 * q) * (l.base - l.apex)
            ys = l.base - h * (0.45 + 0.55 * u * u)  # meniscus: higher laterally
            f = _smooth_step(Y - ys, 0.012) * np.clip(0.55 + (Y - ys) / 0.08, 0, 1)
            if view == "AP":  # partly layering posteriorly: a graded haze over the hemithorax
                f = np.maximum(f, 0.3 * q * np.clip((Y - l.apex) / (l.base - l.apex), 0, 1) ** 2)
            add_fill(f * m)
            L.extra += 0.03 * f * m

    if (t := truth.get("Pneumothorax")) is not None:
        q, s = t["strength"], t["side"]
        l, m = an.lungs[s], L.masks[f"lung_{s}"]
        g = 0.05 + 0.3 * q
        hx, hy = l.hilum
        cx2, cy2 = hx + (l.cx - hx) * (1 - g), hy + (l.cy - hy) * (1 - g)
        ax2, ay2 = l.ax * (1 - g), l.ay * (1 - g)
        xl = L.local_x[s]
        ex, ey = (xl - cx2) / ax2, (Y - cy2) / ay2
        rho = np.sqrt(ex * ex + ey * ey) + 1e-4
        grad = np.sqrt((ex / ax2) ** 2 + (ey / ay2) ** 2) / rho + 1e-4
        d = (rho - 1) / grad  # > 0 outside the collapsed lung
        ylim = l.apex + (0.35 + 0.65 * q) * (l.base - l.apex)
        keep = _smooth_step(ylim - Y, 0.06) * m
        gap = (d > 0) * keep
        L.vessels *= 1 - gap
        fill *= 1 - gap
        L.air += 0.05 * gap
        line = np.exp(-((d / (0.7 * cv.px)) ** 2)) * keep
        L.extra += 0.06 * line

    if (t := truth.get("Support Devices")) is not None:
        _devices(L, cv, an, t, rng)

    L.air *= 1 - np.clip(fill, 0, 1)
    L.vessels *= 1 - np.clip(fill, 0, 1)
    L.extra += 0.03 * fill


def _devices(L: Layers, cv: Canvas, an: Anatomy, t: dict, rng: np.random.Generator) -> None:
    dev = np.zeros_like(cv.X)
    car = -0.3 + 0.5 * (an.lungs["right"].apex + 0.7)
    hx, hy = an.heart_c
    for d in t["devices"]:
        if d == "endotracheal tube":
            tip = car - t["ett_cm_above_carina"] / CM_PER_UNIT
            x0 = an.medi_shift * 0.5 + rng.uniform(-0.01, 0.01)
            stroke(dev, cv, [(x0, -1.2), (x0, tip)], 0.07, 5.0)
            stroke(dev, cv, [(x0 - 0.012, -1.2), (x0 - 0.012, tip)], 0.25, 1.4)
        elif d == "nasogastric tube":
            l = an.lungs["left"]
            path = np.concatenate([_bezier((0.02, -1.2), (0.03, -0.4), (0.06, l.dome_peak + 0.05)),
                                   _bezier((0.06, l.dome_peak + 0.05), (0.1, l.dome_peak + 0.25),
                                           (l.dome_x + rng.uniform(-0.05, 0.1), l.dome_peak + 0.2))])
            stroke(dev, cv, path, 0.17, 1.6)
        elif d == "central venous catheter":
            if t["cvc"] == "right internal jugular":
                path = _bezier((-0.26, -1.1), (-0.12, -0.62), (-0.08, -0.35 + rng.uniform(-0.05, 0.15)))
            else:  # left subclavian crossing to the SVC
                path = np.concatenate([_bezier((0.75, -0.82), (0.3, -0.7), (0.02, -0.52)),
                                       _bezier((0.02, -0.52), (-0.08, -0.45), (-0.08, -0.2 + rng.uniform(-0.05, 0.1)))])
            stroke(dev, cv, path, 0.15, 1.4)
        elif d == "pacemaker":
            gx, gy = rng.uniform(0.42, 0.6), rng.uniform(-0.72, -0.6)
            box = ((cv.X - gx) / 0.055) ** 4 + ((cv.Y - gy) / 0.04) ** 4 < 1  # rounded generator can
            np.maximum(dev, 0.5 * box, out=dev)
            path = np.concatenate([_bezier((gx - 0.04, gy), (0.2, -0.7), (-0.06, -0.45)),
                                   _bezier((-0.06, -0.45), (-0.1, hy - 0.05), (hx + 0.1, hy + 0.12))])
            stroke(dev, cv, path, 0.2, 1.1)
        elif d == "ecg leads":
            for _ in range(int(rng.integers(2, 5))):
                ex, ey = rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.5)
                rr = (cv.X - ex) ** 2 + (cv.Y - ey) ** 2
                np.maximum(dev, 0.12 * ((rr < 0.028 ** 2) & (rr > 0.018 ** 2)) + 0.3 * (rr < 0.008 ** 2), out=dev)
                stroke(dev, cv, _bezier((ex, ey), (ex + rng.uniform(-0.3, 0.3), ey - 0.3),
                                        (rng.uniform(-1.2, 1.2), -1.2)), 0.09, 1.0)
    L.extra += dev
