"""Fast analytic chest radiographs with nodule ground truth (training fallback + test data).

The helper phantom factory (``training.phantoms.dr``) projects full chest CT phantoms; this
module draws a cheaper 2-D stand-in directly from analytic line integrals so that the DR
model can be trained and tested in a few minutes on a CPU. Each image is the projection
``p = sum(mu_i * t_i)`` of soft tissue, aerated lung, heart, spine, ribs, clavicles, lung
vessels and spherical nodules along the beam, then detector quantum noise, a log
transform, a display curve, blur, grid lines and burned-in collimation borders.

Image axes follow the standard chest display (PS3.3 C.7.6.1.1.1, Patient Orientation
``L\\F``, PA and AP alike: the patient faces the viewer): rows run toward the feet,
columns toward the patient's left, so the heart sits on the image right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage

F32 = npt.NDArray[np.float32]
U16 = npt.NDArray[np.uint16]

MU_SOFT = 0.020  # 1/mm, water-like soft tissue at ~60 keV effective energy
MU_LUNG = 0.005  # 1/mm, aerated lung (density ~0.25)
MU_BONE = 0.045  # 1/mm, rib / vertebral bone


@dataclass(frozen=True, slots=True)
class SynthNodule:
    """Ground truth of one drawn nodule, in pixels of the returned image."""

    center_rc: tuple[float, float]
    diameter_mm: float
    diameter_px: float

    @property
    def bbox_rc(self) -> tuple[float, float, float, float]:
        """(row0, col0, row1, col1) of the circumscribed square."""
        r, c = self.center_rc
        h = self.diameter_px / 2
        return (r - h, c - h, r + h, c + h)


@dataclass(frozen=True, slots=True)
class SynthConfig:
    """Ranges drawn per image; defaults give a realistic spread."""

    matrix: tuple[int, int] = (320, 560)  # long side drawn in this range
    fov_mm: tuple[float, float] = (360.0, 440.0)
    p_no_nodule: float = 0.3
    max_nodules: int = 3
    diameter_mm: tuple[float, float] = (5.0, 30.0)
    p_ap: float = 0.3
    p_collimation: float = 0.5
    nodule_diameters: tuple[float, ...] = field(default_factory=tuple)  # fixed, if given
    # Training variety (0 keeps the draws, and so the held-out and test films, unchanged):
    # the share of nodules that are calcified (350-900 HU in CT: 1.5-2.4 x soft tissue,
    # bright and compact, as the CT-projection DRRs have them), and the share placed
    # where little lung is left in the beam (beside the mediastinum and spine, behind
    # the diaphragm dome), where DRR nodules are often missed.
    p_calcified: float = 0.0
    p_thin_lung: float = 0.0
    # Display headroom: the film's 99.5th percentile maps below white so that the densest
    # structures (a nodule over the spine) keep their shape instead of a flat 4095 plateau
    # (off by default: held-out and test films keep their draws).
    headroom: bool = False


@dataclass(frozen=True, slots=True)
class SynthChest:
    """One image: presentation values (MONOCHROME2), 12-bit, plus the truth."""

    image: U16
    spacing_mm: float
    view: str
    nodules: tuple[SynthNodule, ...]
    bits_stored: int = 12


def _ellipsoid_depth(
    x: F32, y: F32, cx: float, cy: float, ax: float, ay: float, depth: float
) -> F32:
    """Chord length through an ellipsoid with half-axes (ax, ay, depth / 2) at (x, y)."""
    q = 1.0 - ((x - cx) / ax) ** 2 - ((y - cy) / ay) ** 2
    return np.asarray(depth * np.sqrt(np.clip(q, 0.0, None)), dtype=np.float32)


def _band(dist: F32, half_width: float) -> F32:
    """Chord profile across a cylinder of the given radius (bone of a rib or clavicle)."""
    q = 1.0 - (dist / half_width) ** 2
    return np.asarray(2 * half_width * np.sqrt(np.clip(q, 0.0, None)), dtype=np.float32)


def _segment_distance(x: F32, y: F32, p0: tuple[float, float], p1: tuple[float, float]) -> F32:
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    n2 = dx * dx + dy * dy + 1e-9
    t = np.clip(((x - p0[0]) * dx + (y - p0[1]) * dy) / n2, 0.0, 1.0)
    return np.asarray(np.hypot(x - (p0[0] + t * dx), y - (p0[1] + t * dy)), dtype=np.float32)


def _vessels(
    p: F32,
    x: F32,
    y: F32,
    rng: np.random.Generator,
    hila: list[tuple[float, float]],
    lung: F32,
    k: float,
) -> None:
    """Branching vessel segments from each hilum, added to ``p`` inside the lungs."""
    sp = float(x[0, 1] - x[0, 0])
    for hx, hy in hila:
        stack = [(hx, hy, rng.uniform(-np.pi, np.pi), 7.0 * k, 0)]
        while stack:
            sx, sy, ang, radius, depth = stack.pop()
            length = rng.uniform(25, 55) * k
            ex, ey = sx + length * np.cos(ang), sy + length * np.sin(ang)
            lo_c = int(max(0, (min(sx, ex) - radius * 2) / sp))
            hi_c = int(min(x.shape[1], (max(sx, ex) + radius * 2) / sp + 2))
            lo_r = int(max(0, (min(sy, ey) - radius * 2) / sp))
            hi_r = int(min(x.shape[0], (max(sy, ey) + radius * 2) / sp + 2))
            if hi_c > lo_c and hi_r > lo_r:
                xs, ys = x[lo_r:hi_r, lo_c:hi_c], y[lo_r:hi_r, lo_c:hi_c]
                d = _segment_distance(xs, ys, (sx, sy), (ex, ey))
                gate = (lung[lo_r:hi_r, lo_c:hi_c] > 0).astype(np.float32)
                p[lo_r:hi_r, lo_c:hi_c] += (MU_SOFT - MU_LUNG) * _band(d, radius) * gate
            if depth < 4 and radius > 1.2:
                for turn in (-1, 1):
                    stack.append(
                        (ex, ey, ang + turn * rng.uniform(0.2, 0.7), radius * 0.72, depth + 1)
                    )


def make_synth_chest(seed: int, config: SynthConfig | None = None) -> SynthChest:
    """Draw one chest radiograph deterministically from ``seed``."""
    cfg = config or SynthConfig()
    rng = np.random.default_rng(seed)
    long_side = int(rng.integers(cfg.matrix[0], cfg.matrix[1] + 1))
    aspect = rng.uniform(0.9, 1.1)
    ny, nx = long_side, max(64, round(long_side * aspect))
    if nx > ny:
        ny, nx = nx, ny
    fov = rng.uniform(*cfg.fov_mm)
    sp = fov / ny
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    x, y = (xx + 0.5) * sp, (yy + 0.5) * sp
    view = "AP" if rng.random() < cfg.p_ap else "PA"
    k = rng.uniform(0.85, 1.1)  # patient size
    cx = nx * sp / 2 + rng.normal(0, 8)
    apex = ny * sp * rng.uniform(0.08, 0.18)

    # Body: elliptic cylinder, narrower neck above the shoulders.
    shoulder = apex - 20 * k
    half_w = np.where(y < shoulder, 60 * k, 165 * k * rng.uniform(0.9, 1.1)).astype(np.float32)
    t_body = 2 * 105 * k * np.sqrt(np.clip(1 - ((x - cx) / half_w) ** 2, 0, None))
    # Lungs: two ellipsoids; the left (image right) one is a little smaller.
    lung_h = 125 * k * rng.uniform(0.9, 1.1)
    lcy = apex + lung_h
    t_lung = _ellipsoid_depth(x, y, cx - 72 * k, lcy, 58 * k, lung_h, 150 * k)
    t_lung += _ellipsoid_depth(x, y, cx + 74 * k, lcy + 5, 55 * k, lung_h * 0.97, 145 * k)
    # Heart: displaces lung; larger on AP films (magnification, PS3.3 C.8.11.7).
    hf = rng.uniform(1.05, 1.25) if view == "AP" else rng.uniform(0.85, 1.05)
    t_heart = _ellipsoid_depth(x, y, cx + 25 * k, apex + 190 * k, 70 * k * hf, 58 * k * hf, 120 * k)
    t_lung = np.clip(t_lung - t_heart, 0, None)
    t_lung = np.minimum(t_lung, t_body * 0.9)
    p = MU_SOFT * (t_body - t_lung) + MU_LUNG * t_lung

    # Spine and ribs (posterior arcs laterally downward, anterior arcs medially downward).
    bone = _band(np.abs(x - cx), 18 * k) * 0.8
    rib_gap = rng.uniform(20, 25) * k
    for side in (-1.0, 1.0):
        for i in range(10):
            y0 = apex - 8 * k + i * rib_gap
            dx = np.clip((x - cx) * side - 15 * k, 0, None)
            curve = y0 - 0.12 * dx + 0.0022 * dx**2 / k
            hw = 5.5 * k
            lateral = np.clip(150 * k - dx, 0, None) > 0
            bone += _band(np.abs(y - curve) * 0.9, hw) * lateral * (dx > 0)
            # anterior rib: from the lateral end back toward the midline, steeper, fainter
            y_end = y0 - 0.12 * 150 * k + 0.0022 * (150 * k) ** 2 / k
            ant = y_end + 0.45 * (150 * k - dx)
            ant_mask = (dx > 60 * k) & (dx < 150 * k)
            bone += 0.5 * _band(np.abs(y - ant) * 0.9, hw * 0.9) * ant_mask
        clav = _segment_distance(
            x, y, (cx + side * 18 * k, apex + 5 * k), (cx + side * 150 * k, apex - 22 * k)
        )
        bone += _band(clav, 7 * k)
    p += MU_BONE * bone

    hila = [(cx - 45 * k, apex + 105 * k), (cx + 45 * k, apex + 100 * k)]
    _vessels(p, x, y, rng, hila, t_lung, k)

    # Nodules: spheres that displace aerated lung (or sit behind heart / ribs).
    nodules: list[SynthNodule] = []
    if cfg.nodule_diameters:
        diameters = list(cfg.nodule_diameters)
    elif rng.random() < cfg.p_no_nodule:
        diameters = []
    else:
        n = int(rng.integers(1, cfg.max_nodules + 1))
        lo, hi = np.log(cfg.diameter_mm[0]), np.log(cfg.diameter_mm[1])
        diameters = [float(np.exp(rng.uniform(lo, hi))) for _ in range(n)]
    inside = np.argwhere((t_lung > 40 * k) | (t_heart > 0) & (t_lung + t_heart > 40 * k))
    thin = np.argwhere((t_lung > 5 * k) & (t_lung <= 40 * k)) if cfg.p_thin_lung else inside
    for d in diameters:
        where = inside
        if cfg.p_thin_lung and len(thin) and rng.random() < cfg.p_thin_lung:
            where = thin
        for _ in range(50):
            r_i, c_i = where[rng.integers(len(where))]
            ok = all(
                np.hypot(r_i - nd.center_rc[0], c_i - nd.center_rc[1]) * sp > (d + nd.diameter_mm)
                for nd in nodules
            )
            if ok:
                break
        rc = (float(r_i) + rng.uniform(-0.5, 0.5), float(c_i) + rng.uniform(-0.5, 0.5))
        ny_c, nx_c = (rc[0] + 0.5) * sp, (rc[1] + 0.5) * sp
        rad = d / 2
        lo_r, hi_r = max(0, int((ny_c - rad) / sp) - 2), min(ny, int((ny_c + rad) / sp) + 3)
        lo_c, hi_c = max(0, int((nx_c - rad) / sp) - 2), min(nx, int((nx_c + rad) / sp) + 3)
        rr = np.hypot(x[lo_r:hi_r, lo_c:hi_c] - nx_c, y[lo_r:hi_r, lo_c:hi_c] - ny_c)
        # lobulated edge: radius modulated by angle
        ang = np.arctan2(y[lo_r:hi_r, lo_c:hi_c] - ny_c, x[lo_r:hi_r, lo_c:hi_c] - nx_c)
        lob = 1 + rng.uniform(0, 0.12) * np.sin(rng.integers(2, 6) * ang + rng.uniform(0, 6))
        density = rng.uniform(0.75, 1.1)
        if cfg.p_calcified and rng.random() < cfg.p_calcified:
            density = rng.uniform(1.5, 2.4)
        p[lo_r:hi_r, lo_c:hi_c] += (MU_SOFT * density - MU_LUNG) * _band(rr / lob, rad)
        nodules.append(SynthNodule(rc, d, d / sp))

    image = _detector(p, rng, sp, cfg)
    return SynthChest(image=image, spacing_mm=sp, view=view, nodules=tuple(nodules))


def _detector(p: F32, rng: np.random.Generator, sp: float, cfg: SynthConfig) -> U16:
    """Quantum noise, log, display curve, blur, grid lines and collimation, to 12 bits."""
    photons = rng.uniform(2e3, 2e4)
    counts = rng.poisson(photons * np.exp(-p)).astype(np.float32)
    meas = -np.log(np.clip(counts, 0.5, None) / photons)
    meas = ndimage.gaussian_filter(meas, rng.uniform(0.4, 1.0) * 0.8 / sp)
    # Unsharp masking, as vendors' presentation processing does.
    meas = meas + rng.uniform(0.0, 0.8) * (meas - ndimage.gaussian_filter(meas, 12.0 / sp))
    lo, hi = np.percentile(meas, [1, 99.5])
    gamma = rng.uniform(0.7, 1.4)
    if cfg.headroom:  # only the top 0.01 % (noise spikes) may still reach white
        v = np.clip((meas - lo) / (hi - lo + 1e-6), 0, None) ** gamma
        v = v / max(1.0, float(np.percentile(v, 99.99)))
    else:
        v = np.clip((meas - lo) / (hi - lo + 1e-6), 0, 1) ** gamma
    if rng.random() < 0.3:  # anti-scatter grid lines, a few pixels apart
        period = rng.uniform(2.2, 4.0)
        v = v + 0.01 * np.sin(2 * np.pi * np.arange(v.shape[1]) / period)[None, :]
    out = np.clip(v, 0, 1) * 4095.0
    if rng.random() < cfg.p_collimation:
        fill = 4095.0 if rng.random() < 0.5 else 0.0
        h, w = out.shape
        for edge in range(4):
            if rng.random() < 0.6:
                n = int(rng.uniform(0.02, 0.08) * (h if edge < 2 else w))
                if edge == 0:
                    out[:n] = fill
                elif edge == 1:
                    out[h - n :] = fill
                elif edge == 2:
                    out[:, :n] = fill
                else:
                    out[:, w - n :] = fill
    return np.asarray(np.round(out), dtype=np.uint16)
