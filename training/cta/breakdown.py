"""Where a vessel mask loses Dice: errors by vessel size and by distance from the wall.

Dice = 2 TP / (2 TP + FP + FN), so every wrong voxel costs the same; this sorts them.
A missed lumen voxel (FN) takes the size of the vessel it belongs to (its local radius:
the deepest distance-transform value of the truth within ``REACH_VOX``, so that the wall
voxel of a vessel up to that radius sees its centre) and is "wall" when it touches the background
(6-neighbourhood), "core" otherwise. A false voxel (FP) takes the size of the nearest
true vessel when it lies within ``NEAR_VOX`` of one ("wall": a lumen drawn one voxel too
wide), and is "away" otherwise; an away voxel is "bright" where the image reads above
``BONE_HU`` (bone, calcium) and "soft" otherwise (a vein, a missed truth branch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

BOOL = npt.NDArray[np.bool_]
#: vessel radius bins (mm on the 1 mm grid): intracranial / vertebral, carotid, large
RADIUS_EDGES = (1.5, 2.5, 4.0)
RADIUS_NAMES = ("r<1.5", "1.5-2.5", "2.5-4", "r>=4")
NEAR_VOX = 1.5
REACH_VOX = 4
BONE_HU = 200.0


@dataclass(frozen=True, slots=True)
class Errors:
    """Voxel counts of one mask against its truth, by radius bin (RADIUS_NAMES order)."""

    truth: tuple[int, ...]
    fn_wall: tuple[int, ...]
    fn_core: tuple[int, ...]
    fp_wall: tuple[int, ...]
    fp_away_bright: int
    fp_away_soft: int

    def __add__(self, other: Errors) -> Errors:
        def add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(x + y for x, y in zip(a, b, strict=True))

        return Errors(
            add(self.truth, other.truth),
            add(self.fn_wall, other.fn_wall),
            add(self.fn_core, other.fn_core),
            add(self.fp_wall, other.fp_wall),
            self.fp_away_bright + other.fp_away_bright,
            self.fp_away_soft + other.fp_away_soft,
        )

    def dice(self) -> float:
        fn = sum(self.fn_wall) + sum(self.fn_core)
        fp = sum(self.fp_wall) + self.fp_away_bright + self.fp_away_soft
        tp = sum(self.truth) - fn
        return 2.0 * tp / max(1, 2 * tp + fp + fn)

    def table(self) -> str:
        """One line per bin: its share of the truth and what each error kind costs in Dice
        points (the Dice gained if that kind alone were fixed)."""
        fn = sum(self.fn_wall) + sum(self.fn_core)
        fp = sum(self.fp_wall) + self.fp_away_bright + self.fp_away_soft
        tp = sum(self.truth) - fn
        base = self.dice()

        def gain(dfn: int, dfp: int) -> float:
            # fixing a missed voxel turns it into a TP; fixing a false one removes it
            t = tp + dfn
            return 100.0 * (2.0 * t / max(1, 2 * t + (fp - dfp) + (fn - dfn)) - base)

        lines = [f"Dice {base:.4f}  truth {sum(self.truth)}  FN {fn}  FP {fp}"]
        lines.append(
            f"  {'bin':8s} {'truth':>7s} {'FN wall':>14s} {'FN core':>14s} {'FP wall':>14s}"
        )
        for i, name in enumerate(RADIUS_NAMES):
            lines.append(
                f"  {name:8s} {self.truth[i]:7d}"
                f" {self.fn_wall[i]:6d} ({gain(self.fn_wall[i], 0):+.2f})"
                f" {self.fn_core[i]:6d} ({gain(self.fn_core[i], 0):+.2f})"
                f" {self.fp_wall[i]:6d} ({gain(0, self.fp_wall[i]):+.2f})"
            )
        lines.append(
            f"  FP away from any vessel: bright {self.fp_away_bright}"
            f" ({gain(0, self.fp_away_bright):+.2f}), soft {self.fp_away_soft}"
            f" ({gain(0, self.fp_away_soft):+.2f})"
        )
        return "\n".join(lines)


def _bins(radius: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    return np.asarray(np.digitize(radius, RADIUS_EDGES), dtype=np.int64)


def _count(bins: npt.NDArray[np.int64]) -> tuple[int, ...]:
    return tuple(int(c) for c in np.bincount(bins, minlength=len(RADIUS_NAMES)))


def errors(truth: BOOL, pred: BOOL, hu: npt.NDArray[np.float32]) -> Errors:
    """Sort ``pred``'s wrong voxels against ``truth`` (both on the same 1 mm grid)."""
    depth = ndimage.distance_transform_edt(truth)
    radius = ndimage.maximum_filter(depth, size=2 * REACH_VOX + 1)
    wall = truth & ~ndimage.binary_erosion(truth)
    fn = truth & ~pred
    fp = pred & ~truth
    # nearest truth voxel of every voxel outside the truth, and how far it is
    dist, idx = ndimage.distance_transform_edt(~truth, return_indices=True)
    near = fp & (dist <= NEAR_VOX)
    near_radius = radius[tuple(i[near] for i in idx)]
    away = fp & ~near
    return Errors(
        truth=_count(_bins(radius[truth])),
        fn_wall=_count(_bins(radius[fn & wall])),
        fn_core=_count(_bins(radius[fn & ~wall])),
        fp_wall=_count(_bins(near_radius)),
        fp_away_bright=int((away & (hu > BONE_HU)).sum()),
        fp_away_soft=int((away & (hu <= BONE_HU)).sum()),
    )
