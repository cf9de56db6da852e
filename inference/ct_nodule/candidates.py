"""Candidate generation: dense blobs inside the lungs on a 1 mm working grid.

Voxels brighter than ground glass (smoothed HU > -700) inside the lung mask form the
foreground; peaks of its Euclidean distance map are candidate centres (a sphere of
radius r has one peak of height r; a vessel a ridge). A shape cue ranks candidates:
the share of foreground in a ball of twice the peak radius is about 1/8 for an
isolated sphere and well above 1/3 for a vessel, so the cap on candidates keeps blobs
and drops vessel ridges first. The network decides the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import cKDTree

from countyread.domain import Volume
from inference.ct_nodule.lungs import LungMask

WORK_MM = 1.0
FOREGROUND_HU = -700.0
MIN_RADIUS_MM = 1.5
# Candidates scored by the network per scan. More finds more held-out nodules, but also more
# vessel peaks that ct_nodule 1.2.0 scores just above its 0.996 threshold. On seeds
# 9000-9023 (training/ct_nodule/diagnose.py) 1200 with NMS_REACH 1.0 gave CPM 0.848 (0.821
# at 400), sensitivity at 1 FP/scan 0.848 (0.829), no false positive above 0.996; yet on
# the robustness phantom a lung-base peak at rank 889 scores 0.998 (NMS_REACH 1.5), and
# 1200 or 800 failed tests/robustness (test_ct_gaps, test_ct_variants). Keep 400 until a
# network trained with such peaks as hard negatives scores them down. 1.3.0 (such a network,
# training/configs/ct_nodule_v13.toml) scores that peak 0.988 and passes tests/robustness at
# 1200, but gains nothing on 9000-9023 (CPM 0.766 either way) and splits the real tumour:
# not shipped.
MAX_CANDIDATES = 400
CORE_LEVELS = (2, 3, 4, 6, 9, 13)
MAX_ELONGATION = 2.5
MAX_CORE_EXTENT_MM = 40
PEAK_MIN_DEPTH = 2
PEAK_WINDOW = 5
MIN_PROMINENCE = 1.0
# Non-maximum suppression reach, in radii of the kept (larger) candidate. 1.0 let a 22 mm
# nodule on the diaphragm dome (held-out phantom 9011) keep its own candidate, but split
# the real CT's adenocarcinoma into two findings (tests/inference/test_ct_merge.py).
NMS_REACH = 1.5


@dataclass(frozen=True, slots=True)
class WorkGrid:
    """A 1 mm isotropic resampling of the lung box (``scipy.ndimage.zoom`` grid mode):
    volume index = origin + (w + 0.5) / factor - 0.5."""

    array: npt.NDArray[np.float32]
    lung: npt.NDArray[np.bool_]
    origin: tuple[int, int, int]
    factor: tuple[float, float, float]

    def to_volume_index(self, w: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.asarray(self.origin) + (np.atleast_2d(w) + 0.5) / np.asarray(self.factor) - 0.5


@dataclass(frozen=True, slots=True)
class Candidate:
    """A candidate centre in volume indices (slice, row, column) with its size cue."""

    center_kji: tuple[float, float, float]
    radius_mm: float
    crowding: float  # foreground share in a ball of twice the radius
    prominence: float = 0.0  # depth above the deepest point of a shell just outside it

    @property
    def diameter_estimate_mm(self) -> float:
        return 2.0 * self.radius_mm


def make_work_grid(volume: Volume, lung: LungMask) -> WorkGrid:
    box = lung.upsampled_bbox(volume.shape)
    crop = volume.array[box]
    factor = tuple(float(s) / WORK_MM for s in volume.spacing)
    out_shape = tuple(max(1, round(n * f)) for n, f in zip(crop.shape, factor, strict=True))
    real = tuple(o / n for o, n in zip(out_shape, crop.shape, strict=True))
    work = ndimage.zoom(crop, real, output=np.float32, order=1, grid_mode=True, mode="nearest")
    # lung mask onto the work grid (nearest neighbour through index arithmetic)
    idx = [
        np.clip(
            ((box[a].start + (np.arange(out_shape[a]) + 0.5) / real[a] - 0.5) / lung.stride[a])
            .round()
            .astype(int),
            0,
            lung.mask.shape[a] - 1,
        )
        for a in range(3)
    ]
    lung_w = lung.mask[np.ix_(idx[0], idx[1], idx[2])]
    origin = (box[0].start, box[1].start, box[2].start)
    return WorkGrid(work, lung_w, origin, real)  # type: ignore[arg-type]


def find_candidates(grid: WorkGrid, max_candidates: int = MAX_CANDIDATES) -> list[Candidate]:
    """Compact cores of the foreground at several depths, most blob-like first."""
    smooth = ndimage.gaussian_filter(grid.array, 1.0)
    fg = (smooth > FOREGROUND_HU) & grid.lung
    del smooth
    # Taxicab chamfer distance: the centre of a ball of radius R reads about R, like the
    # Euclidean map, at a fraction of its cost on a 25 M voxel grid.
    depth = ndimage.distance_transform_cdt(fg, metric="taxicab").astype(np.int16)
    found: list[tuple[npt.NDArray[np.int_], float, float]] = []
    for level in CORE_LEVELS:
        found += _compact_cores(depth, level)
    found += _depth_peaks(depth)
    if not found:
        return []
    found.sort(key=lambda f: -f[1])
    pts = np.array([f[0] for f in found])
    radii = np.array([f[1] for f in found], dtype=np.float32)
    kept = _suppress(pts, radii)
    kept_pts = pts[kept]
    kept_r = np.array([found[n][1] for n in kept], dtype=np.float64)
    crowd = _ball_stat(fg, kept_pts, 2.0 * kept_r, _crowding_offsets, _mean_or_one)
    prom = kept_r - _ball_stat(depth, kept_pts, kept_r, _shell_offsets, _max_or_zero)
    cands = []
    for i, n in enumerate(kept):
        p, r, elong = found[n]
        w_center = grid.to_volume_index(p.astype(np.float64))[0]
        cands.append(
            Candidate(
                (float(w_center[0]), float(w_center[1]), float(w_center[2])),
                r,
                float(crowd[i]) + 0.1 * elong,
                float(prom[i]),
            )
        )
    # Large cores (lesions >= ~12 mm: few, and never to be capped away) first, then
    # prominent peaks (blobs, also those touching a vessel), then cores of 3 mm radius and
    # more (nodules >= 6 mm), each group least crowded first.
    cands.sort(
        key=lambda c: (
            c.radius_mm < 6.0,
            c.prominence < MIN_PROMINENCE,
            c.radius_mm < 3.0,
            c.crowding,
        )
    )
    return cands[:max_candidates]


def _compact_cores(
    depth: npt.NDArray[np.int16], level: int
) -> list[tuple[npt.NDArray[np.int_], float, float]]:
    """Components of ``depth >= level`` whose shape is not elongated (not a vessel core).

    Returns (deepest voxel, radius estimate in mm, elongation) per compact component.
    """
    full = depth >= level
    if not full.any():
        return []
    # deeper levels are sparse: label only their bounding box
    box = tuple(
        slice(int(ix[0]), int(ix[-1]) + 1)
        for ix in (
            np.flatnonzero(full.any(axis=(1, 2))),
            np.flatnonzero(full.any(axis=(0, 2))),
            np.flatnonzero(full.any(axis=(0, 1))),
        )
    )
    core = full[box]
    depth_box = depth[box]
    offset = np.array([b.start for b in box])
    labels, _ = ndimage.label(core, structure=np.ones((3, 3, 3), bool))
    out = []
    for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        sub = labels[sl] == lab
        pts = np.argwhere(sub)
        d = depth_box[sl][sub]
        ext = np.ptp(pts, axis=0) + 1
        if ext.max() > 2 * MAX_CORE_EXTENT_MM:
            continue
        if len(pts) >= 4:
            ev = np.linalg.eigvalsh(np.cov(pts.T) + 0.25 * np.eye(3))
            elong = float(np.sqrt(ev[-1] / ev[0]))
        else:
            elong = float(ext.max())
        if elong > MAX_ELONGATION:
            continue
        top = int(np.argmax(d))
        centre = pts[top] + np.array([s.start for s in sl]) + offset
        out.append((centre, float(d[top]), elong))
    return out


def _depth_peaks(depth: npt.NDArray[np.int16]) -> list[tuple[npt.NDArray[np.int_], float, float]]:
    """Local maxima of the depth map at least PEAK_MIN_DEPTH deep.

    A nodule touching a vessel shares its cores with the vessel tree at every level, and
    the elongation test drops the joint component; its centre is still a local maximum of
    the depth (a sphere wider than the vessel). Vessel ridges also peak here: the crowding
    rank and the network sort them out. Elongation is unknown for a peak (0).
    """
    deep = depth >= PEAK_MIN_DEPTH
    if not deep.any():
        return []
    box = tuple(
        slice(max(0, int(ix[0]) - 2), int(ix[-1]) + 3)
        for ix in (
            np.flatnonzero(deep.any(axis=(1, 2))),
            np.flatnonzero(deep.any(axis=(0, 2))),
            np.flatnonzero(deep.any(axis=(0, 1))),
        )
    )
    sub = depth[box]
    peaks = (sub >= PEAK_MIN_DEPTH) & (sub == ndimage.maximum_filter(sub, size=PEAK_WINDOW))
    offset = np.array([b.start for b in box])
    pts = np.argwhere(peaks)
    values = sub[peaks].tolist()  # the same (C) order as argwhere
    return [(p, float(v), 0.0) for p, v in zip(pts + offset, values, strict=True)]


def _suppress(pts: npt.NDArray[np.int_], radii: npt.NDArray[np.float32]) -> list[int]:
    """Greedy non-maximum suppression (largest radius first) within NMS_REACH radii."""
    tree = cKDTree(pts)
    alive = np.ones(len(pts), dtype=bool)
    kept = []
    for n in range(len(pts)):
        if not alive[n]:
            continue
        kept.append(n)
        for m in tree.query_ball_point(pts[n], max(float(radii[n]), 2.0) * NMS_REACH):
            alive[m] = False
    return kept


# Per-candidate statistics over a ball or shell of offsets, vectorised over all candidates
# of one radius (a few thousand candidates on a 300-slice CT: a Python loop per candidate
# took about 3 s of the 300-slice benchmark; the values are the same).
OffsetFn = Callable[[float], npt.NDArray[np.int_]]
ReduceFn = Callable[[npt.NDArray[np.float64], npt.NDArray[np.bool_]], npt.NDArray[np.float64]]
MAX_GATHER = 2_000_000  # candidate x offset pairs gathered at once (memory bound)


def _crowding_offsets(radius: float) -> npt.NDArray[np.int_]:
    """Crowding: the foreground share in a ball of this radius (twice the peak's)."""
    r = max(2, int(np.ceil(radius)))
    o = np.argwhere(np.ones((2 * r + 1,) * 3, dtype=bool)) - r
    return o[(o**2).sum(axis=1) <= radius**2]


def _shell_offsets(radius: float) -> npt.NDArray[np.int_]:
    """Prominence: peak depth minus the deepest point on a shell 1..2.5 mm outside the
    peak's radius.

    A vessel ridge runs on through that shell at about its own depth (prominence <= 0);
    a nodule, even one hanging on a thinner vessel, stands above it. On the held-out
    phantoms 9 in 10 background peaks score <= 1 and most nodules >= 1.
    """
    reach = int(np.ceil(radius + 2.5))
    o = np.argwhere(np.ones((2 * reach + 1,) * 3, dtype=bool)) - reach
    d2 = (o**2).sum(axis=1)
    return o[(d2 >= (radius + 1.0) ** 2) & (d2 <= (radius + 2.5) ** 2)]


def _mean_or_one(v: npt.NDArray[np.float64], ok: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    n = ok.sum(axis=1)
    return np.where(n > 0, (v * ok).sum(axis=1) / np.maximum(n, 1), 1.0)


def _max_or_zero(v: npt.NDArray[np.float64], ok: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    # no shell voxel inside the grid: prominence = radius (radius - 0)
    return np.where(ok.any(axis=1), np.where(ok, v, -np.inf).max(axis=1), 0.0)


def _ball_stat(
    array: npt.NDArray[np.generic],
    pts: npt.NDArray[np.int_],
    radii: npt.NDArray[np.float64],
    offsets: OffsetFn,
    reduce: ReduceFn,
) -> npt.NDArray[np.float64]:
    out = np.zeros(len(pts), dtype=np.float64)
    shape = np.asarray(array.shape)
    for radius in np.unique(radii):
        idx = np.flatnonzero(radii == radius)
        o = offsets(float(radius))
        step = max(1, MAX_GATHER // max(1, len(o)))
        for lo in range(0, len(idx), step):
            sel = idx[lo : lo + step]
            q = pts[sel][:, None, :] + o[None, :, :]
            ok = np.all((q >= 0) & (q < shape), axis=2)
            q = np.clip(q, 0, shape - 1)
            v = array[q[..., 0], q[..., 1], q[..., 2]].astype(np.float64)
            out[sel] = reduce(v, ok)
    return out
