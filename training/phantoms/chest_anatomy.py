"""Analytic chest anatomy drawn slab by slab: body, chest wall, lungs, heart, spine.

Shapes are evaluated in "anatomy" coordinates pulled back through a smooth warp
(breathing-like deformation), so every structure deforms together. Tubular structures
(ribs, airways, aorta, pulmonary vessels) are drawn afterwards in image space by
:mod:`training.phantoms.chest_tubes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.phantoms.raster import F32, F64, U8, Grid, ordered_map

#: Label values of the chest label volume.
CHEST_LABELS: dict[int, str] = {
    0: "background",
    1: "lung_right",
    2: "lung_left",
    3: "vessel",
    4: "soft_tissue",
    5: "bone",
    6: "heart",
    7: "airway",
    8: "nodule",
}


@dataclass(frozen=True, slots=True)
class Warp:
    """Smooth breathing-like displacement built from 1-D sinusoids.

    In-plane displacement (shift and expansion about the midline) varies with height
    only, and the cranio-caudal displacement varies in-plane only: every axial slice
    then pulls back through two vectors and one fixed 2-D map, which keeps the warp
    nearly free while still bending every structure in all three directions.
    Terms are ``(out axis, in axis, amplitude, wavenumber, phase)``; in axis -1 scales
    the out coordinate itself (chest expansion).
    """

    terms: tuple[tuple[int, int, float, float, float], ...]

    @staticmethod
    def sample(rng: np.random.Generator, amplitude: float) -> Warp:
        terms = []
        for out_axis, in_axis in ((0, 2), (1, 2), (2, 0), (2, 1), (0, -1), (1, -1)):
            for _ in range(2):
                amp = float(rng.uniform(-1, 1) * amplitude / 2)
                if in_axis == -1:
                    amp /= 120.0  # relative expansion, ~amplitude mm at the chest wall
                terms.append(
                    (
                        out_axis,
                        in_axis,
                        amp,
                        float(2 * np.pi / rng.uniform(120.0, 320.0)),
                        float(rng.uniform(0, 2 * np.pi)),
                    )
                )
        return Warp(tuple(terms))

    def displacement(self, x: F32, y: F32, z: F32) -> tuple[F32, F32, F32]:
        coords = (x, y, z)
        out: list[F32] = [np.zeros((1,), np.float32) for _ in range(3)]
        for o, i, a, k, ph in self.terms:
            src = z if i == -1 else coords[i]
            term = np.float32(a) * np.sin(np.float32(k) * src + np.float32(ph))
            out[o] = out[o] + (term * coords[o] if i == -1 else term)
        return out[0], out[1], out[2]

    def forward(self, points: F64) -> F64:
        """Image position of anatomy points: solve p + d(p) = q by fixed-point iteration."""
        q = np.atleast_2d(np.asarray(points, dtype=np.float64))
        p = q.copy()
        n = len(q)
        for _ in range(6):
            d = self.displacement(*(p[:, j].astype(np.float32) for j in range(3)))
            flat = [np.broadcast_to(c, (n,)) for c in d]
            p = q - np.stack(flat, axis=1).astype(np.float64)
        return p


@dataclass(frozen=True, slots=True)
class ChestShape:
    """Sizes (mm), positions (LPS mm) and attenuations (HU) of one patient's chest."""

    cav_a: float  # thoracic cavity half width
    cav_b: float  # thoracic cavity half depth
    cav_y: float
    body_a: float
    body_b_ant: float
    body_b_post: float
    fat: float
    z_apex: float
    z_dome_r: float
    z_dome_l: float
    dome_x: float
    med_x: float
    med_w: float
    heart_c: tuple[float, float, float]
    heart_r: tuple[float, float, float]
    spine_y: float
    spine_r: float
    disc_period: float
    disc_phase: float
    table_y: float
    oblique_r: tuple[float, float]  # (z at cav_y, slope dz/dy)
    oblique_l: tuple[float, float]
    fissure_tilt: float  # dz/d|x| of the oblique fissures
    horizontal_z: float
    lung_hu: float
    gravity_hu: float
    fissure_hu: float
    fat_hu: float
    muscle_hu: float
    blood_hu: float
    liver_hu: float
    cortex_hu: float
    marrow_hu: float

    @property
    def z_arch(self) -> float:
        return self.z_apex - 0.28 * (self.z_apex - self.z_dome_r)

    @property
    def z_carina(self) -> float:
        return self.z_apex - 0.4 * (self.z_apex - self.z_dome_r)


