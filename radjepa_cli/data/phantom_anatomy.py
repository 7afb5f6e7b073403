"""Procedural chest anatomy for the phantom generator: geometry sampling and layered rendering.

Canonical patient frame: X in [-1, 1] from image left to image right (the patient's right lung is at X < 0 in a PA
view), Y in [-1, 1] from top to bottom. Every structure is an implicit function of (X, Y) evaluated on the
acquisition-warped pixel grid (`Canvas`), so the image and every mask share one geometry by construction: no mask is
ever resampled. Densities are in display units (0 = air, ~1 = dense bone); acquisition maps them to pixel values.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

SIGN = {"right": -1.0, "left": 1.0}  # patient side -> sign of X in the canonical frame
N_RIBS = 10


@dataclasses.dataclass
class Canvas:
    """The canonical coordinates of every output pixel, plus the forward map used to draw thin lines."""

    X: np.ndarray
    Y: np.ndarray
    size: int
    fwd: np.ndarray  # 2x3: canonical (x, y, 1) -> normalised image coordinates (u, v)

    @classmethod
    def warped(cls, size: int, angle: float, scale: float, shift: tuple[float, float]) -> "Canvas":
        """Image = canonical rotated by `angle` (rad), scaled by `scale`, shifted by `shift` (normalised units)."""
        c, s = math.cos(angle), math.sin(angle)
        rot = np.array([[c, -s], [s, c]])
        fwd = np.concatenate([scale * rot, np.array(shift, float)[:, None]], axis=1)
        u = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1)
        inv = rot.T / scale  # canonical = inv @ (u - shift)
        uu, vv = u[None, :] - np.float32(shift[0]), u[:, None] - np.float32(shift[1])
        X = (np.float32(inv[0, 0]) * uu + np.float32(inv[0, 1]) * vv).astype(np.float32)
        Y = (np.float32(inv[1, 0]) * uu + np.float32(inv[1, 1]) * vv).astype(np.float32)
        return cls(X, Y, size, fwd)

    def to_pixels(self, pts: np.ndarray) -> np.ndarray:
        """Canonical points [N, 2] -> pixel (col, row) [N, 2]."""
        uv = pts @ self.fwd[:, :2].T + self.fwd[:, 2]
        return (uv + 1) / 2 * self.size - 0.5

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
        """Pixel (rows, cols) slices covering the canonical box [x0, x1] x [y0, y1] (to skip empty pixels)."""
        corners = self.to_pixels(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64))
        lo = np.clip(np.floor(corners.min(0)).astype(int) - 1, 0, self.size)
        hi = np.clip(np.ceil(corners.max(0)).astype(int) + 2, 0, self.size)
        return slice(lo[1], max(lo[1], hi[1])), slice(lo[0], max(lo[0], hi[0]))

    @property
    def px(self) -> float:
        """One pixel in canonical units (scale-aware)."""
        return 2.0 / self.size / float(np.hypot(*self.fwd[:, 0]))


@dataclasses.dataclass
class Lung:
    """One lung as an ellipse (centre at the base) cut by the diaphragm dome and the cardiomediastinal silhouette.

    x values are "local": distance from the midline towards this lung's side (always positive laterally).
    """

    side: str
    cx: float
    cy: float
    ax: float
    ay: float
    dome_peak: float   # Y of the top of the hemidiaphragm
    dome_x: float      # local x of the top of the dome
    dome_k: float      # dome curvature: Y = peak + k (x - dome_x)^2
    hilum: tuple[float, float]  # (local x, Y)

    @property
    def apex(self) -> float:
        return self.cy - self.ay

    @property
    def base(self) -> float:
        """Y of the costophrenic angle (the lowest point of the lung)."""
        return min(self.dome_peak + self.dome_k * (self.cx + self.ax - self.dome_x) ** 2, self.cy + 0.6 * self.ay)

    def lateral_at(self, y: float) -> float:
        t = min(1.0, abs(y - self.cy) / self.ay)
        return self.cx + self.ax * math.sqrt(1 - t * t)


@dataclasses.dataclass
class Anatomy:
    lungs: dict[str, Lung]
    body_w: float
    medi_r: float          # mediastinum half-width towards the patient's right (image left)
    medi_l: float
    medi_shift: float      # lateral shift of the whole mediastinum (atelectasis pulls it), canonical X
    heart_c: tuple[float, float]
    heart_ax: float
    heart_ay: float
    heart_angle: float
    ctr: float             # true cardiothoracic ratio (labels use it; AP magnification is applied at render time)
    heart_mag: float       # apparent magnification (AP views)
    knob_r: float
    aorta_w: float         # descending aorta half-width
    rib_y1: dict[str, float]
    rib_sp: dict[str, float]
    rib_hw: tuple[float, float]
    rib_curve: tuple[float, float]
    vessel_phase: list[float]
    vessel_freq: list[float]
    breasts: float         # 0 = none, else soft-tissue density added over the lower lungs
    gastric_bubble: float
    fracture: dict | None  # {"side", "rib" (1-based), "x" (local), "gap", "step"}
    texture: np.ndarray    # [128, 128] smooth random field over the canonical frame (parenchymal mottling)


def thorax_width(anat_lungs: dict[str, Lung]) -> float:
    return sum(l.cx + l.ax for l in anat_lungs.values())


def sample_anatomy(rng: np.random.Generator, view: str, truth: dict[str, dict]) -> Anatomy:
    """Random normal anatomy, then the geometric findings (heart size, mediastinum, aorta, volume loss, fracture)."""
    insp = rng.uniform(-0.06, 0.06) - (0.05 if view == "AP" else 0.0)  # inspiration depth
    lungs = {}
    for side in ("right", "left"):
        cx, ax = rng.uniform(0.40, 0.46), rng.uniform(0.32, 0.37)
        cy, ay = rng.uniform(0.36, 0.44) + insp, rng.uniform(1.06, 1.16) + insp
        peak = cy - rng.uniform(0.12, 0.2) + (0.03 if side == "left" else 0.0)
        dome_x = rng.uniform(0.32, 0.42)
        k = (cy + rng.uniform(0.05, 0.1) - peak) / max(1e-3, (cx + ax - dome_x) ** 2)
        hilum = (rng.uniform(0.17, 0.22), rng.uniform(-0.12, -0.04) - (0.04 if side == "left" else 0.0))
        lungs[side] = Lung(side, cx, cy, ax, ay, peak, dome_x, k, hilum)

    medi_shift = 0.0
    atel = truth.get("Atelectasis")
    if atel and atel["kind"] == "volume loss":  # elevated hemidiaphragm + mediastinum pulled towards the lesion
        lung = lungs[atel["side"]]
        lung.dome_peak -= 0.05 + 0.12 * atel["strength"]
        lung.ay -= 0.02 + 0.05 * atel["strength"]
        medi_shift = SIGN[atel["side"]] * (0.01 + 0.04 * atel["strength"])

    thorax = thorax_width(lungs)
    cm = truth.get("Cardiomegaly")
    # a continuum across the 0.5 threshold: mild cardiomegaly is borderline, as on real films
    ctr = 0.505 + 0.15 * cm["strength"] if cm else rng.uniform(0.39, 0.5)
    heart_angle = rng.uniform(0.35, 0.6)  # long axis tilted towards the patient's left and down
    ratio = rng.uniform(0.55, 0.68)       # minor/major axis
    # width of a rotated ellipse = 2 sqrt(a^2 cos^2 + b^2 sin^2); solve a for the target CTR
    a = ctr * thorax / 2 / math.sqrt(math.cos(heart_angle) ** 2 + (ratio * math.sin(heart_angle)) ** 2)
    b = a * ratio
    base_y = min(l.dome_peak for l in lungs.values()) + 0.08
    half_h = math.hypot(a * math.sin(heart_angle), b * math.cos(heart_angle))
    heart_c = (rng.uniform(0.08, 0.14) + medi_shift, base_y - 0.75 * half_h)

    ecm = truth.get("Enlarged Cardiomediastinum")
    widen = (0.015 + 0.08 * ecm["strength"]) if ecm else 0.0
    ae = truth.get("Aortic Enlargement")
    knob_r = (0.06 + 0.05 * ae["strength"]) if ae else rng.uniform(0.04, 0.058)
    aorta_w = (0.04 + 0.025 * ae["strength"]) if ae else rng.uniform(0.025, 0.035)

    rib_y1, rib_sp = {}, {}
    for side, lung in lungs.items():
        rib_y1[side] = lung.apex - rng.uniform(0.03, 0.08)
        rib_sp[side] = (lung.dome_peak + 0.12 - rib_y1[side]) / (N_RIBS - 1)
    rib_hw = (0.021 * rng.uniform(0.9, 1.1), 0.001 * rng.uniform(0.8, 1.2))  # half-width of rib 1, growth per rib

    frac = truth.get("Fracture")
    fracture = None
    if frac:
        q = frac["strength"]
        fracture = {"side": frac["side"], "rib": frac["rib"], "x": rng.uniform(0.4, 0.68),
                    "gap": 0.006 + 0.012 * q, "step": (0.006 + 0.024 * q) * (1.0 if rng.random() < 0.5 else -1.0)}

    return Anatomy(
        lungs=lungs, body_w=rng.uniform(0.88, 1.0), medi_r=rng.uniform(0.09, 0.12) + widen * 0.6,
        medi_l=rng.uniform(0.1, 0.13) + widen, medi_shift=medi_shift, heart_c=heart_c, heart_ax=a, heart_ay=b,
        heart_angle=heart_angle, ctr=float(ctr), heart_mag=rng.uniform(1.1, 1.2) if view == "AP" else 1.0,
        knob_r=knob_r, aorta_w=aorta_w, rib_y1=rib_y1, rib_sp=rib_sp, rib_hw=rib_hw,
        rib_curve=(rng.uniform(-0.3, -0.2), rng.uniform(0.62, 0.78)),
        vessel_phase=rng.uniform(0, 2 * np.pi, 8).tolist(), vessel_freq=rng.uniform(0.8, 1.2, 4).tolist(),
        breasts=rng.uniform(0.04, 0.09) if rng.random() < 0.35 else 0.0,
        gastric_bubble=rng.uniform(0.04, 0.08) if rng.random() < 0.7 else 0.0, fracture=fracture,
        texture=_texture(rng),
    )


def _texture(rng: np.random.Generator, n: int = 128) -> np.ndarray:
    from scipy.ndimage import gaussian_filter
    t = gaussian_filter(rng.standard_normal((n, n), dtype=np.float32), 1.2, mode="wrap")
    return t / (t.std() + 1e-6)


def sample_texture(tex: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Nearest-texel lookup of a canonical-frame texture (anchored to the patient, so it moves with the anatomy)."""
    n = tex.shape[0]
    i = np.clip(((Y + 1) * (n / 2)).astype(np.int32), 0, n - 1)
    j = np.clip(((X + 1) * (n / 2)).astype(np.int32), 0, n - 1)
    return tex[i, j]


