"""Voxel grids in patient LPS mm and soft (partial-volume) rasterisation of simple solids.

Every phantom is drawn on a :class:`Grid` whose axes follow DICOM axial conventions
(PS3.3 C.7.6.2.1.1): columns run toward patient left (+x), rows toward posterior (+y),
slices toward the head (+z). Occupancies are soft so that vessels and nodules thinner
than a voxel keep the partial-volume contrast a scanner would give them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T")
R = TypeVar("R")

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Grid:
    """A regular axial grid: ``shape`` and ``spacing`` are (slice, row, column)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]  # LPS mm of voxel (0, 0, 0)

    @property
    def affine(self) -> F64:
        """4x4 affine from (column, row, slice, 1) to LPS mm, as Volume expects."""
        dz, dy, dx = self.spacing
        aff = np.eye(4)
        aff[0, 0], aff[1, 1], aff[2, 2] = dx, dy, dz
        aff[:3, 3] = self.origin
        return aff

    def axis(self, which: int) -> F32:
        """LPS coordinate along one array axis (0 = z slices, 1 = y rows, 2 = x columns)."""
        lps_index = {0: 2, 1: 1, 2: 0}[which]
        n = self.shape[which]
        return np.asarray(
            self.origin[lps_index] + np.arange(n) * self.spacing[which], dtype=np.float32
        )

    def to_index(self, lps: npt.ArrayLike) -> F64:
        """Fractional (slice, row, column) index of LPS points (N x 3)."""
        p = np.atleast_2d(np.asarray(lps, dtype=np.float64))
        o = np.asarray(self.origin)
        dz, dy, dx = self.spacing
        return np.c_[(p[:, 2] - o[2]) / dz, (p[:, 1] - o[1]) / dy, (p[:, 0] - o[0]) / dx]

    def to_lps(self, kji: npt.ArrayLike) -> F64:
        """LPS mm of fractional (slice, row, column) indices (N x 3)."""
        k = np.atleast_2d(np.asarray(kji, dtype=np.float64))
        o = np.asarray(self.origin)
        dz, dy, dx = self.spacing
        return np.c_[o[0] + k[:, 2] * dx, o[1] + k[:, 1] * dy, o[2] + k[:, 0] * dz]

    def box(
        self, lo_lps: npt.ArrayLike, hi_lps: npt.ArrayLike
    ) -> tuple[slice, slice, slice] | None:
        """Index slices covering an LPS box, clipped to the grid; None when outside."""
        a = self.to_index(lo_lps)[0]
        b = self.to_index(hi_lps)[0]
        lo = np.floor(np.minimum(a, b)).astype(int)
        hi = np.ceil(np.maximum(a, b)).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, self.shape)
        if np.any(hi <= lo):
            return None
        return (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))

    def box_coords(self, sl: tuple[slice, slice, slice]) -> tuple[F32, F32, F32]:
        """Broadcastable z, y, x LPS coordinates of the voxels in an index box."""
        z = self.axis(0)[sl[0]][:, None, None]
        y = self.axis(1)[sl[1]][None, :, None]
        x = self.axis(2)[sl[2]][None, None, :]
        return z, y, x


def soft_edge(signed_depth: F32, width: float) -> F32:
    """Occupancy from depth inside a surface (mm, positive inside) over ``width`` mm."""
    return np.clip(signed_depth / np.float32(width) + np.float32(0.5), 0.0, 1.0).astype(np.float32)


def segment_depth(
    grid: Grid,
    sl: tuple[slice, slice, slice],
    p0: F64,
    p1: F64,
    r0: float,
    r1: float,
) -> F32:
    """Depth (radius minus distance, mm) of voxels in ``sl`` inside a tapered capsule."""
    z, y, x = grid.box_coords(sl)
    d = (p1 - p0).astype(np.float32)
    length2 = float(d @ d) or 1e-6
    px, py, pz = (x - np.float32(p0[0])), (y - np.float32(p0[1])), (z - np.float32(p0[2]))
    t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / np.float32(length2), 0.0, 1.0)
    dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
    radius = np.float32(r0) + t * np.float32(r1 - r0)
    return (radius - dist).astype(np.float32)


def segment_occupancy(
    grid: Grid,
    p0: npt.ArrayLike,
    p1: npt.ArrayLike,
    r0: float,
    r1: float,
    edge_mm: float,
    inset_mm: float = 0.0,
) -> tuple[tuple[slice, slice, slice], U8] | None:
    """Soft occupancy (0..255) of a tapered capsule over its index box; None if off-grid.

    ``inset_mm`` shrinks the capsule, which draws the marrow inside a cortical shell.
    """
    a = np.asarray(p0, dtype=np.float64)
    b = np.asarray(p1, dtype=np.float64)
    r0i, r1i = r0 - inset_mm, r1 - inset_mm
    if max(r0i, r1i) <= 0:
        return None
    m = max(r0i, r1i) + edge_mm
    sl = grid.box(np.minimum(a, b) - m, np.maximum(a, b) + m)
    if sl is None:
        return None
    depth = segment_depth(grid, sl, a, b, max(r0i, 0.05), max(r1i, 0.05))
    return sl, (soft_edge(depth, edge_mm) * 255.0 + 0.5).astype(np.uint8)


def draw_segment(
    field: U8,
    grid: Grid,
    p0: npt.ArrayLike,
    p1: npt.ArrayLike,
    r0: float,
    r1: float,
    edge_mm: float,
    inset_mm: float = 0.0,
) -> None:
    """Max-combine a tapered capsule's soft occupancy (0..255) into ``field`` in place."""
    got = segment_occupancy(grid, p0, p1, r0, r1, edge_mm, inset_mm)
    if got is not None:
        sl, occ = got
        np.maximum(field[sl], occ, out=field[sl])


def smooth_1d(rng: np.random.Generator, coords: F32, amplitude: float, wavelength: float) -> F32:
    """A smooth random 1-D displacement (sum of three sinusoids) sampled at ``coords``."""
    out = np.zeros_like(coords)
    for _ in range(3):
        k = 2.0 * np.pi / (wavelength * rng.uniform(0.7, 1.6))
        out += np.float32(rng.uniform(-1, 1) * amplitude / 2) * np.sin(
            np.float32(k) * coords + np.float32(rng.uniform(0, 2 * np.pi))
        )
    return out.astype(np.float32)


def ordered_map(fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """Map over threads, results in input order (so output stays deterministic).

    numpy and scipy.ndimage release the GIL in their loops, so per-slice work scales
    with the cores of a training machine; one core runs it inline.
    """
    n = min(8, os.cpu_count() or 1)
    if n == 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=n) as pool:
        yield from pool.map(fn, items)
