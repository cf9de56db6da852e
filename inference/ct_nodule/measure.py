"""Measurements of one nodule from its mask on the volume grid (Lung-RADS v2022 style).

Long axis: the longest in-plane diameter over the axial slices (between boundary pixel
centres, plus one pixel for the pixels' own extent); short axis: the extent perpendicular
to it on that slice; mean diameter (long + short) / 2 rounded to 0.1 mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from inference.ct_nodule.rules import NoduleType

SOLID_HU = -300.0  # solid component threshold (part-solid nodules)
CALCIFIED_HU = 200.0
# Solid voxels deeper inside the nodule than INTERIOR_MM and INTERIOR_SHARE of its largest
# depth (about its radius) belong to a solid part.
INTERIOR_MM = 1.5
INTERIOR_SHARE = 0.35


@dataclass(frozen=True, slots=True)
class Axes:
    long_mm: float
    short_mm: float
    slice_index: int  # index into the mask's first axis
    endpoints: tuple[tuple[float, float], tuple[float, float]]  # (row, col) of the long axis

    @property
    def mean_mm(self) -> float:
        return round((self.long_mm + self.short_mm) / 2.0 + 1e-9, 1)


@dataclass(frozen=True, slots=True)
class NoduleMeasurements:
    axes: Axes
    volume_mm3: float
    mean_hu: float
    max_hu: float
    type: NoduleType
    solid_part_mm: float
    margin: str  # smooth / lobulated / spiculated
    solidity: float
    flatness: float = 1.0  # shortest / longest principal axis of the mask (mm)


def _feret(
    rows: npt.NDArray[np.float64], cols: npt.NDArray[np.float64], dy: float, dx: float
) -> tuple[float, float, int, int]:
    pts = np.c_[rows * dy, cols * dx]
    if len(pts) > 400:  # hull vertices carry the diameter; keeps the pair search small
        try:
            pts_idx = ConvexHull(pts).vertices
            rows, cols, pts = rows[pts_idx], cols[pts_idx], pts[pts_idx]
        except QhullError:
            pass
    if len(pts) < 2:
        return min(dy, dx), min(dy, dx), 0, 0
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    long_axis = float(np.sqrt(d2[i, j]))
    if long_axis == 0:
        return min(dy, dx), min(dy, dx), int(i), int(j)
    u = (pts[j] - pts[i]) / long_axis
    proj = pts @ np.array([-u[1], u[0]])
    return long_axis + min(dy, dx), float(proj.max() - proj.min()) + min(dy, dx), int(i), int(j)


def axial_axes(mask: npt.NDArray[np.bool_], dy: float, dx: float) -> Axes:
    """Long/short axis on the axial slice where the long axis is largest."""
    best = Axes(0.0, 0.0, -1, ((0.0, 0.0), (0.0, 0.0)))
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        sl = mask[k]
        edge = sl & ~ndimage.binary_erosion(sl)
        rows, cols = np.nonzero(edge)
        long_axis, short_axis, i, j = _feret(rows.astype(float), cols.astype(float), dy, dx)
        if long_axis > best.long_mm + 1e-6:
            ends = ((float(rows[i]), float(cols[i])), (float(rows[j]), float(cols[j])))
            best = Axes(round(long_axis, 2), round(short_axis, 2), int(k), ends)
    return best


def solid_component_axes(
    mask: npt.NDArray[np.bool_], hu: npt.NDArray[np.int16], spacing: tuple[float, float, float]
) -> Axes | None:
    """Axes of the largest solid component (smoothed HU > SOLID_HU) that reaches the
    nodule's interior (see INTERIOR_MM), or None.

    A vessel that meets a ground-glass nodule is solid only where it enters, at the
    nodule's rim (the ground glass covers it inside); a solid core sits inside. Solid
    voxels confined to the rim are therefore vessels or chest wall, not a solid part.
    """
    solid_mask = mask & (ndimage.uniform_filter(hu.astype(np.float32), 3) > SOLID_HU)
    if not solid_mask.any():
        return None
    depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    lab, _ = ndimage.label(solid_mask)
    inner = max(INTERIOR_MM, INTERIOR_SHARE * float(depth.max()))
    reaching = np.unique(lab[solid_mask & (depth > inner)])
    if not len(reaching):
        return None
    sizes = np.bincount(lab.ravel())
    biggest = int(reaching[np.argmax(sizes[reaching])])
    return axial_axes(lab == biggest, spacing[1], spacing[2])


def classify_type(
    hu: npt.NDArray[np.floating], solid_axes: Axes | None, mean_mm: float
) -> NoduleType:
    """Type from attenuation: calcified, solid, ground glass or part-solid.

    The median decides solid versus subsolid: partial-volume edge voxels of a small solid
    nodule pull its mean well below soft tissue, but not its median. A subsolid nodule
    with a solid component (smoothed HU > -300) of measurable size is part-solid.
    """
    if (hu > CALCIFIED_HU).mean() > 0.25 or np.percentile(hu, 90) > 350:
        return NoduleType.CALCIFIED
    if float(np.median(hu)) > SOLID_HU:
        return NoduleType.SOLID
    if solid_axes is None or solid_axes.mean_mm < max(1.5, 0.15 * mean_mm):
        return NoduleType.GROUND_GLASS
    return NoduleType.PART_SOLID


def margin_cue(
    mask: npt.NDArray[np.bool_], spacing: tuple[float, float, float]
) -> tuple[str, float]:
    """Solidity (volume / convex hull volume): spiculated < 0.72 <= lobulated < 0.86 <= smooth."""
    pts = np.argwhere(mask) * np.asarray(spacing)
    if len(pts) < 30:
        return "smooth", 1.0
    try:
        hull = ConvexHull(pts)
    except QhullError:
        return "smooth", 1.0
    # voxel centres underestimate the hull by half a voxel all round: compare like with like
    vol = float(mask.sum()) * float(np.prod(spacing))
    grown = hull.volume + 0.5 * hull.area * float(np.mean(spacing))
    solidity = min(1.0, vol / grown) if grown > 0 else 1.0
    if solidity < 0.72:
        return "spiculated", solidity
    if solidity < 0.86:
        return "lobulated", solidity
    return "smooth", solidity


def flatness(mask: npt.NDArray[np.bool_], spacing: tuple[float, float, float]) -> float:
    """Shortest over longest principal axis (standard deviations, mm) of the mask.

    A perifissural nodule (often an intrapulmonary lymph node) lies flattened on its
    fissure, lentiform: about 0.45-0.7 here; rounded nodules stay above about 0.6.
    """
    pts = np.argwhere(mask) * np.asarray(spacing)
    if len(pts) < 10:
        return 1.0
    ev = np.linalg.eigvalsh(np.cov(pts.T))
    return float(np.sqrt(max(ev[0], 0.0) / ev[-1])) if ev[-1] > 0 else 1.0


def measure(
    mask: npt.NDArray[np.bool_], hu: npt.NDArray[np.int16], spacing: tuple[float, float, float]
) -> NoduleMeasurements:
    """All measurements from a (cropped) mask and the HU of the same crop."""
    dz, dy, dx = spacing
    axes = axial_axes(mask, dy, dx)
    values = hu[mask].astype(np.float64)
    solid_axes = solid_component_axes(mask, hu, spacing)
    ntype = classify_type(values, solid_axes, axes.mean_mm)
    margin, solidity = margin_cue(mask, spacing)
    solid_mm = solid_axes.mean_mm if (ntype is NoduleType.PART_SOLID and solid_axes) else 0.0
    return NoduleMeasurements(
        axes=axes,
        volume_mm3=round(float(mask.sum()) * dz * dy * dx, 1),
        mean_hu=round(float(values.mean()), 1),
        max_hu=float(values.max()),
        type=ntype,
        solid_part_mm=solid_mm,
        margin=margin,
        solidity=round(solidity, 3),
        flatness=round(flatness(mask, spacing), 3),
    )
