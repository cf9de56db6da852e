"""Lung-RADS style measurements taken from a rasterised nodule mask.

Lung-RADS v2022 measures the long axis and the perpendicular short axis on the axial
slice where the nodule is largest and reports their mean, rounded to 0.1 mm. The ground
truth is measured here from the mask the image was drawn with, so a detector is scored
against what the image shows, not against the sampling recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage


@dataclass(frozen=True, slots=True)
class AxialSize:
    """Long and short axis (mm) and the slice (index into the mask) they were taken on."""

    long_axis_mm: float
    short_axis_mm: float
    slice_index: int

    @property
    def mean_diameter_mm(self) -> float:
        return round((self.long_axis_mm + self.short_axis_mm) / 2.0, 1)


def axial_size(mask: npt.NDArray[np.bool_], row_mm: float, col_mm: float) -> AxialSize:
    """Largest long axis over the axial slices of ``mask`` ([slice, row, col]).

    Axes are measured between pixel centres plus one pixel, so a disc of diameter D drawn
    by its pixel centres measures D within one pixel; the short axis is the extent
    perpendicular to the long axis on the same slice.
    """
    best = AxialSize(0.0, 0.0, -1)
    best_area = -1
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        sl = mask[k]
        area = int(sl.sum())
        edge = sl & ~ndimage.binary_erosion(sl)
        rows, cols = np.nonzero(edge)
        pts = np.c_[rows * row_mm, cols * col_mm]
        long_axis, short_axis = _feret(pts, min(row_mm, col_mm))
        if long_axis > best.long_axis_mm + 1e-6 or (
            abs(long_axis - best.long_axis_mm) <= 1e-6 and area > best_area
        ):
            best = AxialSize(round(long_axis, 2), round(short_axis, 2), int(k))
            best_area = area
    return best


def _feret(pts: npt.NDArray[np.float64], pixel: float) -> tuple[float, float]:
    if len(pts) < 2:
        return pixel, pixel
    diff = pts[:, None, :] - pts[None, :, :]
    d2 = (diff**2).sum(axis=-1)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    long_axis = float(np.sqrt(d2[i, j]))
    if long_axis == 0.0:
        return pixel, pixel
    u = (pts[j] - pts[i]) / long_axis
    perp = np.array([-u[1], u[0]])
    proj = pts @ perp
    return long_axis + pixel, float(proj.max() - proj.min()) + pixel


def centroid_index(
    weights: npt.NDArray[np.floating] | npt.NDArray[np.bool_],
) -> npt.NDArray[np.float64]:
    """Weighted centroid (slice, row, col) of a local array."""
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    if total <= 0:
        raise ValueError("empty mask has no centroid")
    grids = np.indices(w.shape, dtype=np.float64)
    return np.array([(g * w).sum() / total for g in grids])
