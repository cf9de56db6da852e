"""Head/neck arterial and venous centrelines (LPS mm) with radii, stenoses and occlusions.

Control points follow adult anatomy from the aortic arch to the circle of Willis; they
are splined, resampled every 0.5 mm and bent by a random tortuosity. Stenoses narrow the
radius profile and are graded by NASCET: 1 - minimal diameter / diameter of the normal
vessel distal to the lesion.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.interpolate import CubicSpline

from training.phantoms.raster import F64

NAMED = (
    "CCA_L",
    "CCA_R",
    "ICA_L",
    "ICA_R",
    "ECA_L",
    "ECA_R",
    "VA_L",
    "VA_R",
    "BA",
    "M1_L",
    "M1_R",
    "A1_L",
    "A1_R",
    "P1_L",
    "P1_R",
)
#: Vessel label values: named vessels 1..15, then the unnamed rest.
VESSEL_IDS: dict[str, int] = {n: i + 1 for i, n in enumerate(NAMED)} | {
    "AORTA": 16,
    "BRACHIOCEPHALIC": 17,
    "SCA_L": 18,
    "SCA_R": 19,
    "ECA_BRANCH": 20,
    "A2": 21,
    "M2": 22,
    "P2": 23,
    "COMM": 24,
    "VEIN": 30,
    "PLAQUE": 40,
}


@dataclass(frozen=True, slots=True)
class Path3:
    """One vessel: centreline points (N x 3, LPS mm, 0.5 mm apart) and radius per point."""

    name: str
    label: str  # key of VESSEL_IDS
    points: F64
    radius: F64
    artery: bool = True
    parent: str | None = None
    drawn_until: int | None = None  # occlusion: points from here on carry no lumen


@dataclass(frozen=True, slots=True)
class Layout:
    """Key heights (z, LPS mm) of one neck; every other position derives from these."""

    z_arch: float
    span: float  # arch to circle of Willis
    z_bif_l: float
    z_bif_r: float
    size: float

    @property
    def z_cow(self) -> float:
        return self.z_arch + self.span

    @property
    def z_sb(self) -> float:  # skull base
        return self.z_arch + 0.86 * self.span

    @property
    def z_c7(self) -> float:
        return self.z_arch + 0.22 * self.span

    @property
    def z_c1(self) -> float:
        return self.z_arch + 0.79 * self.span

    def spine_y(self, z: float | F64) -> F64:
        """Centre of the vertebral bodies: cervical lordosis bows forward."""
        t = np.clip((np.asarray(z) - self.z_c7) / (self.z_c1 - self.z_c7), 0.0, 1.0)
        return np.asarray(22.0 - 7.0 * np.sin(np.pi * t), dtype=np.float64)


def spline(ctrl: list[tuple[float, float, float]], step: float = 0.5) -> F64:
    """Cubic spline through control points, resampled at ``step`` mm of arc length."""
    c = np.asarray(ctrl, dtype=np.float64)
    t = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(c, axis=0), axis=1))]
    cs = CubicSpline(t, c, bc_type="natural")
    dense = cs(np.linspace(0.0, t[-1], max(8, int(t[-1] / step * 4))))
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))]
    s = np.arange(0.0, arc[-1], step)
    return np.stack([np.interp(s, arc, dense[:, i]) for i in range(3)], axis=1)


def tortuous(rng: np.random.Generator, pts: F64, amp: float) -> F64:
    """Bend a centreline sideways (zero at its ends) by up to ``amp`` mm."""
    if amp <= 0 or len(pts) < 8:
        return pts
    tang = np.gradient(pts, axis=0)
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)
    ref = np.array([0.0, 0.0, 1.0]) if abs(tang[len(tang) // 2, 2]) < 0.9 else np.array([1.0, 0, 0])
    n1 = np.cross(tang, ref)
    n1 /= np.linalg.norm(n1, axis=1, keepdims=True)
    n2 = np.cross(tang, n1)
    s = np.linspace(0.0, 1.0, len(pts))
    window = np.sin(np.pi * s)
    waves = rng.uniform(1.0, 3.0, 2)
    ph = rng.uniform(0, 2 * np.pi, 2)
    a1 = amp * rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * waves[0] * s + ph[0]) * window
    a2 = amp * rng.uniform(0.0, 0.6) * np.sin(2 * np.pi * waves[1] * s + ph[1]) * window
    return np.asarray(pts + a1[:, None] * n1 + a2[:, None] * n2, dtype=np.float64)


def _path(
    name: str,
    label: str,
    ctrl: list[tuple[float, float, float]],
    r0: float,
    r1: float,
    rng: np.random.Generator,
    tort: float = 0.0,
    artery: bool = True,
    parent: str | None = None,
) -> Path3:
    pts = tortuous(rng, spline(ctrl), tort)
    return Path3(name, label, pts, np.linspace(r0, r1, len(pts)), artery, parent)


def build_paths(rng: np.random.Generator, lay: Layout, tortuosity: float) -> list[Path3]:
    """All vessels of one case, arteries first, in drawing order."""
    za, S, zs, zc = lay.z_arch, lay.span, lay.z_sb, lay.z_cow
    k = lay.size
    paths = [
        _path(
            "AORTA",
            "AORTA",
            [
                (-12, -30, za - 45),
                (-10, -24, za - 10),
                (0, -12, za),
                (12, 5, za - 5),
                (18, 22, za - 25),
                (18, 28, za - 60),
            ],
            13.5 * k,
            12.0 * k,
            rng,
        ),
    ]
    b_r = (-20.0, -12.0, za + 0.16 * S)
    paths.append(
        _path(
            "BRACHIOCEPHALIC",
            "BRACHIOCEPHALIC",
            [(-6, -16, za + 4), (-14, -14, za + 0.1 * S), b_r],
            6.0 * k,
            5.5 * k,
            rng,
        )
    )
    paths.append(
        _path(
            "SCA_R",
            "SCA_R",
            [b_r, (-40, -5, za + 0.17 * S), (-75, 0, za + 0.12 * S)],
            4.5 * k,
            4.0 * k,
            rng,
        )
    )
    paths.append(
        _path(
            "SCA_L",
            "SCA_L",
            [
                (12, 2, za + 3),
                (18, 5, za + 0.12 * S),
                (40, 5, za + 0.16 * S),
                (75, 5, za + 0.12 * S),
            ],
            4.5 * k,
            4.0 * k,
            rng,
        )
    )
    va_r = {"L": rng.uniform(1.9, 2.4) * k, "R": rng.uniform(1.5, 2.1) * k}
    for side, sx in (("L", 1.0), ("R", -1.0)):
        zb = lay.z_bif_l if side == "L" else lay.z_bif_r
        start = (3.0, -10.0, za + 4) if side == "L" else b_r
        cca_ctrl = [
            start,
            (sx * 14, -12, za + 0.12 * S),
            (sx * 24, -10, za + 0.3 * S),
            (sx * 27, -5, zb),
        ]
        paths.append(
            _path(
                f"CCA_{side}", f"CCA_{side}", cca_ctrl, 3.8 * k, 3.6 * k, rng, tort=tortuosity * 0.3
            )
        )
        ica = _path(
            f"ICA_{side}",
            f"ICA_{side}",
            [
                (sx * 27, -5, zb),
                (sx * 28.5, -1, zb + 9),
                (sx * 27, 3, zb + 28),
                (sx * 24, 5, zs - 15),
                (sx * 22, 8, zs),
                (sx * 22, 4, zs + 8),
                (sx * 18, -6, zs + 10),
                (sx * 15, -14, zs + 16),
                (sx * 14, -18, zs + 24),
                (sx * 13, -12, zs + 29),
                (sx * 13, -6, zc),
            ],
            2.7 * k,
            2.0 * k,
            rng,
            tort=tortuosity,
        )
        # The carotid bulb: a local widening just above the bifurcation.
        s = np.arange(len(ica.radius)) * 0.5
        bulb = 1.0 + 0.35 * np.exp(-(((s - 8.0) / 6.0) ** 2))
        paths.append(replace(ica, radius=ica.radius * bulb))
        paths.append(
            _path(
                f"ECA_{side}",
                f"ECA_{side}",
                [
                    (sx * 27, -5, zb),
                    (sx * 24, -12, zb + 15),
                    (sx * 26, -16, zb + 40),
                    (sx * 30, -10, zb + 65),
                ],
                2.4 * k,
                1.6 * k,
                rng,
                tort=tortuosity * 0.5,
            )
        )
        paths.append(
            _path(
                f"ECA_BRANCH_{side}1",
                "ECA_BRANCH",
                [(sx * 25, -9, zb + 6), (sx * 20, -20, zb - 4), (sx * 16, -24, zb - 25)],
                1.2 * k,
                0.9 * k,
                rng,
                parent=f"ECA_{side}",
            )
        )
        paths.append(
            _path(
                f"ECA_BRANCH_{side}2",
                "ECA_BRANCH",
                [(sx * 24, -13, zb + 20), (sx * 26, -30, zb + 26), (sx * 30, -45, zb + 34)],
                1.3 * k,
                1.0 * k,
                rng,
                parent=f"ECA_{side}",
            )
        )
        va_ctrl: list[tuple[float, float, float]] = [
            (sx * 38, -3.0, za + 0.15 * S),
            (sx * 30, 8.0, za + 0.25 * S),
        ]
        for level in np.linspace(lay.z_c7 + 0.09 * S, lay.z_c1 - 0.02 * S, 5):
            va_ctrl.append((sx * 23.0, float(lay.spine_y(level)) + 1.0, float(level)))
        va_ctrl += [
            (sx * 31, 30, lay.z_c1 + 3),
            (sx * 24, 38, lay.z_c1 + 9),
            (sx * 11, 31, zs - 6),
            (sx * 4, 18, zs + 6),
            (0, 12, zs + 10),
        ]
        paths.append(
            _path(
                f"VA_{side}",
                f"VA_{side}",
                va_ctrl,
                va_r[side],
                va_r[side] * 0.95,
                rng,
                tort=tortuosity * 0.25,
            )
        )
    paths.append(
        _path(
            "BA", "BA", [(0, 12, zs + 10), (0, 8, zs + 20), (0, 4, zc - 6)], 1.7 * k, 1.5 * k, rng
        )
    )
    for side, sx in (("L", 1.0), ("R", -1.0)):
        t = (sx * 13, -6, zc)
        p1_end = (sx * 10.0, 6.0, zc - 2)
        paths += [
            _path(
                f"P1_{side}",
                f"P1_{side}",
                [(0, 4, zc - 6), (sx * 7, 2, zc - 4), p1_end],
                1.1 * k,
                1.05 * k,
                rng,
            ),
            _path(
                f"P2_{side}",
                "P2",
                [p1_end, (sx * 25, 25, zc + 5), (sx * 35, 55, zc + 10)],
                1.0 * k,
                0.8 * k,
                rng,
                parent=f"P1_{side}",
            ),
            _path(
                f"A1_{side}",
                f"A1_{side}",
                [t, (sx * 8, -12, zc + 4), (sx * 2, -18, zc + 6)],
                1.2 * k,
                1.1 * k,
                rng,
            ),
            _path(
                f"A2_{side}",
                "A2",
                [(sx * 2, -18, zc + 6), (sx * 3, -30, zc + 25), (sx * 3, -20, zc + 55)],
                1.0 * k,
                0.8 * k,
                rng,
                parent=f"A1_{side}",
            ),
            _path(
                f"M1_{side}",
                f"M1_{side}",
                [t, (sx * 25, -5, zc + 1), (sx * 40, -3, zc + 3)],
                1.45 * k,
                1.3 * k,
                rng,
            ),
            _path(
                f"M2_{side}1",
                "M2",
                [(sx * 40, -3, zc + 3), (sx * 50, 5, zc + 15), (sx * 60, 20, zc + 35)],
                1.0 * k,
                0.8 * k,
                rng,
                parent=f"M1_{side}",
            ),
            _path(
                f"M2_{side}2",
                "M2",
                [(sx * 40, -3, zc + 3), (sx * 50, -12, zc + 20), (sx * 58, -20, zc + 40)],
                1.0 * k,
                0.8 * k,
                rng,
                parent=f"M1_{side}",
            ),
            _path(f"PCOM_{side}", "COMM", [t, (sx * 12, 0, zc - 2), p1_end], 0.7 * k, 0.7 * k, rng),
        ]
    paths.append(
        _path("ACOM", "COMM", [(-2, -18, zc + 6), (2, -18, zc + 6)], 0.8 * k, 0.8 * k, rng)
    )
    for side, sx in (("L", 1.0), ("R", -1.0)):
        paths.append(
            _path(
                f"IJV_{side}",
                "VEIN",
                [
                    (sx * 33, -2, za + 0.1 * S),
                    (sx * 34, 2, (lay.z_bif_l + za) / 2),
                    (sx * 33, 4, zs - 30),
                    (sx * 30, 14, zs - 10),
                    (sx * 30, 20, zs),
                    (sx * 42, 35, zs + 12),
                    (sx * 50, 60, zs + 25),
                    (sx * 35, 82, zs + 30),
                    (0, 88, zs + 31),
                ],
                6.0 * k,
                3.5 * k,
                rng,
                artery=False,
            )
        )
    paths.append(
        _path(
            "SSS",
            "VEIN",
            [(0, 88, zs + 31), (0, 86, zc + 50), (0, 30, zc + 88), (0, -40, zc + 80)],
            3.5 * k,
            2.5 * k,
            rng,
            artery=False,
        )
    )
    return paths
