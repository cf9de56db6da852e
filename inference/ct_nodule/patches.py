"""Candidate patches for the network, and mapping its mask back onto the volume grid.

A patch is ``PATCH`` voxels a side along the volume axes, isotropic ``spacing`` mm,
scaled with the candidate so that large nodules and masses fit (the object spans at
most ~60 % of the patch). HU are clipped to [-1000, 500] and mapped to [-1, 1].
Training (``training.ct_nodule``) uses these very functions so both sides agree.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

PATCH = 16
HU_LO, HU_HI = -1000.0, 500.0
MIN_SPACING_MM = 1.0  # 16 mm of context around the smallest candidates


def patch_spacing(radius_mm: float) -> float:
    """Isotropic patch spacing (mm) for an object of about this radius."""
    return max(MIN_SPACING_MM, 2.4 * radius_mm / (0.6 * PATCH))


def patch_coords(
    center_kji: npt.ArrayLike, spacing_mm: float, volume_spacing: tuple[float, float, float]
) -> npt.NDArray[np.float64]:
    """Volume indices (3 x P x P x P) of the patch voxel centres."""
    offs = (np.arange(PATCH, dtype=np.float64) - (PATCH - 1) / 2.0) * spacing_mm
    c = np.asarray(center_kji, dtype=np.float64)
    axes = [c[a] + offs / volume_spacing[a] for a in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def normalise(hu: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    out = np.clip(hu, HU_LO, HU_HI).astype(np.float32)
    out -= (HU_LO + HU_HI) / 2.0
    out /= (HU_HI - HU_LO) / 2.0
    return out


def extract_patch(
    array: npt.NDArray[np.int16],
    center_kji: npt.ArrayLike,
    spacing_mm: float,
    volume_spacing: tuple[float, float, float],
) -> npt.NDArray[np.float32]:
    """Trilinear patch in HU, air outside the volume, normalised for the network."""
    coords = patch_coords(center_kji, spacing_mm, volume_spacing)
    lo = np.floor(coords.reshape(3, -1).min(axis=1)).astype(int) - 1
    hi = np.ceil(coords.reshape(3, -1).max(axis=1)).astype(int) + 2
    lo_c = np.maximum(lo, 0)
    hi_c = np.minimum(hi, array.shape)
    sub = array[lo_c[0] : hi_c[0], lo_c[1] : hi_c[1], lo_c[2] : hi_c[2]]
    local = coords - lo_c.reshape(3, 1, 1, 1)
    hu = ndimage.map_coordinates(
        sub, local, order=1, mode="constant", cval=-1024.0, output=np.float32
    )
    return normalise(hu)


def patch_to_volume(
    prob: npt.NDArray[np.floating],
    center_kji: npt.ArrayLike,
    spacing_mm: float,
    volume_spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
) -> tuple[tuple[slice, slice, slice], npt.NDArray[np.float32]]:
    """Resample a patch probability map onto the volume voxels it covers (linear)."""
    c = np.asarray(center_kji, dtype=np.float64)
    half = (PATCH - 1) / 2.0 * spacing_mm / np.asarray(volume_spacing)
    lo = np.maximum(np.floor(c - half).astype(int), 0)
    hi = np.minimum(np.ceil(c + half).astype(int) + 1, shape)
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    grids = np.meshgrid(
        *[
            (np.arange(lo[a], hi[a]) - c[a]) * volume_spacing[a] / spacing_mm + (PATCH - 1) / 2.0
            for a in range(3)
        ],
        indexing="ij",
    )
    out = ndimage.map_coordinates(
        prob, np.stack(grids), order=1, mode="constant", cval=0.0, output=np.float32
    )
    return box, out
