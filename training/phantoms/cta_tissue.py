"""Head/neck tissues drawn slice by slice: skin, fat, muscle, cervical spine with transverse
foramina, skull base, skull, brain, sinuses, airway, thyroid and lung apices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.phantoms.cta_vessels import Layout
from training.phantoms.raster import F32, F64, U8, Grid, ordered_map

TISSUE_LABELS: dict[int, str] = {0: "background", 1: "soft_tissue", 2: "bone", 3: "brain", 4: "air"}


@dataclass(frozen=True, slots=True)
class TissueHU:
    fat: float
    muscle: float
    brain: float
    cortex: float
    cancellous: float
    thyroid: float


def _ell(x: F32, y: F32, cx: float, cy: float, a: float, b: float) -> F32:
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2


def render_tissue(lay: Layout, grid: Grid, hu_p: TissueHU, va: dict[str, F64]) -> tuple[F32, U8]:
    """HU and tissue labels for every slice; ``va`` gives each vertebral artery's points."""
    hu = np.empty(grid.shape, np.float32)
    lab = np.empty(grid.shape, np.uint8)
    x = grid.axis(2)[None, :]
    y = grid.axis(1)[:, None]
    zs = grid.axis(0)

    def one(k: int) -> None:
        hu[k], lab[k] = _slice(lay, float(zs[k]), x, y, hu_p, va)

    for _ in ordered_map(one, range(len(zs))):
        pass
    return hu, lab


def _slice(
    lay: Layout, z: float, x: F32, y: F32, t: TissueHU, va: dict[str, F64]
) -> tuple[F32, U8]:
    k = lay.size
    zs, zc, za, S = lay.z_sb, lay.z_cow, lay.z_arch, lay.span
    shape = (y.shape[0], x.shape[1])
    hu = np.full(shape, -1000.0, np.float32)
    lab = np.zeros(shape, np.uint8)

    # Outline: shoulders below the neck base, neck, face, cranium.
    neck_base = za + 0.25 * S
    w = float(np.clip((neck_base - z) / 40.0, 0.0, 1.0))
    w = w * w * (3 - 2 * w)
    a, b = 58 * k + w * 100 * k, 55 * k + w * 50 * k
    body = _ell(x, y, 0.0, 12.0, a, b) < 1.0
    inner = _ell(x, y, 0.0, 12.0, a - 7, b - 7) < 1.0
    if zs - 55 < z < zs + 10:
        body |= _ell(x, y, 0.0, 2.0, 62 * k, 74 * k) < 1.0
        inner |= _ell(x, y, 0.0, 2.0, 62 * k - 6, 74 * k - 6) < 1.0
    zh, hz = zc + 10.0, 80.0 * k
    head_scale = 1.0 - ((z - zh) / hz) ** 2
    skull_out = skull_in = None
    if head_scale > 0 and z > zs - 12:
        sc = float(np.sqrt(head_scale))
        q = _ell(x, y, 0.0, 15.0, 70 * k * sc, 92 * k * sc)
        body |= q < 1.1
        inner |= q < 1.0
        skull_out = q < 1.0
        t_sk = 6.5 / (70 * k * sc)
        skull_in = q < (1.0 - t_sk) ** 2
    hu[body] = t.fat
    lab[body] = 1
    hu[inner] = t.muscle

    if z < za + 0.2 * S:  # lung apices beside the mediastinum
        top = za + 0.2 * S
        sc = float(np.sqrt(max(0.0, 1.0 - ((z - top) / (top - (za - 80))) ** 2))) if z < top else 0
        if sc > 0:
            lungs = (
                (_ell(x, y, -62 * k, 18, 45 * k * sc, 50 * k * sc) < 1)
                | (_ell(x, y, 62 * k, 18, 45 * k * sc, 50 * k * sc) < 1)
            ) & inner
            hu[lungs] = -850.0
            lab[lungs] = 4
    if z < zs - 40:  # trachea and larynx
        air = _ell(x, y, 0.0, -24.0, 8 * k, 8 * k) < 1.0
        hu[air] = -1000.0
        lab[air] = 4
    zt = za + 0.32 * S
    if abs(z - zt) < 20:
        thy = (_ell(x, y, -16, -22, 8, 9) < 1) | (_ell(x, y, 16, -22, 8, 9) < 1)
        hu[thy] = t.thyroid

    if skull_out is not None and skull_in is not None:
        bone = skull_out & ~skull_in
        hu[bone] = t.cortex
        lab[bone] = 2
        if z > zs - 6:
            hu[skull_in] = t.brain
            lab[skull_in] = 3
            csf = (_ell(x, y, -9, 0, 6, 22) < 1) | (_ell(x, y, 9, 0, 6, 22) < 1)
            if zc + 15 < z < zc + 40:
                hu[csf] = 6.0
    if zs - 8 < z < zs + 12:
        _skull_base(x, y, z, zs, t, hu, lab)
    if zs - 50 < z < zs + 4:  # nasal cavity and maxillary sinuses
        air = (
            ((np.abs(x) < 7) & (y > -60 * k) & (y < -28) & (z > zs - 40))
            | (_ell(x, y, -25, -44, 14, 15) + ((z - zs + 22) / 17) ** 2 < 1)
            | (_ell(x, y, 25, -44, 14, 15) + ((z - zs + 22) / 17) ** 2 < 1)
        )
        air &= body
        hu[air] = -1000.0
        lab[air] = 4
    _spine(lay, z, x, y, t, hu, lab, va)
    return hu, lab


