"""Stenoses (NASCET-graded), occlusions and calcified plaques on CTA centrelines."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from training.phantoms.cta_vessels import Path3

STEP_MM = 0.5
#: ``training.phantoms.cta._draw_vessels`` draws every second point of a vessel whose
#: narrowest radius is above this.
DRAW_STEP2_RADIUS_MM = 2.0

#: Where lesions sit (mm of arc length from the vessel's start), by vessel.
SITES: dict[str, tuple[float, float]] = {
    "ICA_L": (3.0, 30.0),
    "ICA_R": (3.0, 30.0),
    "CCA_L": (40.0, 90.0),
    "CCA_R": (30.0, 80.0),
    "VA_L": (2.0, 15.0),
    "VA_R": (2.0, 15.0),
    "BA": (4.0, 18.0),
    "M1_L": (4.0, 14.0),
    "M1_R": (4.0, 14.0),
}
OCCLUSION_SITES: dict[str, tuple[float, float]] = {
    "ICA_L": (5.0, 25.0),
    "ICA_R": (5.0, 25.0),
    "M1_L": (4.0, 12.0),
    "M1_R": (4.0, 12.0),
    "VA_L": (5.0, 30.0),
    "VA_R": (5.0, 30.0),
}


@dataclass(frozen=True, slots=True)
class Stenosis:
    """Diameter reduction: percent = 100 * (1 - min_diameter / reference_diameter)."""

    vessel: str
    center_lps: tuple[float, float, float]
    center_index: int
    percent: float
    length_mm: float
    min_diameter_mm: float
    reference_lps: tuple[float, float, float]
    reference_index: int
    reference_diameter_mm: float
    method: str = "NASCET"


@dataclass(frozen=True, slots=True)
class Occlusion:
    """The vessel has no lumen from ``start_lps`` on (its distal branches are absent too)."""

    vessel: str
    start_lps: tuple[float, float, float]
    start_index: int
    length_mm: float


@dataclass(frozen=True, slots=True)
class Plaque:
    vessel: str
    center_lps: tuple[float, float, float]
    radius_mm: float
    hu: float


def _t(p: np.ndarray) -> tuple[float, float, float]:
    return (round(float(p[0]), 2), round(float(p[1]), 2), round(float(p[2]), 2))


def add_stenosis(
    rng: np.random.Generator, path: Path3, percent: float, length_mm: float
) -> tuple[Path3, Stenosis]:
    """Narrow ``path`` with a smooth (cos^2) waist graded against the distal normal lumen."""
    lo, hi = SITES[path.name]
    n = len(path.radius)
    total = (n - 1) * STEP_MM
    # Short vessels (basilar, M1) get shorter lesions so a normal reference stays distal.
    length_mm = min(length_mm, max(2.0, total - lo - 10.0))
    s0 = float(rng.uniform(lo, max(lo, min(hi, total - length_mm / 2 - 10.0))))
    i0 = round(s0 / STEP_MM)
    i_ref = min(n - 1, i0 + round((length_mm / 2 + 10.0) / STEP_MM))
    r_ref = float(path.radius[i_ref])
    r_min = (1.0 - percent / 100.0) * r_ref
    s = (np.arange(n) - i0) * STEP_MM
    w = np.where(np.abs(s) < length_mm / 2, np.cos(np.pi * s / length_mm) ** 2, 0.0)
    radius = path.radius - w * np.maximum(path.radius - r_min, 0.0)
    radius[i0] = r_min
    # the truth is what the image shows: a waist shorter than the lumen radius is drawn
    # wider than r_min (see drawn_waist_radius)
    r_min = max(r_min, drawn_waist_radius(replace(path, radius=radius), i0))
    percent = 100.0 * (1.0 - r_min / r_ref)
    st = Stenosis(
        vessel=path.name,
        center_lps=_t(path.points[i0]),
        center_index=i0,
        percent=round(percent, 1),
        length_mm=round(length_mm, 1),
        min_diameter_mm=round(2 * r_min, 3),
        reference_lps=_t(path.points[i_ref]),
        reference_index=i_ref,
        reference_diameter_mm=round(2 * r_ref, 3),
    )
    return replace(path, radius=radius), st


def drawn_waist_radius(path: Path3, i0: int) -> float:
    """The lumen radius the rasteriser actually draws at ``path.points[i0]``.

    Vessels are drawn as tapered capsules between sampled points (every point, or every
    second one where the vessel is wider than DRAW_STEP2_RADIUS_MM, as
    ``training.phantoms.cta._draw_vessels`` does), and each capsule ends in a sphere of
    its end radius. A waist shorter than the lumen radius is therefore partly filled by
    the spheres of the points around it: the drawn narrowest radius is the largest of
    sqrt(r_j^2 - s_j^2) over drawn points j at distance s_j, or the linear taper across
    a skipped point.
    """
    n = len(path.radius)
    step = 2 if float(path.radius.min(initial=9.0)) > DRAW_STEP2_RADIUS_MM else 1
    idx = list(range(0, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    drawn = np.asarray(idx)
    s2 = np.sum((path.points[drawn] - path.points[i0]) ** 2, axis=1)
    r = path.radius[drawn]
    best = float(np.sqrt(np.maximum(r**2 - s2, 0.0)).max())
    if i0 not in idx:
        k = int(np.searchsorted(drawn, i0))
        a, b = idx[k - 1], idx[k]
        t = (i0 - a) / (b - a)
        best = max(best, float(path.radius[a] + t * (path.radius[b] - path.radius[a])))
    return best


def add_occlusion(rng: np.random.Generator, path: Path3) -> tuple[Path3, Occlusion]:
    lo, hi = OCCLUSION_SITES[path.name]
    n = len(path.radius)
    i0 = round(float(rng.uniform(lo, min(hi, (n - 2) * STEP_MM))) / STEP_MM)
    # The lumen tapers to a stump over 2 mm, as thrombus fills it.
    radius = path.radius.copy()
    taper = np.arange(max(0, i0 - 4), i0)
    radius[taper] *= np.linspace(1.0, 0.5, len(taper)) if len(taper) else 1.0
    occ = Occlusion(path.name, _t(path.points[i0]), i0, round((n - 1 - i0) * STEP_MM, 1))
    return replace(path, radius=radius, drawn_until=i0), occ


def make_plaque(rng: np.random.Generator, path: Path3) -> Plaque:
    """A calcified plaque on the wall, partly bulging into the lumen."""
    n = len(path.radius)
    lo_mm, hi_mm = (40.0, 110.0) if path.name == "AORTA" else (2.0, 40.0)  # arch, or origin
    i = int(rng.integers(min(int(lo_mm / STEP_MM), n - 2), min(int(hi_mm / STEP_MM), n - 1)))
    tang = path.points[min(n - 1, i + 1)] - path.points[max(0, i - 1)]
    tang /= np.linalg.norm(tang)
    d = rng.normal(size=3)
    d -= tang * (d @ tang)
    d /= np.linalg.norm(d)
    rp = float(rng.uniform(0.8, 2.0))
    center = path.points[i] + d * (path.radius[i] + 0.3 * rp)
    return Plaque(path.name, _t(center), round(rp, 2), round(float(rng.uniform(800, 1500)), 0))
