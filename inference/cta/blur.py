"""The image's blur, measured on its own carotids, and its width along a vessel.

A lumen's cross-sectional area is kept by blur across the vessel (see
:mod:`inference.cta.profile`) but not by blur along it: the section through a short,
tight waist takes in contrast from the wider lumen on either side. The width of that
blur along a vessel follows from the in-plane point spread (reconstruction kernel and
pixel interpolation) and the blur across slices, mixed by how steeply the vessel crosses
the slices: sigma^2 = sigma_xy^2 (1 - c^2) + sigma_slice^2 c^2, c = |tangent . slice
normal| (separable Gaussian point spread, e.g. Hsieh, Computed Tomography, 2nd ed.,
ch. 3 and 9).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from countyread.domain import Volume
from inference.cta.profile import Intensities, sample_lps, smooth_path

F64 = npt.NDArray[np.float64]

#: Sections whose tangent is within ~18 degrees of the slice normal: their lumen edge
#: lies in the slice plane, where the in-plane point spread is measured.
STEEP_COS = 0.95
N_EDGE_RAYS = 16
EDGE_STEP_MM = 0.1
EDGE_REACH_MM = 9.0
MAX_SECTIONS = 40
#: The 25 % -> 75 % rise of a Gaussian-blurred step spans 1.349 sigma (2 x 0.6745).
QUARTILE_SPAN = 1.349
MIN_EDGES = 24
#: Linear interpolation between point samples d apart is a triangle of variance d^2 / 6.
TRIANGLE_VAR = 1.0 / 6.0


@dataclass(frozen=True, slots=True)
class Blur:
    inplane_mm: float  # Gaussian sigma in the slice plane (kernel + pixel interpolation)
    slice_mm: float  # Gaussian sigma across slices
    slice_normal: tuple[float, float, float]  # unit, LPS

    def along(self, tangents: F64) -> F64:
        """Sigma of the blur along each (unit) tangent."""
        c2 = np.clip((np.asarray(tangents) @ np.asarray(self.slice_normal)) ** 2, 0.0, 1.0)
        return np.asarray(
            np.sqrt(self.inplane_mm**2 * (1.0 - c2) + self.slice_mm**2 * c2), dtype=np.float64
        )


def _unit(v: F64) -> F64:
    return np.asarray(v / (np.linalg.norm(v) + 1e-12), dtype=np.float64)


def _edge_widths(prof: F64, r: F64, lumen_hu: float, tissue_hu: float) -> F64:
    """25-75 % edge width of each ray (rows of ``prof``, HU along ``r``); NaN where the
    ray shows no clean edge (no plateau, a neighbour or bone beyond the edge)."""
    out = np.full(len(prof), np.nan)
    for k, v in enumerate(prof):
        top = float(np.median(v[r < 1.0]))
        if top < tissue_hu + 0.6 * (lumen_hu - tissue_hu):
            continue  # the centre is no lumen plateau (off-centre, small)
        half = int(np.argmax(v < 0.5 * (top + tissue_hu)))
        if half == 0:
            continue
        out_lo, out_hi = r[half] + 2.5, r[half] + 4.0
        outside = v[(r >= out_lo) & (r <= out_hi)]
        if len(outside) < 5:
            continue
        bg = float(np.median(outside))
        span = top - bg
        if span < 0.5 * (lumen_hu - tissue_hu) or float(v[half:].max()) > bg + 0.5 * span:
            continue  # something bright beyond the edge: a vein, bone, a branch
        r75 = _crossing(v, r, bg + 0.75 * span)
        r25 = _crossing(v, r, bg + 0.25 * span)
        if r75 is not None and r25 is not None and r25 > r75:
            out[k] = r25 - r75
    return out


def _crossing(v: F64, r: F64, level: float) -> float | None:
    """Where ``v`` first falls below ``level``, linear between the samples."""
    i = int(np.argmax(v < level))
    if i == 0:
        return None
    f = (v[i - 1] - level) / max(float(v[i - 1] - v[i]), 1e-6)
    return float(r[i - 1] + f * (r[i] - r[i - 1]))


def estimate_blur(volume: Volume, paths: list[F64], inten: Intensities) -> Blur | None:
    """In-plane sigma from the 25-75 % edge width of the given (carotid) lumens where
    they run steeply through the slices; across slices, the linear interpolation between
    slices (spacing^2 / 6), a lower bound: a slice profile wider than the spacing only
    adds, and then this under-corrects. None without enough clean edges."""
    a = np.asarray(volume.affine, dtype=np.float64)
    e_col, e_row = _unit(a[:3, 0]), _unit(a[:3, 1])
    normal = _unit(np.cross(e_col, e_row))
    theta = np.linspace(0.0, 2 * np.pi, N_EDGE_RAYS, endpoint=False)
    dirs = np.cos(theta)[:, None] * e_col + np.sin(theta)[:, None] * e_row
    r = np.arange(0.0, EDGE_REACH_MM, EDGE_STEP_MM)
    centres: list[F64] = []
    for path in paths:
        if len(path) < 5:
            continue
        q, t, _ = smooth_path(path)
        steep = np.abs(t @ normal) > STEEP_COS
        centres.extend(q[steep][::4])
    if not centres:
        return None
    pick = np.asarray(centres)
    if len(pick) > MAX_SECTIONS:
        pick = pick[np.linspace(0, len(pick) - 1, MAX_SECTIONS).round().astype(int)]
    pts = pick[:, None, None, :] + dirs[None, :, None, :] * r[None, None, :, None]
    vals = sample_lps(volume, pts).reshape(-1, len(r))
    widths = _edge_widths(vals, r, inten.lumen_hu, inten.tissue_hu)
    widths = widths[np.isfinite(widths)]
    if len(widths) < MIN_EDGES:
        return None
    inplane = float(np.median(widths)) / QUARTILE_SPAN
    # the slice spacing along the slice normal (the affine's third column may be oblique)
    dz = abs(float(a[:3, 2] @ normal))
    across = float(np.sqrt(TRIANGLE_VAR) * dz)
    return Blur(inplane, across, (float(normal[0]), float(normal[1]), float(normal[2])))