def _skull_base(x: F32, y: F32, z: float, zs: float, t: TissueHU, hu: F32, lab: U8) -> None:
    clivus = (np.abs(x) < 14) & (y > -8) & (y < 26)
    bone = clivus.copy()
    for sx in (-1.0, 1.0):  # petrous ridges run postero-laterally
        px, py = sx * 14.0 + 0 * x, 0.0 + 0 * y
        dx, dy = sx * 41.0, 35.0
        tt = np.clip(((x - px) * dx + (y - py) * dy) / (dx * dx + dy * dy), 0, 1)
        bone |= np.hypot(x - (px + tt * dx), y - (py + tt * dy)) < 9.0
    bone &= _ell(x, y, 0.0, 30.0, 16.0, 16.0) >= 1.0  # foramen magnum
    sinus = (np.abs(x) < 13) & (y > -34) & (y < -9) & (z > zs + 3)
    hu[bone] = t.cortex * 0.85
    lab[bone] = 2
    hu[sinus] = -1000.0
    lab[sinus] = 4


def _spine(
    lay: Layout, z: float, x: F32, y: F32, t: TissueHU, hu: F32, lab: U8, va: dict[str, F64]
) -> None:
    """Vertebrae C7-C1 (larger thoracic ones below) with transverse foramina round the VAs."""
    if z > lay.z_c1 + 10:
        return
    k = lay.size
    yv = float(lay.spine_y(z))
    cervical = z > lay.z_c7
    r = (9.0 if cervical else 12.5) * k
    level = (lay.z_c1 - lay.z_c7) / 6.0
    disc = np.mod(z - lay.z_c7, level) < 4.0 and z < lay.z_c1 - 4
    d = np.hypot(x, y - yv)
    body = d < r
    if z > lay.z_c1 - 4:  # atlas: a ring round the dens instead of a body
        ring = (_ell(x, y, 0, yv + 8, 22, 20) < 1) & (_ell(x, y, 0, yv + 8, 17, 15) >= 1)
        dens = d < 5.0
        body = ring | dens
    canal_y = yv + r + 8.0
    dc = np.hypot(x, y - canal_y)
    arch = (dc >= 7.5) & (dc < 11.0) & (y > yv + r * 0.5)
    spinous = (np.abs(x) < 3.0) & (y > canal_y + 9) & (y < canal_y + 32)
    bone = (body & (not disc)) | arch | spinous
    if cervical:
        for pts in va.values():
            zz = pts[:, 2]
            sel = np.flatnonzero(np.abs(zz - z) < 0.6)
            if len(sel) == 0:
                continue
            cx, cy = float(pts[sel, 0].mean()), float(pts[sel, 1].mean())
            if abs(cy - yv) > 15:
                continue
            dv = np.hypot(x - cx, y - cy)
            foramen = dv < 3.2 * k
            ring = (dv < 6.0 * k) & ~foramen
            bar = (
                (np.abs(y - cy) < 3.0)
                & (np.sign(x) == np.sign(cx))
                & (np.abs(x) < abs(cx))
                & (np.abs(x) > r * 0.6)
            )
            bone |= (ring | bar) & ~foramen
    hu[bone] = np.where(d[bone] > r - 1.5, np.float32(t.cortex * 0.7), np.float32(t.cancellous))
    lab[bone] = 2
    if disc:
        disc_m = body & (d < r)
        hu[disc_m] = 80.0
        lab[disc_m] = 1
    canal = dc < 7.5
    hu[canal] = 25.0
