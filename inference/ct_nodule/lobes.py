"""Pulmonary lobes from the fissures seen in the CT itself, or no lobe at all.

The lobes are parted by the interlobar fissures: on each side an oblique (major)
fissure that rises from the front of the diaphragm to the back of the upper chest, and
on the right a horizontal (minor) fissure that parts the upper from the middle lobe
above the oblique one. On thin-slice CT a fissure is a sheet about 1 mm thick, a little
denser than the lung around it; with slices over 3 mm it is averaged away.

So: resample the lung box to 1.5 mm, find sheet-like ridges with the Hessian (one large
negative eigenvalue, two small; Frangi et al., MICCAI 1998 give the eigenvalue
reasoning, Lassen et al., IEEE TMI 2013 use it for fissures), fit a smooth surface
``z = f(x, y)`` per fissure by RANSAC on the ridge points whose normal matches that
fissure's family, and accept a fissure only where its points clearly outnumber the
ridge noise in slabs beside it. A nodule's lobe is the side of the fitted surfaces it
lies on. Where a fissure is not found the lobe is left unknown and the side is reported
instead: a made-up lobe would send the reader to the wrong place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from countyread.domain import Volume
from inference.ct_nodule.lungs import LungMask

GRID_MM = 1.5
# Slices up to 3 mm: phantoms at 3 mm agree on 99.1-99.7 % of lung voxels; at 5 mm most
# fissures are averaged away (found on 1 of 6 sides) and the lobe would rest on luck.
MAX_SLICE_MM = 3.0
SIGMA_MM = 1.2
ERODE_MM = 4.5  # keep the pleura (a step edge, also plate-like) out of the ridge points
# Ridge strength (HU/mm^2, Hessian of the 1.2 mm Gaussian-smoothed image): a fissure
# reads about -25 (median) on the phantoms, lung parenchyma about -3.
MIN_RIDGE = 10.0
PLATE_RATIO = 0.35  # |second eigenvalue| below this share of the first: a sheet, not a tube
MAX_SMOOTH_HU = -600.0  # brighter smoothed voxels are vessel walls and nodules
INLIER_MM = 2.0
SLAB_OFFSET_MM = 6.0
# Fissure points in the fitted slab vs the mean count in slabs beside it: phantom fissures
# read 23-420 (1.25-3 mm slices), fissure-free phantom lungs (noise and vessels only) at
# most 2.7 (1.25-5 mm slices).
MIN_CONTRAST = 10.0
# Phantom fissures cover 14-146 cm2 (the small ones on 2.5-3 mm slices), the best
# fissure-free fits <= 16 cm2: contrast is the real test, area a floor under it.
MIN_AREA_CM2 = 12.0
# Below this support a fissure is fitted as a plane: a quadratic through a small patch
# bends wildly where it is extrapolated across the rest of the lung.
CURVED_AREA_CM2 = 50.0
RANSAC_TRIES = 400
# Anatomical sanity: the share of a lung above its oblique fissure (upper, and on the
# right middle, lobes; about half the lung in adults), and the share of the right lung
# above the oblique fissure that lies above the horizontal one (the upper lobe; the
# middle lobe is the smallest lobe, about a third of that part). A surface outside these
# bounds is not a fissure.
OBLIQUE_SPLIT = (0.15, 0.85)
HORIZONTAL_SPLIT = (0.2, 0.95)
RANSAC_SAMPLE = 6000
SEED = 20220  # fixed: the same CT gives the same lobes

Float = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Fissure:
    """One fitted fissure: ``z = c0 + c1 x + c2 y + c3 x^2 + c4 x y + c5 y^2`` (LPS mm)."""

    name: str  # right_oblique / right_horizontal / left_oblique
    coef: tuple[float, float, float, float, float, float]
    area_cm2: float
    contrast: float

    def z_at(self, x: Float, y: Float) -> Float:
        c = self.coef
        return c[0] + c[1] * x + c[2] * y + c[3] * x * x + c[4] * x * y + c[5] * y * y


@dataclass(frozen=True, slots=True)
class LobeModel:
    """The fissures found; ``reason`` says why some or all are missing."""

    midline_x: float
    fissures: tuple[Fissure, ...]
    reason: str | None = None

    def fissure(self, name: str) -> Fissure | None:
        return next((f for f in self.fissures if f.name == name), None)

    def lobe_at(self, lps: npt.ArrayLike) -> str | None:
        """``right_upper`` ... ``left_lower`` at one LPS point, or None where unknown."""
        x, y, z = (float(v) for v in np.asarray(lps, dtype=np.float64)[:3])
        xs, ys = np.array([x]), np.array([y])
        if x > self.midline_x:
            left = self.fissure("left_oblique")
            if left is None:
                return None
            return "left_upper" if z > float(left.z_at(xs, ys)[0]) else "left_lower"
        oblique = self.fissure("right_oblique")
        if oblique is None:
            return None
        if z <= float(oblique.z_at(xs, ys)[0]):
            return "right_lower"
        horizontal = self.fissure("right_horizontal")
        if horizontal is None:
            return None
        return "right_upper" if z > float(horizontal.z_at(xs, ys)[0]) else "right_middle"


@dataclass(frozen=True, slots=True)
class _Ridges:
    points: Float  # N x 3 LPS mm
    normals: Float  # N x 3, unit, pointing up (n_z >= 0)
    right: npt.NDArray[np.bool_]


def fit_lobes(volume: Volume, lung: LungMask) -> LobeModel:
    """Find the fissures of ``volume`` (canonical axial orientation) inside ``lung``."""
    if max(volume.spacing) > MAX_SLICE_MM:
        return LobeModel(
            lung.midline_x,
            (),
            f"voxels over {MAX_SLICE_MM} mm: fissures are not resolved",
        )
    ridges = _ridges(volume, lung)
    lung_pts = np.asarray(
        volume.index_to_lps(np.argwhere(lung.mask)[::7] * np.asarray(lung.stride)), np.float64
    ).reshape(-1, 3)
    rng = np.random.default_rng(SEED)
    found: list[Fissure] = []
    missing: list[str] = []
    for side, mask in (("right", ridges.right), ("left", ~ridges.right)):
        pts, nrm = ridges.points[mask], ridges.normals[mask]
        on_side = (lung_pts[:, 0] <= lung.midline_x) == (side == "right")
        region = lung_pts[on_side]
        # Oblique fissures rise toward the back (+y in LPS): normals tilt toward the front.
        obl = _fit(f"{side}_oblique", pts, nrm, (nrm[:, 1] < -0.35) & (nrm[:, 2] > 0.25), rng)
        if obl is None or not OBLIQUE_SPLIT[0] <= _share_above(obl, region) <= OBLIQUE_SPLIT[1]:
            missing.append(f"{side}_oblique")
            continue
        found.append(obl)
        if side == "right":
            above = pts[:, 2] > obl.z_at(pts[:, 0], pts[:, 1]) + INLIER_MM
            hor = _fit("right_horizontal", pts, nrm, above & (nrm[:, 2] > 0.85), rng)
            upper = region[region[:, 2] > obl.z_at(region[:, 0], region[:, 1])]
            if (
                hor is None
                or not HORIZONTAL_SPLIT[0] <= _share_above(hor, upper) <= (HORIZONTAL_SPLIT[1])
            ):
                missing.append("right_horizontal")
            else:
                found.append(hor)
    reason = f"not found: {', '.join(missing)}" if missing else None
    return LobeModel(lung.midline_x, tuple(found), reason)


def _ridges(volume: Volume, lung: LungMask) -> _Ridges:
    """Sheet-like bright ridges deep inside the lungs, as LPS points with their normals."""
    box = lung.upsampled_bbox(volume.shape, margin=1)
    crop = volume.array[box]
    real = tuple(
        max(1, round(n * s / GRID_MM)) / n for n, s in zip(crop.shape, volume.spacing, strict=True)
    )
    grid = ndimage.zoom(crop, real, output=np.float32, order=1, grid_mode=True, mode="nearest")
    step = tuple(s / r for s, r in zip(volume.spacing, real, strict=True))
    start = np.array([b.start for b in box], dtype=np.float64)

    def to_index(kji: Float) -> Float:
        return start + (kji + 0.5) / np.asarray(real) - 0.5

    def to_axis(i: npt.NDArray[np.int_], axis: int) -> Float:
        return start[axis] + (i + 0.5) / real[axis] - 0.5

    # The coarse lung mask onto the grid by index arithmetic per axis (nearest voxel).
    axes = [
        np.clip(
            np.round(to_axis(np.arange(grid.shape[a]), a) / lung.stride[a]).astype(int),
            0,
            lung.mask.shape[a] - 1,
        )
        for a in range(3)
    ]
    inside = lung.mask[np.ix_(axes[0], axes[1], axes[2])]
    erode = max(1, round(ERODE_MM / GRID_MM))
    deep = ndimage.binary_erosion(inside, iterations=erode)
    sigma = [SIGMA_MM / s for s in step]
    smooth = ndimage.gaussian_filter(grid, sigma)
    pick = deep & (smooth < MAX_SMOOTH_HU)
    pick[[0, -1], :, :] = pick[:, [0, -1], :] = pick[:, :, [0, -1]] = False
    at, (zz, yy, xx, zy, zx, yx) = _hessian_at(smooth, np.flatnonzero(pick.ravel()), step)
    del grid, smooth
    w = _eigvals_sym3(zz, yy, xx, zy, zx, yx)  # ascending: w[0] is the most negative
    sheet = (
        (w[0] < -MIN_RIDGE)
        & (np.abs(w[1]) < PLATE_RATIO * np.abs(w[0]))
        & (np.abs(w[2]) < PLATE_RATIO * np.abs(w[0]))
    )
    zz, yy, xx, zy, zx, yx = (p[sheet] for p in (zz, yy, xx, zy, zx, yx))
    hess = np.stack(
        [np.stack([zz, zy, zx], -1), np.stack([zy, yy, yx], -1), np.stack([zx, yx, xx], -1)], -2
    )
    normal_kji = np.linalg.eigh(hess)[1][:, :, 0]  # eigenvector of the most negative one
    idx = np.stack(np.unravel_index(at[sheet], pick.shape), axis=1).astype(np.float64)
    # The Hessian is in mm along the array axes, so its eigenvectors are too: map them to
    # LPS through the affine's unit direction columns (k, j, i order).
    rot = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    cols = np.stack([rot[:, 2], rot[:, 1], rot[:, 0]], axis=1)  # LPS per (k, j, i) axis
    normals = (cols @ normal_kji.T).T
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    normals *= np.where(normals[:, 2:3] < 0, -1.0, 1.0)
    points = np.asarray(volume.index_to_lps(to_index(idx)), dtype=np.float64).reshape(-1, 3)
    return _Ridges(points, normals, points[:, 0] <= lung.midline_x)


def _hessian_at(
    img: npt.NDArray[np.float32], at: npt.NDArray[np.int_], step: tuple[float, ...]
) -> tuple[npt.NDArray[np.int_], tuple[Float, ...]]:
    """Second derivatives (mm^-2) of ``img`` by central differences at the voxels ``at``
    (flat indices) whose trace is low enough for a sheet; returns those voxels and
    ``(zz, yy, xx, zy, zx, yx)``.

    The image is already Gaussian-smoothed, so differences at the points wanted are as good
    as six derivative-of-Gaussian filters over the whole grid, at a fraction of the cost.
    """
    flat = img.ravel()
    sk, sj, si = (s // img.itemsize for s in img.strides)
    hk, hj, hi = step

    def v(pos: npt.NDArray[np.int_], dk: int, dj: int, di: int) -> Float:
        return flat[pos + (dk * sk + dj * sj + di * si)].astype(np.float64)

    c2 = 2.0 * v(at, 0, 0, 0)
    zz = (v(at, 1, 0, 0) + v(at, -1, 0, 0) - c2) / hk**2
    yy = (v(at, 0, 1, 0) + v(at, 0, -1, 0) - c2) / hj**2
    xx = (v(at, 0, 0, 1) + v(at, 0, 0, -1) - c2) / hi**2
    # A sheet has trace ~ its one large negative eigenvalue (the other two are within
    # PLATE_RATIO of it): a cheap necessary test that spares most voxels the rest.
    keep = zz + yy + xx < -(1.0 - 2.0 * PLATE_RATIO) * MIN_RIDGE
    at, zz, yy, xx = at[keep], zz[keep], yy[keep], xx[keep]
    zy = (v(at, 1, 1, 0) - v(at, 1, -1, 0) - v(at, -1, 1, 0) + v(at, -1, -1, 0)) / (4 * hk * hj)
    zx = (v(at, 1, 0, 1) - v(at, 1, 0, -1) - v(at, -1, 0, 1) + v(at, -1, 0, -1)) / (4 * hk * hi)
    yx = (v(at, 0, 1, 1) - v(at, 0, 1, -1) - v(at, 0, -1, 1) + v(at, 0, -1, -1)) / (4 * hj * hi)
    return at, (zz, yy, xx, zy, zx, yx)


def _eigvals_sym3(
    a: Float, d: Float, f: Float, b: Float, c: Float, e: Float
) -> tuple[Float, Float, Float]:
    """Ascending eigenvalues of symmetric 3x3 matrices [[a, b, c], [b, d, e], [c, e, f]].

    Closed form (trigonometric solution of the characteristic cubic; O. K. Smith,
    Comm. ACM 4(4):168, 1961): vectorised, it costs a few array passes where a batched
    LAPACK eigensolver spends seconds on a million voxels.
    """
    p1 = b * b + c * c + e * e
    q = (a + d + f) / 3.0
    p2 = (a - q) ** 2 + (d - q) ** 2 + (f - q) ** 2 + 2.0 * p1
    p = np.sqrt(p2 / 6.0)
    p_safe = np.where(p > 1e-12, p, 1.0)
    ba, bd, bf = (a - q) / p_safe, (d - q) / p_safe, (f - q) / p_safe
    bb, bc, be = b / p_safe, c / p_safe, e / p_safe
    det = ba * (bd * bf - be * be) - bb * (bb * bf - be * bc) + bc * (bb * be - bd * bc)
    phi = np.arccos(np.clip(det / 2.0, -1.0, 1.0)) / 3.0
    hi = q + 2.0 * p * np.cos(phi)
    lo = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    return lo, 3.0 * q - hi - lo, hi


def _share_above(fissure: Fissure, pts: Float) -> float:
    if not len(pts):
        return 0.0
    return float(np.mean(pts[:, 2] > fissure.z_at(pts[:, 0], pts[:, 1])))


def _area_cm2(pts: Float) -> float:
    """Area the points cover seen from above (3 mm cells), in cm2."""
    cells = np.unique(np.floor(pts[:, :2] / 3.0).astype(np.int64), axis=0)
    return len(cells) * 9.0 / 100.0


def _design(x: Float, y: Float) -> Float:
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)


def _fit(
    name: str, pts: Float, nrm: Float, family: npt.NDArray[np.bool_], rng: np.random.Generator
) -> Fissure | None:
    """RANSAC plane among ``family`` points, then a quadratic surface through its inliers."""
    cand, cn = pts[family], nrm[family]
    if len(cand) < 50:
        return None
    # Score the hypotheses on a fixed-size sample; the refit below uses every point.
    sample = rng.choice(len(cand), min(len(cand), RANSAC_SAMPLE), replace=False)
    sp, sn = cand[sample], cn[sample]
    mean_n = sn.mean(axis=0)
    mean_n /= max(float(np.linalg.norm(mean_n)), 1e-9)
    best_plane: tuple[Float, Float] | None = None
    best_n = 0
    for _ in range(RANSAC_TRIES):
        a, b, c = sp[rng.choice(len(sp), 3, replace=False)]
        n = np.cross(b - a, c - a)
        norm = float(np.linalg.norm(n))
        if norm < 1e-6:
            continue
        n = n / norm * (1.0 if n[2] >= 0 else -1.0)
        if float(np.dot(n, mean_n)) < 0.8:
            continue
        count = int(((np.abs((sp - a) @ n) < INLIER_MM) & (sn @ n > 0.85)).sum())
        if count > best_n:
            best_plane, best_n = (a, n), count
    if best_plane is None or best_n < 20:
        return None
    a, n = best_plane
    inl = (np.abs((cand - a) @ n) < INLIER_MM) & (cn @ n > 0.85)
    coef = np.zeros(6)
    for _ in range(3):
        sub = cand[inl]
        terms = 6 if _area_cm2(sub) >= CURVED_AREA_CM2 else 3
        coef = np.zeros(6)
        coef[:terms] = np.linalg.lstsq(
            _design(sub[:, 0], sub[:, 1])[:, :terms], sub[:, 2], rcond=None
        )[0]
        resid = cand[:, 2] - _design(cand[:, 0], cand[:, 1]) @ coef
        # Vertical residual -> distance across a tilted sheet.
        inl = np.abs(resid) * np.abs(cn[:, 2]) < INLIER_MM
    if int(inl.sum()) < 50:
        return None
    # The same surface shifted up or down by SLAB_OFFSET_MM: how many family points lie
    # in such a slab when no fissure is there.
    resid = cand[:, 2] - _design(cand[:, 0], cand[:, 1]) @ coef
    across = resid * np.abs(cn[:, 2])
    beside = sum(
        int((np.abs(across - o) < INLIER_MM).sum()) for o in (-SLAB_OFFSET_MM, SLAB_OFFSET_MM)
    )
    contrast = int(inl.sum()) / max(1.0, beside / 2.0)
    area_cm2 = _area_cm2(cand[inl])
    if contrast < MIN_CONTRAST or area_cm2 < MIN_AREA_CM2:
        return None
    c = tuple(float(v) for v in coef)
    surface = (c[0], c[1], c[2], c[3], c[4], c[5])
    return Fissure(name, surface, round(area_cm2, 1), round(contrast, 2))
