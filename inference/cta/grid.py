"""The 1 mm working grid: separable linear resampling of the CT and index mapping back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from countyread.domain import Volume

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class WorkGrid:
    """An isotropic grid aligned with the source volume's axes.

    Voxel ``(k, j, i)`` of the work grid sits at fractional source index
    ``(k, j, i) * step`` where ``step`` = work spacing / source spacing per axis, so the
    source affine carries over with the columns scaled (PS3.3 C.7.6.2.1.1 geometry).
    """

    shape: tuple[int, int, int]
    step: tuple[float, float, float]  # source voxels per work voxel, (slice, row, column)
    affine: npt.NDArray[np.float64]  # (column, row, slice, 1) -> LPS, like Volume.affine

    def to_lps(self, kji: npt.ArrayLike) -> npt.NDArray[np.float64]:
        idx = np.atleast_2d(np.asarray(kji, dtype=np.float64))
        out = (self.affine @ np.c_[idx[:, 2], idx[:, 1], idx[:, 0], np.ones(len(idx))].T).T
        return np.asarray(out[:, :3])

    def to_source_index(self, kji: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return np.atleast_2d(np.asarray(kji, dtype=np.float64)) * np.asarray(self.step)


def work_grid(volume: Volume, spacing_mm: float) -> WorkGrid:
    src = np.asarray(volume.spacing)
    step = spacing_mm / src
    shape = tuple(int(np.floor((n - 1) / s)) + 1 for n, s in zip(volume.shape, step, strict=True))
    affine = volume.affine.copy()
    affine[:3, 0] *= step[2]
    affine[:3, 1] *= step[1]
    affine[:3, 2] *= step[0]
    return WorkGrid(shape, (float(step[0]), float(step[1]), float(step[2])), affine)  # type: ignore[arg-type]


def _axis_resample(a: npt.NDArray[np.generic], axis: int, n: int, step: float) -> F32:
    pos = np.arange(n) * step
    i0 = np.minimum(np.floor(pos).astype(np.intp), a.shape[axis] - 1)
    i1 = np.minimum(i0 + 1, a.shape[axis] - 1)
    w = (pos - i0).astype(np.float32)
    shape = [1, 1, 1]
    shape[axis] = n
    w = w.reshape(shape)
    lo = np.take(a, i0, axis=axis).astype(np.float32)
    hi = np.take(a, i1, axis=axis).astype(np.float32)
    lo *= 1 - w
    hi *= w
    lo += hi
    return lo


def resample(volume: Volume, grid: WorkGrid) -> F32:
    """Trilinear resampling onto the work grid, one axis at a time (memory ~ 2 outputs)."""
    a: npt.NDArray[np.generic] = volume.array
    for axis in (0, 1, 2):
        a = _axis_resample(a, axis, grid.shape[axis], grid.step[axis])
    return np.asarray(a, dtype=np.float32)