def _smooth_step(x: np.ndarray, width: float) -> np.ndarray:
    """0 below -width, 1 above +width, linear between (a cheap anti-aliased edge)."""
    return np.clip(x * (0.5 / width) + 0.5, 0.0, 1.0)


@dataclasses.dataclass
class Layers:
    """What the findings renderer may modify before the layers are composed into one density image."""

    soft: np.ndarray      # body, mediastinum, heart, abdomen (no lung air yet)
    air: np.ndarray       # lung lucency to subtract (>= 0)
    vessels: np.ndarray   # pulmonary vessel markings (added inside the lungs)
    bone: np.ndarray
    extra: np.ndarray     # findings' own density (fluid, devices, nodules ...)
    masks: dict[str, np.ndarray]
    rho2: dict[str, np.ndarray]   # per-lung normalised ellipse radius^2 (1 on the pleura)
    local_x: dict[str, np.ndarray]
    hilar_r: np.ndarray           # distance to the ipsilateral hilum
    hilar_theta: np.ndarray

    def compose(self) -> np.ndarray:
        return self.soft + self.bone + self.extra + self.vessels - self.air


def render_anatomy(cv: Canvas, an: Anatomy) -> Layers:
    X, Y = cv.X, cv.Y
    aX = np.abs(X)
    # --- body: soft tissue chord through an elliptic torso, narrowing to the neck and shoulders at the top
    shoulder = np.clip((Y + 0.98) / 0.3, 0.0, 1.0)
    half_w = 0.24 + (an.body_w - 0.24) * shoulder * (2 - shoulder)
    chord = np.sqrt(np.clip(1 - (X / half_w) ** 2, 0.0, 1.0))
    soft = 0.03 + 0.47 * chord
    # the hemidiaphragms (right / left dome), and the gastric air bubble under the left one
    dome_r = _dome(an.lungs["right"], -X)
    dome_y = dome_r + (_dome(an.lungs["left"], X) - dome_r) * (X >= 0)
    if an.gastric_bubble:
        l = an.lungs["left"]
        bx, by = l.dome_x + 0.02, l.dome_peak + 0.07
        w = cv.window(bx - 0.13, bx + 0.13, by - 0.1, by + 0.1)
        Xw, Yw = X[w], Y[w]
        # air rises: a dome of gas over a flat fluid level
        bubble = (((Xw - bx) / 0.12) ** 2 + ((Yw - by) / an.gastric_bubble) ** 2 < 1) & (Yw < by + an.gastric_bubble * 0.2)
        soft[w] -= 0.12 * bubble

    # --- cardiomediastinal silhouette: heart (rotated ellipse), mediastinal band, aortic knob, descending aorta
    hx, hy = an.heart_c
    ca, sa = math.cos(an.heart_angle), math.sin(an.heart_angle)
    dx, dy = (X - hx) / an.heart_mag, (Y - hy) / an.heart_mag
    u, v = (dx * ca + dy * sa) / an.heart_ax, (-dx * sa + dy * ca) / an.heart_ay
    heart_r2 = u * u + v * v
    heart = (heart_r2 < 1) & (Y < dome_y + 0.015)  # the heart sits on the diaphragm
    mx = X - an.medi_shift
    top_taper = np.clip((Y + 1.05) / 0.5, 0.6, 1.0)
    medi = (mx > -an.medi_r * top_taper) & (mx < an.medi_l * top_taper)
    kx, ky = an.medi_l + 0.01 + an.medi_shift, -0.32 + 0.05 * (an.lungs["left"].apex + 0.7)
    knob = (X - kx) ** 2 + (Y - ky) ** 2 < an.knob_r ** 2
    desc = (np.abs(X - (kx - 0.01)) < an.aorta_w) & (Y > ky)
    silhouette = heart | medi | knob | desc

    # trachea and main bronchi (air columns)
    car = -0.3 + 0.5 * (an.lungs["right"].apex + 0.7)
    w = cv.window(-0.2, 0.2, -1.5, car + 0.15)
    Xw, Yw = X[w], Y[w]
    air_col = (np.abs(Xw - an.medi_shift * 0.5) < 0.028) & (Yw < car)
    t = np.clip((Yw - car) / 0.14, 0, 1)
    bronchi = ((np.abs(np.abs(Xw) - t * 0.16) < 0.022) & (Yw > car) & (Yw < car + 0.14))
    soft[w] -= 0.09 * air_col + 0.06 * bronchi

    # --- lungs
    masks: dict[str, np.ndarray] = {}
    air = np.zeros_like(X)
    rho2s, locs = {}, {}
    for side, l in an.lungs.items():
        xl = SIGN[side] * X
        rho2 = ((xl - l.cx) / l.ax) ** 2 + ((Y - l.cy) / l.ay) ** 2
        inside = (rho2 < 1) & (Y < _dome(l, xl)) & ~silhouette & (xl > 0)
        depth = np.sqrt(np.sqrt(np.clip(1 - rho2, 0, 1)))
        grad = 0.8 + 0.2 * np.clip((Y - l.apex) / (l.base - l.apex), 0, 1)
        air += inside * (0.36 * depth * grad)
        masks[f"lung_{side}"] = inside
        h1 = l.apex + (l.base - l.apex) / 3
        h2 = l.apex + 2 * (l.base - l.apex) / 3
        masks[f"{side}_upper"] = inside & (Y < h1)
        masks[f"{side}_middle"] = inside & (Y >= h1) & (Y < h2)
        masks[f"{side}_lower"] = inside & (Y >= h2)
        rho2s[side], locs[side] = rho2, xl
    masks["heart"] = heart
    lungs_any = masks["lung_right"] | masks["lung_left"]
    # abdomen below the domes (liver / spleen / bowel) and under the heart: one density, so the heart's lower
    # border merges into it as on a real film; the silhouette is as dense as the abdomen
    flat = min(l.dome_peak for l in an.lungs.values()) + 0.03
    below = np.maximum(_smooth_step(Y - dome_y, 0.012), ((Y > flat) & ~lungs_any & (aX < 0.4)).astype(np.float32))
    soft += chord * (0.2 * below + 0.08 * np.clip(Y - dome_y, 0, 0.5))
    soft += 0.2 * chord * (silhouette & ~(below > 0.5))
    if an.breasts:
        for s in (-1.0, 1.0):
            br = ((X - s * 0.5) / 0.36) ** 2 + ((Y - 0.2) / 0.28) ** 2
            # soft-tissue shadow growing downwards to a curved lower border (no visible upper edge)
            soft += an.breasts * _smooth_step(1 - br, 0.1) * np.clip((Y + 0.08) / 0.5, 0, 1) * (1 - 0.7 * below)

    # --- pulmonary vessels: tapering branches radiating from each hilum, fading towards the periphery
    # (computed per lung inside its bounding window: most pixels are not lung)
    r = np.full_like(X, 2.0)  # distance to the ipsilateral hilum (findings use it: edema, bronchograms)
    theta = np.zeros_like(X)
    vessels = np.zeros_like(X)
    hila = np.zeros_like(X)
    ph, fq = an.vessel_phase, an.vessel_freq
    for side, l in an.lungs.items():
        sgn = SIGN[side]
        w = cv.window(*sorted((0.0, sgn * (l.cx + l.ax + 0.03))), l.apex - 0.03, l.cy + 0.3)
        Xw, Yw = X[w], Y[w]
        half = sgn * Xw >= 0
        ddx, ddy = sgn * Xw - l.hilum[0], Yw - l.hilum[1]
        rw = np.sqrt(ddx * ddx + ddy * ddy) + 1e-3
        tw = np.arctan2(ddy, np.abs(ddx))
        r[w] += (rw - r[w]) * half
        theta[w] += (tw - theta[w]) * half
        v = 0.012 * sample_texture(an.texture, Xw, Yw)
        for k, (n, amp, wid) in enumerate(((7.0, 0.075, 0.16), (13.0, 0.05, 0.09), (23.0, 0.035, 0.06))):
            t = np.cos(n * fq[k] * tw + ph[k] + 1.3 * np.sin(6.0 * rw * fq[k + 1] + ph[k + 3]))
            wd = wid * np.exp(-rw * 1.5) + 0.02
            seg = np.clip(1.5 * np.sin((9.0 + 6 * k) * rw + 3.0 * tw + ph[k + 4]) + 0.6, 0, 1)  # branch ends
            v += amp * np.clip((t - 1 + wd) / wd, 0, 1) * np.exp(-rw * (1.2 + 0.6 * k)) * (seg if k else 1.0)
        vessels[w] += v * masks[f"lung_{side}"][w] * np.minimum(rw * 6, 1.0)
        hila[w] += 0.06 * np.exp(-((rw / 0.07) ** 2)) * (half & (~silhouette[w] | lungs_any[w]))

    # --- bones: spine, ribs (posterior, masked; anterior faint), clavicles, humeral heads
    bone = np.zeros_like(X)
    w = cv.window(an.medi_shift * 0.3 - 0.07, an.medi_shift * 0.3 + 0.07, -1.5, 1.5)
    sx, Yw = X[w] - an.medi_shift * 0.3, Y[w]
    spine = _smooth_step(0.062 - np.abs(sx), 0.006)
    ym = (Yw + 1.0) / 0.085
    ym -= np.floor(ym)  # position within the vertebra (np.mod is slow)
    vert = 0.75 + 0.25 * np.clip(np.sin(np.pi * ym) * 1.6, 0, 1)
    ped = (((np.abs(sx) - 0.042) / 0.013) ** 2 + ((ym - 0.45) / 0.22) ** 2 < 1) | (
        (np.abs(sx) < 0.012) & (np.abs(ym - 0.75) < 0.2))
    bone[w] += spine * (0.08 * vert + 0.025 * ped) * (1 - 0.4 * below[w])
    for side in ("right", "left"):
        _ribs_and_clavicle(cv, an, side, bone, below, masks)
    return Layers(soft=soft + hila, air=air, vessels=vessels, bone=bone, extra=np.zeros_like(X), masks=masks,
                  rho2=rho2s, local_x=locs, hilar_r=r, hilar_theta=theta)


