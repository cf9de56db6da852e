"""Stenoses (NASCET-graded), occlusions and calcified plaques on CTA centrelines."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from training.phantoms.cta_vessels import Path3

STEP_MM = 0.5
#: ``training.phantoms.cta._draw_vessels`` draws every second point of a vessel whose
#: narrowest radius is above this.
DRAW_STEP2_RADIUS_MM = 2.0
#: A stenosis is at least this long; its distal reference sits REF_GAP_MM beyond it
#: (less on a short vessel) and at least REF_END_MM short of the vessel's end.
MIN_LENGTH_MM = 4.0
REF_GAP_MM = 10.0
REF_END_MM = 2.0

#: Where lesions sit (mm of arc length from the vessel's start), by vessel.
SITES: dict[str, tuple[float, float]] = {
    "ICA_L": (3.0, 30.0),
    "ICA_R": (3.0, 30.0),
    "CCA_L": (40.0, 90.0),
    "CCA_R": (30.0, 80.0),
    # the vertebral starts on the subclavian's centreline: its first ~5 mm lie inside the
    # subclavian lumen, where a drawn waist is no lesion in the image
    "VA_L": (8.0, 20.0),
    "VA_R": (8.0, 20.0),
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
    # Short vessels (basilar, M1) get shorter lesions and a nearer reference so a normal
    # reference stays distal, short of the vessel's end (the basilar tip); never shorter
    # than MIN_LENGTH_MM: a waist of a few slices is what a CTA can resolve.
    length_mm = min(length_mm, max(MIN_LENGTH_MM, total - lo - REF_GAP_MM))
    gap = float(np.clip(total - lo - length_mm / 2 - 2 * REF_END_MM, 3.0, REF_GAP_MM))
    s0 = float(rng.uniform(lo, max(lo, min(hi, total - length_mm / 2 - gap - REF_END_MM))))
    i0 = round(s0 / STEP_MM)
    i_ref = min(n - 1, i0 + round((length_mm / 2 + gap) / STEP_MM))
    r_ref = float(path.radius[i_ref])
    r_min = (1.0 - percent / 100.0) * r_ref
    s = (np.arange(n) - i0) * STEP_MM
    w = np.where(np.abs(s) < length_mm / 2, np.cos(np.pi * s / length_mm) ** 2, 0.0)
    radius = path.radius - w * np.maximum(path.radius - r_min, 0.0)
    radius[i0] = r_min
    # the truth is what is drawn (see drawn_waist_radius): r_min itself since the joints
    # of the drawn capsules are capped (joint_caps)
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


def drawn_points(radius: np.ndarray, n: int | None = None) -> list[int]:
    """Indices of the points ``training.phantoms.cta._draw_vessels`` draws capsules between:
    every point, or every second one where the vessel is wider than DRAW_STEP2_RADIUS_MM,
    and always the last (``n``: draw only the first n points, an occluded vessel)."""
    n = len(radius) if n is None else n
    step = 2 if float(radius[:n].min(initial=9.0)) > DRAW_STEP2_RADIUS_MM else 1
    idx = list(range(0, n, step))
    if idx and idx[-1] != n - 1:
        idx.append(n - 1)
    return idx


def joint_caps(radius: np.ndarray, idx: list[int], points: np.ndarray) -> np.ndarray:
    """Radius of the sphere that closes each joint between drawn capsules.

    The sphere only has to fill the wedge a bend opens between two frustums, so it may
    not reach past the frustums anywhere: c_j = min over drawn k of sqrt(r_k^2 + s_jk^2)
    (s_jk the distance between the points), which is r_j wherever the lumen narrows
    slower than it is wide. A sphere of the joint's own radius would reach past a short
    tight stenosis: the spheres beside the waist would fill it and draw a pinch much
    wider than the intended radius profile, a fraction of a slice long, that no CT (and
    no radiologist) can resolve.
    """
    r = np.asarray(radius, dtype=np.float64)[idx]
    p = np.asarray(points, dtype=np.float64)[idx]
    caps = r.copy()
    # a sphere can only be limited by points within its own radius
    reach = int(np.ceil(float(r.max(initial=0.0)) / STEP_MM)) + 1
    for off in range(1, min(reach, len(r))):
        s2 = np.sum((p[off:] - p[:-off]) ** 2, axis=1)
        caps[:-off] = np.minimum(caps[:-off], np.sqrt(r[off:] ** 2 + s2))
        caps[off:] = np.minimum(caps[off:], np.sqrt(r[:-off] ** 2 + s2))
    return caps


def drawn_waist_radius(path: Path3, i0: int) -> float:
    """The lumen radius the rasteriser actually draws at ``path.points[i0]``.

    Vessels are drawn as frustums between the points of :func:`drawn_points`, each
    joint closed by a sphere of :func:`joint_caps` radius. The drawn radius at a point
    is the largest of its own frustum radius (linear across a skipped point) and
    sqrt(c_j^2 - s_j^2) over joint spheres j at distance s_j; with the capped joints
    that is the intended radius for any waist the frustums can draw.
    """
    idx = drawn_points(path.radius)
    drawn = np.asarray(idx)
    caps = joint_caps(path.radius, idx, path.points)
    s2 = np.sum((path.points[drawn] - path.points[i0]) ** 2, axis=1)
    best = float(np.sqrt(np.maximum(caps**2 - s2, 0.0)).max())
    if i0 in idx:
        best = max(best, float(path.radius[i0]))
    else:
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
