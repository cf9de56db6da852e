"""Tubular chest structures: ribs, airways, aorta and the pulmonary vessel trees."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from training.phantoms.chest_anatomy import ChestShape, SlabOut, Warp
from training.phantoms.raster import F64, U8, Grid, draw_segment
from training.phantoms.vessel_tree import Segment, grow_tree

Tube = tuple[F64, F64, float, float]  # p0, p1 (LPS mm), r0, r1


def _polyline(points: F64, r0: float, r1: float) -> list[Tube]:
    n = len(points) - 1
    radii = np.linspace(r0, r1, n + 1)
    return [(points[i], points[i + 1], float(radii[i]), float(radii[i + 1])) for i in range(n)]


def rib_tubes(rng: np.random.Generator, s: ChestShape, warp: Warp) -> list[Tube]:
    """Twelve pairs of ribs: from the transverse processes round the cavity, descending."""
    tubes: list[Tube] = []
    spacing = (s.z_apex - s.z_dome_r + 70.0) / 12.0
    z_s = s.z_apex - 0.45 * (s.z_apex - s.z_dome_r)
    for i in range(12):
        z_post = s.z_apex + 6.0 - i * spacing
        end = 2.75 if i < 7 else (2.35 if i < 10 else 1.5)
        drop = rng.uniform(70, 100) * (0.5 if i == 0 else 1.0)
        radius = rng.uniform(4.3, 5.4)
        for side in (-1.0, 1.0):
            phi = np.linspace(0.32, end, 26)
            z = z_post - drop * (phi / np.pi) ** 1.2
            t = np.clip((z - z_s) / (s.z_apex - z_s), 0.0, 0.95)
            scale = np.sqrt(1.0 - t**2)
            ax = s.cav_a * np.maximum(scale, 0.4) + radius + 3.0
            by = s.cav_b * np.maximum(scale, 0.55) + radius + 3.0
            pts = np.c_[s.med_x + side * ax * np.sin(phi), s.cav_y + by * np.cos(phi), z]
            tubes += _polyline(warp.forward(pts), radius, radius * 0.9)
    return tubes


def clavicle_tubes(rng: np.random.Generator, s: ChestShape, warp: Warp) -> list[Tube]:
    """S-shaped clavicles from the manubrium over the lung apices toward the shoulders."""
    tubes: list[Tube] = []
    front = s.cav_y - s.cav_b - 4.0
    for side in (-1.0, 1.0):
        lift = rng.uniform(5.0, 20.0)
        pts = np.array(
            [
                [s.med_x + side * 14.0, front - 2.0, s.z_apex - 12.0],
                [s.med_x + side * 0.45 * s.cav_a, front + 4.0, s.z_apex - 4.0 + lift * 0.5],
                [s.med_x + side * 0.8 * s.cav_a, s.cav_y - 0.5 * s.cav_b, s.z_apex + lift],
                [s.med_x + side * (s.cav_a + 8.0), s.cav_y - 0.1 * s.cav_b, s.z_apex + lift + 6.0],
            ]
        )
        tubes += _polyline(warp.forward(pts), 6.5, 5.5)
    return tubes


def airway_tubes(s: ChestShape, warp: Warp) -> list[Tube]:
    ty = s.cav_y + 0.15 * s.cav_b
    car = np.array([s.med_x, ty, s.z_carina])
    top = np.array([s.med_x, ty - 8.0, s.z_apex + 80.0])
    rb = np.array([s.med_x - s.med_w - 10.0, s.cav_y + 0.05 * s.cav_b, s.z_carina - 18.0])
    lb = np.array([s.med_x + s.med_w + 12.0, s.cav_y + 0.1 * s.cav_b, s.z_carina - 32.0])
    pts = [(top, car, 8.5, 8.0), (car, rb, 7.0, 6.0), (car, lb, 6.0, 5.5)]
    for end, sign in ((rb, -1.0), (lb, 1.0)):
        pts.append((end, end + np.array([sign * 12.0, -4.0, 22.0]), 4.5, 3.5))
        pts.append((end, end + np.array([sign * 14.0, 6.0, -26.0]), 4.5, 3.5))
    return [(warp.forward(a)[0], warp.forward(b)[0], r0, r1) for a, b, r0, r1 in pts]


def great_vessel_tubes(s: ChestShape, warp: Warp) -> list[Tube]:
    """Aorta (ascending, arch, descending) and the main pulmonary artery."""
    hc, hr = s.heart_c, s.heart_r
    aorta = np.array(
        [
            [hc[0] - 28.0, hc[1] + 8.0, hc[2] + hr[2] * 0.45],
            [s.med_x - 6.0, s.cav_y - 0.3 * s.cav_b, s.z_arch - 10.0],
            [s.med_x + 2.0, s.cav_y - 0.05 * s.cav_b, s.z_arch + 8.0],
            [s.med_x + 16.0, s.spine_y - s.spine_r - 14.0, s.z_arch],
            [s.med_x + 20.0, s.spine_y - s.spine_r * 0.5, s.z_arch - 30.0],
            [s.med_x + 14.0, s.spine_y - s.spine_r - 4.0, s.z_dome_r - 160.0],
        ]
    )
    tubes = _polyline(warp.forward(aorta), 15.0, 11.5)
    trunk = np.array(
        [
            [hc[0] - 8.0, hc[1] - 18.0, hc[2] + hr[2] * 0.5],
            [s.med_x + 8.0, s.cav_y - 0.05 * s.cav_b, s.z_carina - 12.0],
        ]
    )
    tubes += _polyline(warp.forward(trunk), 13.0, 12.0)
    return tubes


def pulmonary_trees(
    rng: np.random.Generator,
    s: ChestShape,
    warp: Warp,
    grid: Grid,
    region: U8,
    points_per_tree: int = 3000,
) -> list[Tube]:
    """Arterial and venous trees for both lungs, grown into the drawn lung region."""
    hc, hr = s.heart_c, s.heart_r
    trunk_top = warp.forward(
        np.array([s.med_x + 8.0, s.cav_y - 0.05 * s.cav_b, s.z_carina - 12.0])
    )[0]
    atrium = warp.forward(np.array([hc[0] - 12.0, hc[1] + hr[1] * 0.75, hc[2] + 12.0]))[0]
    tubes: list[Tube] = []
    for side, sign in ((1, -1.0), (2, 1.0)):
        territory = _sample_region(rng, grid, region, side, 2 * points_per_tree)
        if len(territory) < 50:
            continue
        half = rng.permutation(len(territory))
        art_pts, vein_pts = territory[half[::2]], territory[half[1::2]]
        art_root = warp.forward(
            np.array(
                [s.med_x + sign * (s.med_w - 2.0), s.cav_y + 0.02 * s.cav_b, s.z_carina - 20.0]
            )
        )[0]
        vein_root = warp.forward(
            np.array(
                [s.med_x + sign * (s.med_w - 4.0), s.cav_y + 0.12 * s.cav_b, s.z_carina - 52.0]
            )
        )[0]
        tubes.append((trunk_top, art_root, 11.0, 9.0))
        tubes.append((atrium, vein_root, 8.0, 7.0))
        for root, pts, r in (
            (art_root, art_pts, rng.uniform(7.0, 8.5)),
            (vein_root, vein_pts, rng.uniform(6.5, 8.0)),
        ):
            tubes += [_as_tube(seg) for seg in grow_tree(rng, root, pts, r)]
    return tubes


def _as_tube(seg: Segment) -> Tube:
    return (np.asarray(seg.p0), np.asarray(seg.p1), seg.r0, seg.r1)


def _sample_region(rng: np.random.Generator, grid: Grid, region: U8, side: int, n: int) -> F64:
    """About ``n`` uniformly random points (LPS mm) inside one lung."""
    frac = max(float((region[::4, ::4, ::4] == side).mean()), 1e-4)
    draws = int(n / frac * 1.2) + 100
    idx = np.c_[[rng.integers(0, m, draws) for m in grid.shape]].T
    keep = idx[region[idx[:, 0], idx[:, 1], idx[:, 2]] == side][:n]
    return grid.to_lps(keep + rng.uniform(-0.5, 0.5, keep.shape))


def draw_tubes(
    rng: np.random.Generator,
    s: ChestShape,
    warp: Warp,
    grid: Grid,
    anat: SlabOut,
    points_per_tree: int = 2400,
) -> None:
    """Draw all tubes into ``anat`` (HU and labels), in order of what covers what."""
    edge = float(np.mean(grid.spacing[1:]))
    vessels = great_vessel_tubes(s, warp) + pulmonary_trees(
        rng, s, warp, grid, anat.region, points_per_tree
    )
    airways = airway_tubes(s, warp)
    ribs = rib_tubes(rng, s, warp) + clavicle_tubes(rng, s, warp)
    layers: list[tuple[Iterable[Tube], float, float, int]] = [
        (airways, 0.0, s.muscle_hu, 4),
        (airways, 1.8, -990.0, 7),
        (vessels, 0.0, s.blood_hu, 3),
        (ribs, 0.0, s.cortex_hu, 5),
        (ribs, 1.4, s.marrow_hu, 5),
    ]
    field = np.zeros(grid.shape, np.uint8)
    for tubes, inset, value, label in layers:
        field[...] = 0
        for p0, p1, r0, r1 in tubes:
            draw_segment(field, grid, p0, p1, r0, r1, edge, inset)
        _blend(anat, field, value, label)


def _blend(anat: SlabOut, field: U8, value: float, label: int) -> None:
    nz = field.shape[0]
    for k0 in range(0, nz, 16):  # slab-wise keeps temporaries small
        f = field[k0 : k0 + 16]
        m = f > 0
        if not m.any():
            continue
        o = f[m].astype(np.float32) / np.float32(255.0)
        h = anat.hu[k0 : k0 + 16]
        h[m] = h[m] * (1.0 - o) + np.float32(value) * o
        anat.label[k0 : k0 + 16][f >= 128] = label