def _dome(l: Lung, xl):
    lat, med = np.maximum(xl - l.dome_x, 0.0), np.minimum(xl - l.dome_x, 0.0)
    return l.dome_peak + l.dome_k * (lat * lat + 0.35 * med * med)  # flatter medially (np.where is slow)



def _ribs_and_clavicle(cv: Canvas, an: Anatomy, side: str, bone: np.ndarray, below: np.ndarray,
                       masks: dict[str, np.ndarray]) -> None:
    """Posterior ribs (with masks and an optional fracture), faint anterior ribs and the clavicle of one side."""
    l = an.lungs[side]
    sgn = SIGN[side]
    w = cv.window(*sorted((sgn * 0.03, sgn * 1.05)), l.apex - 0.3, l.cy + 0.5)
    X, Y = cv.X[w], cv.Y[w]
    xl = sgn * X
    xl_pos = np.maximum(xl, 0.0)
    c1, c2 = an.rib_curve
    d = Y - (c1 * xl_pos + c2 * xl_pos * xl_pos)
    fr = an.fracture if an.fracture and an.fracture["side"] == side else None
    y1, sp = an.rib_y1[side], an.rib_sp[side]
    if fr:  # step-off: the lateral fragment is displaced along Y
        near = np.abs(d - (y1 + (fr["rib"] - 1) * sp)) < sp * 0.5
        d = d - fr["step"] * (near & (xl > fr["x"]))
    # nearest rib by rounding (float index: fancy indexing and np.where are slow at this size)
    idx = np.clip(np.rint((d - y1) * (1 / sp)), 0, N_RIBS - 1)
    off = d - (y1 + idx * sp)
    hw = an.rib_hw[0] + idx * an.rib_hw[1]
    wall = ((xl - l.cx) / (l.ax + 0.07)) ** 2 + ((Y - l.cy) / (l.ay + 0.07)) ** 2 < 1
    on = wall & (xl > 0.045) & (np.abs(off) < hw)
    tt = np.minimum(np.abs(off) / hw, 1.0)
    edge = np.maximum(1 - ((tt - 0.85) * (1 / 0.15)) ** 2, 0.0)  # brighter cortex near the rib margins
    profile = 0.65 * np.sqrt(1 - tt * tt) + 0.35 * edge
    if fr:
        on_img = on & ~((idx == fr["rib"] - 1) & (np.abs(xl - fr["x"]) < fr["gap"]))
    else:
        on_img = on
    bone[w] += on_img * profile * (0.06 + 0.06 * np.clip(xl / 0.8, 0, 1)) * (1 - 0.7 * below[w])
    for i in range(N_RIBS):
        m = np.zeros(cv.X.shape, bool)
        m[w] = on & (idx == i)
        masks[f"{side[0].upper()}{i + 1}"] = m
    # anterior ribs: from the lateral wall running medially downwards, fainter, no mask
    xlat = l.cx + l.ax
    da = Y - (y1 + c1 * xlat + c2 * xlat * xlat) - 0.55 * (xlat - xl) - 0.12
    offa = da - np.clip(np.rint(da / sp), 0, 7) * sp
    bone[w] += 0.035 * ((np.abs(offa) < 0.018) & wall & (xl > 0.3) & (da > -0.02) & (xl < xlat + 0.05))
    # clavicle: S-shaped bar from the sternum to the shoulder
    cy0 = l.apex + 0.02
    w = cv.window(*sorted((sgn * 0.05, sgn * 0.8)), cy0 - 0.25, cy0 + 0.12)
    X, Y = cv.X[w], cv.Y[w]
    xl = sgn * X
    yc = cy0 + 0.04 - 0.3 * (xl - 0.08) + 0.22 * (xl - 0.08) ** 2 + 0.025 * np.sin(7 * xl)
    ct = np.minimum(np.abs(Y - yc) / (0.03 - 0.008 * xl), 1.0)
    bone[w] += 0.11 * np.sqrt(1 - ct * ct) * ((xl > 0.06) & (xl < 0.78))
