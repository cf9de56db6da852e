"""One canonical voxel layout for the analysis stages, and the way back to the source grid.

Scanners store the same chest in different voxel orders: feet-first consoles write rows
along -x (Image Orientation (Patient) -1\\0\\0\\0\\1\\0), prone ones also -y, some write
columns along y, and the slice order follows the normal, so a feet-first stack may run
head to feet (PS3.3 C.7.6.2.1.1). The network, the lung mask and the candidate shape cues
were trained and tuned on one layout, the one ``training.phantoms`` writes for a supine
head-first patient: slices inferior -> superior, rows anterior -> posterior, columns
patient right -> left (radiological display). This module brings any stack to that layout
by axis permutation and reversal only - no interpolation, values are untouched - with the
affine updated so every voxel keeps its LPS position. An oblique stack (gantry tilt
already shifted onto an orthogonal grid by :mod:`inference.volume`) is brought to the
nearest such layout; its residual obliquity stays in the affine, as before.

Everything voxel-indexed that leaves the pipeline (SEG masks and boxes, the key slice's
SOP Instance UID) is mapped back with :meth:`Reorientation.to_source` and
:meth:`Reorientation.crop_to_source`, because the SEG export addresses the rows and
columns of the original instances.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from countyread.domain import Volume

# Canonical array axis a (slice, row, column) runs along LPS axis _LPS_AXIS[a], positive:
# slices toward superior (+z), rows toward posterior (+y), columns toward left (+x).
_LPS_AXIS = (2, 1, 0)


@dataclass(frozen=True, slots=True)
class Reorientation:
    """``canonical = flip(transpose(source, perm), axes where flip)``.

    ``perm[a]`` is the source axis that canonical axis ``a`` takes; ``flip[a]`` says it
    runs backwards; ``source_shape`` is the shape of the source array (slice, row, col).
    """

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    source_shape: tuple[int, int, int]

    @property
    def is_identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flip)

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        s = self.source_shape
        return (s[self.perm[0]], s[self.perm[1]], s[self.perm[2]])

    def describe(self) -> str:
        """What was done, for the analysis notes (e.g. 'slices reversed, columns reversed')."""
        names = ("slices", "rows", "columns")
        parts = []
        if self.perm != (0, 1, 2):
            parts.append("axes " + "/".join(names[p] for p in self.perm))
        parts += [f"{names[a]} reversed" for a in range(3) if self.flip[a]]
        return ", ".join(parts)

    def to_source(self, kji: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Canonical (slice, row, column) indices, N x 3 or 3, fractional allowed -> source."""
        c = np.atleast_2d(np.asarray(kji, dtype=np.float64))
        out = np.empty_like(c)
        shape = self.canonical_shape
        for a in range(3):
            out[:, self.perm[a]] = (shape[a] - 1 - c[:, a]) if self.flip[a] else c[:, a]
        return out[0] if np.ndim(kji) == 1 else out

    def slices_to_canonical(self, source_slices: tuple[int, ...]) -> tuple[int, ...]:
        """Source slice indices -> canonical slice indices (slice axis kept as slice axis)."""
        if self.perm[0] != 0:
            return ()
        n = self.source_shape[0]
        return tuple(sorted(n - 1 - k if self.flip[0] else k for k in source_slices))

    def crop_to_source(
        self, box: tuple[slice, slice, slice], mask: npt.NDArray[np.bool_]
    ) -> tuple[tuple[slice, slice, slice], npt.NDArray[np.bool_]]:
        """A mask cropped to ``box`` of the canonical grid, as a crop of the source grid."""
        shape = self.canonical_shape
        src: list[slice] = [slice(0, 0)] * 3
        for a in range(3):
            lo, hi = box[a].start, box[a].stop
            src[self.perm[a]] = slice(shape[a] - hi, shape[a] - lo) if self.flip[a] else box[a]
        flipped = np.flip(mask, axis=tuple(a for a in range(3) if self.flip[a]))
        # canonical axis a is source axis perm[a]; source axis b is canonical axis inv[b]
        inv = tuple(int(v) for v in np.argsort(self.perm))
        out = np.ascontiguousarray(np.transpose(flipped, inv))
        return (src[0], src[1], src[2]), out


def plan(affine: npt.NDArray[np.float64], shape: tuple[int, int, int]) -> Reorientation:
    """The permutation and reversals that bring a stack with this affine to canonical."""
    # Columns of ``m``: LPS direction of the source slice, row and column axes.
    m = np.asarray(affine, dtype=np.float64)[:3, [2, 1, 0]]
    d = np.abs(m / np.linalg.norm(m, axis=0))
    # The assignment with the largest product of cosines (6 candidates): for an oblique
    # stack the nearest axis-aligned layout, never two source axes on one LPS axis.
    perm = max(
        itertools.permutations(range(3)),
        key=lambda p: float(np.prod([d[_LPS_AXIS[a], p[a]] for a in range(3)])),
    )
    flip = tuple(bool(m[_LPS_AXIS[a], perm[a]] < 0) for a in range(3))
    return Reorientation((perm[0], perm[1], perm[2]), (flip[0], flip[1], flip[2]), shape)


def to_canonical(volume: Volume) -> tuple[Volume, Reorientation]:
    """The volume in the canonical layout, and how to map back.

    Reversals alone are strided views (no copy); a permutation makes one contiguous
    copy, so the slow axis stays the slice axis for the slab-wise stages. The caller
    should drop its reference to the source array afterwards.
    """
    r = plan(volume.affine, volume.shape)
    if r.is_identity:
        return volume, r
    view = np.transpose(volume.array, r.perm)
    view = np.flip(view, axis=tuple(a for a in range(3) if r.flip[a]))
    array = view if r.perm == (0, 1, 2) else np.ascontiguousarray(view)
    # Affine in (column, row, slice) order; source axis b sits in affine column 2 - b.
    src = np.asarray(volume.affine, dtype=np.float64)
    affine = np.eye(4)
    origin = src[:3, 3].copy()
    shape = r.canonical_shape
    for a in range(3):
        step = src[:3, 2 - r.perm[a]]
        if r.flip[a]:
            origin += step * (shape[a] - 1)
            step = -step
        affine[:3, 2 - a] = step
    affine[:3, 3] = origin
    uids = volume.sop_instance_uids
    # one instance per canonical slice only while the slice axis stays the slice axis
    uids = (uids[::-1] if r.flip[0] else uids) if r.perm[0] == 0 else ()
    canonical = Volume(array, affine, volume.frame_of_reference_uid, volume.series_uid, uids)
    return canonical, r