def sample_shape(rng: np.random.Generator, z_apex: float, size: float, inhale: float) -> ChestShape:
    """Draw one chest; ``size`` ~0.85..1.2 scales the patient, ``inhale`` is -1..1."""
    u = rng.uniform
    cav_a = u(118, 140) * size * (1 + 0.02 * inhale)
    cav_b = u(80, 98) * size * (1 + 0.05 * inhale)
    cav_y = u(-8, 2)
    fat = u(6, 22) * size**3
    height = u(180, 220) * size**0.5 * (1 + 0.05 * inhale)
    z_dome_r = z_apex - height
    spine_r = u(15, 19) * size**0.5
    spine_y = cav_y + cav_b * u(0.72, 0.8)
    heart_r = (u(52, 64) * size, u(42, 50) * size, u(48, 58) * size)
    med_x = u(-2, 6)
    z_obl_r = z_dome_r + u(0.3, 0.42) * height
    return ChestShape(
        cav_a=cav_a,
        cav_b=cav_b,
        cav_y=cav_y,
        body_a=cav_a + u(14, 22) + fat,
        body_b_ant=cav_b + u(12, 18) + fat,
        body_b_post=cav_b + u(45, 60) + fat * 0.6,
        fat=fat,
        z_apex=z_apex,
        z_dome_r=z_dome_r,
        z_dome_l=z_dome_r - u(8, 22),
        dome_x=cav_a * u(0.4, 0.5),
        med_x=med_x,
        med_w=u(16, 24),
        heart_c=(
            med_x + u(18, 32),
            cav_y - cav_b * u(0.2, 0.3),
            z_dome_r + heart_r[2] * u(0.55, 0.8),
        ),
        heart_r=heart_r,
        spine_y=spine_y,
        spine_r=spine_r,
        disc_period=u(24, 29),
        disc_phase=u(0, 30),
        table_y=cav_y + cav_b + u(45, 60) + fat * 0.6 + u(3, 12),
        oblique_r=(z_obl_r, u(0.8, 1.25)),
        oblique_l=(z_obl_r + u(-5, 15), u(0.8, 1.3)),
        fissure_tilt=u(-0.6, -0.2),
        horizontal_z=z_dome_r + u(0.5, 0.6) * height,
        lung_hu=u(-880, -830) - 25 * inhale,
        gravity_hu=u(20, 60),
        fissure_hu=u(170, 260),
        fat_hu=u(-110, -85),
        muscle_hu=u(35, 55),
        blood_hu=u(32, 48),
        liver_hu=u(50, 68),
        cortex_hu=u(800, 1300),
        marrow_hu=u(160, 280),
    )


@dataclass(slots=True)
class SlabOut:
    hu: F32
    label: U8
    region: U8  # 1 right lung, 2 left lung (before tubes are drawn)
    fissure_idx: list[np.ndarray]
    fissure_plane: list[np.ndarray]


def render(shape: ChestShape, warp: Warp, grid: Grid) -> SlabOut:
    """Draw the analytic anatomy on ``grid`` (HU float32, labels, lung sides, fissure points)."""
    hu = np.empty(grid.shape, np.float32)
    label = np.empty(grid.shape, np.uint8)
    region = np.empty(grid.shape, np.uint8)
    out = SlabOut(hu, label, region, [], [])
    x = grid.axis(2)[None, :]
    y = grid.axis(1)[:, None]
    zeros = np.zeros((1, 1), np.float32)
    _, _, dz_map = warp.displacement(x, y, zeros)
    dz_map = np.broadcast_to(dz_map, (y.shape[0], x.shape[1])).astype(np.float32)
    zs = grid.axis(0)

    def one(k: int) -> tuple[np.ndarray, np.ndarray] | None:
        return _slice(shape, warp, x, y, np.float32(zs[k]), dz_map, out, k)

    for found in ordered_map(one, range(len(zs))):
        if found is not None:
            out.fissure_idx.append(found[0])
            out.fissure_plane.append(found[1])
    return out


def _slice(
    s: ChestShape, warp: Warp, x: F32, y: F32, z: np.float32, dz_map: F32, out: SlabOut, k: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """One axial slice; vectors (1 x nx, ny x 1) are combined only where needed.

    Returns this slice's fissure sample points (index, plane id), if any.
    """
    zv = np.full((1, 1), z, np.float32)
    ddx, ddy, _ = warp.displacement(x, y, zv)
    xa = (x + ddx).astype(np.float32)  # 1 x nx
    ya = (y + ddy).astype(np.float32)  # ny x 1
    za = (z + dz_map).astype(np.float32)  # ny x nx

    # Body: a superellipse (flat back on the table), fat outside the muscle layer.
    by = np.where(ya < s.cav_y, np.float32(s.body_b_ant), np.float32(s.body_b_post))
    q_body = np.abs(xa / s.body_a) ** 2.4 + np.abs((ya - s.cav_y) / by) ** 2.4
    q_musc = np.abs(xa / (s.body_a - s.fat)) ** 2.4 + np.abs((ya - s.cav_y) / (by - s.fat)) ** 2.4
    hu = np.full(za.shape, -1000.0, np.float32)
    lab = np.zeros(za.shape, np.uint8)
    body = q_body < 1.0
    hu[body] = s.fat_hu
    lab[body] = 4
    hu[q_musc < 1.0] = s.muscle_hu

    cav = (xa / s.cav_a) ** 2 + ((ya - s.cav_y) / s.cav_b) ** 2 < 1.0
    above = za >= _diaphragm(s, xa, ya)
    thorax = cav & above
    abdomen = cav & ~above
    hu[thorax] = s.muscle_hu
    if abdomen.any():
        hu[abdomen] = 38.0
        hu[abdomen & (xa < s.med_x + 15)] = s.liver_hu
        gas = (
            abdomen
            & (za > s.z_dome_l - 22)
            & (
                ((xa - s.cav_a * 0.45) / 38) ** 2
                + ((ya - s.cav_y + 0.2 * s.cav_b) / 30) ** 2
                + ((za - s.z_dome_l + 22) / 16) ** 2
                < 1.0
            )
        )
        hu[gas] = -1000.0

    # Narrow anterior and posterior junctions, wide around the trachea and great vessels.
    med_w = s.med_w * (
        0.55 + 0.7 * np.exp(-(((ya - s.cav_y - 0.1 * s.cav_b) / (0.5 * s.cav_b)) ** 2))
    )
    med_w = med_w + 10.0 * np.exp(-(((z - s.z_arch) / 35.0) ** 2))
    med = thorax & (np.abs(xa - s.med_x) < med_w)
    hu[med] = s.fat_hu * 0.85
    hc, hr = s.heart_c, s.heart_r
    if abs(z - hc[2]) < hr[2] * 1.1:
        qh = ((xa - hc[0]) / hr[0]) ** 2 + ((ya - hc[1]) / hr[1]) ** 2 + ((za - hc[2]) / hr[2]) ** 2
        peri = cav & (qh < 1.16)
        heart = cav & (qh < 1.0)
        hu[peri] = s.fat_hu * 0.9
        hu[heart] = s.blood_hu
        lab[heart] = 6
        med |= peri

    spine_zone = (xa / (s.spine_r + 14)) ** 2 + ((ya - s.spine_y) / (s.spine_r + 12)) ** 2 < 1.0
    lungs = thorax & ~med & ~spine_zone
    if z > s.z_apex - 0.5 * (s.z_apex - s.z_dome_r):
        lungs &= (za < s.z_apex) & _apex_ok(s, xa, ya, za)
    reg = np.zeros(za.shape, np.uint8)
    fissure = None
    if lungs.any():
        rows = np.flatnonzero(lungs.any(axis=1))
        r0, r1 = rows[0], rows[-1] + 1
        sub = (slice(r0, r1), slice(None))
        lung_hu = s.lung_hu + s.gravity_hu * (ya[r0:r1] - s.cav_y) / s.cav_b
        fis, plane = _fissures(s, xa, ya[r0:r1], za[sub])
        hu_l = lung_hu + np.float32(s.fissure_hu) * fis
        lsub = lungs[sub]
        hu[sub][lsub] = hu_l[lsub]
        side = np.where(xa < s.med_x, np.uint8(1), np.uint8(2))
        reg[sub] = np.where(lsub, side, np.uint8(0))
        lab[sub][lsub] = reg[sub][lsub]
        core = lsub & (fis > 0.6)
        idx = np.argwhere(core)
        if len(idx):
            idx = np.c_[np.full(len(idx), k), idx[:, 0] + r0, idx[:, 1]]
            fissure = (idx[::7], plane[core][::7])

    _spine(s, x, y, xa, ya, z, hu, lab)
    if s.z_dome_r - 25 < z < s.z_apex - 25:
        sternum = ((xa - s.med_x) / 15.0) ** 2 + ((ya - (s.cav_y - s.cav_b - 7)) / 6.0) ** 2 < 1.0
        hu[sternum] = s.marrow_hu + 120
        lab[sternum] = 5
    curve = s.table_y + 6e-4 * xa**2
    table = (ya > curve) & (ya < curve + 8) & (np.abs(xa) < 230)
    hu[table] = 120.0
    out.hu[k], out.label[k], out.region[k] = hu, lab, reg
    return fissure


def _diaphragm(s: ChestShape, xa: F32, ya: F32) -> F32:
    """Height of the diaphragm under each point: two domes, deep posterior recesses."""
    dy = (ya - s.cav_y + 0.1 * s.cav_b) ** 2
    right = s.z_dome_r - np.minimum(0.011 * ((xa - s.med_x + s.dome_x) ** 2 + 1.3 * dy), 65.0)
    left = s.z_dome_l - np.minimum(0.011 * ((xa - s.med_x - s.dome_x) ** 2 + 1.3 * dy), 65.0)
    return np.maximum(right, left).astype(np.float32)


def _apex_ok(s: ChestShape, xa: F32, ya: F32, za: F32) -> np.ndarray:
    """Each lung narrows to a rounded apex over its top third."""
    z_s = s.z_apex - 0.45 * (s.z_apex - s.z_dome_r)
    t = np.clip((za - z_s) / (s.z_apex - z_s), 0.0, 1.0)
    scale = np.sqrt(np.maximum(1.0 - t**2, 1e-4))
    ax = 0.5 * s.cav_a * scale
    cx = s.med_x + np.sign(xa - s.med_x) * 0.5 * s.cav_a
    return ((xa - cx) / ax) ** 2 + ((ya - s.cav_y + 0.1 * s.cav_b) / (s.cav_b * scale)) ** 2 < 1.0


def _fissures(s: ChestShape, xa: F32, ya: F32, za: F32) -> tuple[F32, np.ndarray]:
    """Fissure weight (0..1, a ~1 mm sheet) and the plane id (0 R oblique, 1 L, 2 horizontal)."""
    w = np.float32(1.1)  # half-width of a triangular ~1 mm sheet profile
    z0r, sr = s.oblique_r
    z0l, sl = s.oblique_l
    dyy = ya - s.cav_y
    tilt = s.fissure_tilt * (np.abs(xa - s.med_x) - 0.5 * s.cav_a)
    d_r = (za - z0r - sr * dyy - tilt) / np.float32(np.sqrt(1 + sr * sr + s.fissure_tilt**2))
    d_l = (za - z0l - sl * dyy - tilt) / np.float32(np.sqrt(1 + sl * sl + s.fissure_tilt**2))
    d_h = np.where(d_r > 0, za - s.horizontal_z, np.float32(99.0))
    right = xa < s.med_x
    d_obl = np.where(right, d_r, d_l)
    use_h = right & (np.abs(d_h) < np.abs(d_obl))
    d = np.where(use_h, d_h, d_obl)
    plane = np.where(use_h, 2, np.where(right, 0, 1)).astype(np.uint8)
    return np.clip(1.0 - np.abs(d) / w, 0.0, 1.0).astype(np.float32), plane


LOBES = ("right_upper", "right_middle", "right_lower", "left_upper", "left_lower")


def lobe_at(s: ChestShape, warp: Warp, lps: F64) -> list[str]:
    """The lobe each LPS point (N x 3) lies in, by the same fissure planes ``_fissures`` draws.

    The oblique fissures part upper (and, on the right, middle) lobes above from the lower
    lobe below; the horizontal fissure parts the right upper from the middle lobe, only
    above the right oblique fissure. Points are pulled through the warp as ``_slice`` does.
    """
    pts = np.asarray(lps, np.float32).reshape(-1, 3)
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    ddx, ddy, ddz = warp.displacement(x, y, z)
    xa, ya, za = x + ddx, y + ddy, z + ddz
    z0r, sr = s.oblique_r
    z0l, sl = s.oblique_l
    tilt = s.fissure_tilt * (np.abs(xa - s.med_x) - 0.5 * s.cav_a)
    d_r = za - z0r - sr * (ya - s.cav_y) - tilt
    d_l = za - z0l - sl * (ya - s.cav_y) - tilt
    out = []
    for i in range(len(pts)):
        if xa[i] < s.med_x:
            if d_r[i] <= 0:
                out.append("right_lower")
            else:
                out.append("right_upper" if za[i] > s.horizontal_z else "right_middle")
        else:
            out.append("left_upper" if d_l[i] > 0 else "left_lower")
    return out


def fissure_normal(s: ChestShape, plane: int) -> F64:
    """Unit normal (LPS) of a fissure plane."""
    if plane == 2:
        return np.array([0.0, 0.0, 1.0])
    slope = s.oblique_r[1] if plane == 0 else s.oblique_l[1]
    side = -1.0 if plane == 0 else 1.0
    n = np.array([-s.fissure_tilt * side, -slope, 1.0])
    return n / np.linalg.norm(n)


def _spine(
    s: ChestShape, x: F32, y: F32, xa: F32, ya: F32, z: np.float32, hu: F32, lab: U8
) -> None:
    """Vertebral body with discs, canal, arch and spinous / transverse processes."""
    r = s.spine_r
    cols = np.flatnonzero(np.abs(xa[0]) < r + 30)
    rows = np.flatnonzero((ya[:, 0] > s.spine_y - r - 2) & (ya[:, 0] < s.spine_y + r + 60))
    if len(cols) == 0 or len(rows) == 0:
        return
    sub = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    xs, ys = xa[:, sub[1]], ya[sub[0], :]
    h, lb = hu[sub], lab[sub]
    disc = float(np.mod(z - s.disc_phase, s.disc_period)) < 6.0
    d_body = np.sqrt(xs**2 + (ys - s.spine_y) ** 2)
    vb = d_body < r
    if disc:
        h[vb] = 85.0
    else:
        h[vb] = np.where(
            d_body[vb] > r - 1.6, np.float32(s.cortex_hu * 0.7), np.float32(s.marrow_hu)
        )
        lb[vb] = 5
        canal_y = s.spine_y + r + 8.0
        d_canal = np.sqrt(xs**2 + (ys - canal_y) ** 2)
        arch = (d_canal >= 8.0) & (d_canal < 13.0) & (ys > s.spine_y + r * 0.6)
        spinous = (np.abs(xs) < 4.0) & (ys > canal_y + 11) & (ys < canal_y + 42)
        transverse = (np.abs(ys - canal_y + 2) < 5.0) & (np.abs(xs) > 10) & (np.abs(xs) < r + 28)
        posterior = arch | spinous | transverse
        h[posterior] = s.marrow_hu + 150
        lb[posterior] = 5
        h[d_canal < 8.0] = 20.0
