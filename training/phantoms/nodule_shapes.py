"""Nodule specifications and their soft rasterisation (round, lobulated, spiculated).

Kinds follow Lung-RADS v2022: solid, part-solid (ground-glass halo with a solid part),
ground glass (non-solid) and calcified (benign pattern). HU ranges are those reported
for each kind on thin-section CT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from training.phantoms.raster import F32, F64, Grid, segment_depth, soft_edge

Kind = Literal["solid", "part_solid", "ground_glass", "calcified"]
Shape = Literal["round", "lobulated", "spiculated"]
Location = Literal["lung", "juxtapleural", "perifissural"]
KINDS: tuple[Kind, ...] = ("solid", "part_solid", "ground_glass", "calcified")
SHAPES: tuple[Shape, ...] = ("round", "lobulated", "spiculated")
LOCATIONS: tuple[Location, ...] = ("lung", "juxtapleural", "perifissural")

#: Attenuation (HU) drawn per kind: (low, high) of the lesion mean.
KIND_HU: dict[str, tuple[float, float]] = {
    "solid": (10.0, 50.0),
    "part_solid": (-580.0, -450.0),  # the ground-glass component
    "ground_glass": (-620.0, -430.0),
    "calcified": (350.0, 900.0),
}
SOLID_CORE_HU = (5.0, 45.0)
# Spicule strands (``draw_nodule``): width at the core (plus 0.2 of the radius), width at
# the tip, and how much further out the tip lies than it used to (1.2-1.9 radii), in mm.
SPICULE_BASE_MM = 1.4
SPICULE_TIP_MM = 1.0
SPICULE_MIN_LENGTH_MM = 3.0


@dataclass(frozen=True, slots=True)
class NoduleSpec:
    """What to draw; the truth is measured from what was drawn.

    ``center_lps`` places a nodule exactly (mm); otherwise a location of the requested
    kind is searched in the lungs. ``solid_part_mm`` applies to part-solid nodules.
    """

    diameter_mm: float
    kind: Kind = "solid"
    shape: Shape = "round"
    location: Location = "lung"
    side: Literal["left", "right"] | None = None
    solid_part_mm: float | None = None
    center_lps: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if not 1.0 <= self.diameter_mm <= 60.0:
            raise ValueError(f"diameter_mm must be 1..60, got {self.diameter_mm}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.location not in LOCATIONS:
            raise ValueError(f"location must be one of {LOCATIONS}, got {self.location!r}")


@dataclass(frozen=True, slots=True)
class NoduleDraw:
    """A drawn nodule: occupancies (0..1) over an index box of the grid, and its HU."""

    box: tuple[slice, slice, slice]
    occupancy: F32  # whole lesion
    core: F32  # solid part (part-solid) or zeros
    hu: F32  # lesion attenuation per voxel (halo for part-solid)
    core_hu: float


def random_rotation(rng: np.random.Generator) -> F64:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return np.asarray(q, dtype=np.float64)


def _ellipsoid_depth(
    grid: Grid, box: tuple[slice, slice, slice], c: F64, rot: F64, axes: F64
) -> F32:
    z, y, x = grid.box_coords(box)
    dx, dy, dz = x - np.float32(c[0]), y - np.float32(c[1]), z - np.float32(c[2])
    q = np.zeros(np.broadcast_shapes(dx.shape, dy.shape, dz.shape), dtype=np.float32)
    for i in range(3):
        u = dx * np.float32(rot[0, i]) + dy * np.float32(rot[1, i]) + dz * np.float32(rot[2, i])
        q += (u / np.float32(axes[i])) ** 2
    return ((1.0 - np.sqrt(q)) * np.float32(axes.min())).astype(np.float32)


def draw_nodule(
    rng: np.random.Generator,
    grid: Grid,
    spec: NoduleSpec,
    center: F64,
    normal: F64 | None = None,
) -> NoduleDraw | None:
    """Rasterise one nodule centred at ``center`` (LPS mm); None if off the grid.

    ``normal`` (unit, LPS) flattens perifissural nodules across their fissure.
    """
    radius = spec.diameter_mm / 2.0
    reach = radius * (2.1 if spec.shape == "spiculated" else 1.2) + 2.0
    # the texture's box: its size sets how many random numbers the texture draws, so it
    # stays as it was and every seed keeps its other nodules, noise and placements
    tex_box = grid.box(center - reach, center + reach)
    if tex_box is None:
        return None
    edge = float(np.mean(grid.spacing[1:])) * 0.9
    box = tex_box
    if spec.shape == "spiculated":
        far = radius * 1.9 + SPICULE_MIN_LENGTH_MM + SPICULE_TIP_MM + edge
        grown = grid.box(center - max(far, reach), center + max(far, reach))
        box = grown if grown is not None else tex_box
    rot = random_rotation(rng)
    if spec.location == "perifissural" and normal is not None:
        rot = _frame_with_axis(np.asarray(normal, dtype=np.float64), rng)
        axes = np.array([0.45, 1.0, rng.uniform(0.75, 1.0)]) * radius
    else:
        e = np.sort(rng.uniform(0.8, 1.0, 2))
        axes = np.array([1.0, e[1], e[0]])
        axes = axes / ((axes[0] + axes[1]) / 2.0) * radius
    depth = _ellipsoid_depth(
        grid, box, center, rot, axes * (0.78 if spec.shape != "round" else 1.0)
    )
    if spec.shape == "lobulated":
        for _ in range(int(rng.integers(4, 7))):
            r_l = radius * rng.uniform(0.35, 0.55)
            d = rot @ (rng.normal(size=3) * [1.0, 1.0, 1.0])
            d /= np.linalg.norm(d)
            c_l = center + d * (radius - r_l) * rng.uniform(0.85, 1.0)
            lobe = _ellipsoid_depth(grid, box, c_l, rot, np.full(3, r_l))
            np.maximum(depth, lobe, out=depth)
    elif spec.shape == "spiculated":
        for _ in range(int(rng.integers(6, 15))):
            d = rng.normal(size=3)
            d /= np.linalg.norm(d)
            # Each spicule leaves the core (0.78 of the radius) as a strand about
            # SPICULE_BASE_MM + 0.2 * radius wide and narrows to SPICULE_TIP_MM at a tip
            # 1.2-1.9 radii plus SPICULE_MIN_LENGTH_MM from the centre, so that it shows on
            # a 1.2-1.4 mm pixel, 2.5 mm slice as a spiculated nodule does on CT; the
            # previous strands (0.16 * radius + 0.3 mm at the centre to 0.15 mm at the
            # tip, 1.2-1.9 radii out) were sub-pixel beyond the core of nodules under
            # about 16 mm and left them looking round.
            tip = center + d * (radius * rng.uniform(1.2, 1.9) + SPICULE_MIN_LENGTH_MM)
            base = center + d * radius * 0.5
            r_base = (SPICULE_BASE_MM + 0.2 * radius) / 2.0
            spic = segment_depth(grid, box, base, tip, r_base, SPICULE_TIP_MM / 2.0)
            np.maximum(depth, spic, out=depth)
    occ = soft_edge(depth, edge)
    core = np.zeros_like(occ)
    core_hu = float(rng.uniform(*SOLID_CORE_HU))
    if spec.kind == "part_solid":
        solid = spec.solid_part_mm or spec.diameter_mm * rng.uniform(0.25, 0.55)
        r_s = min(solid / 2.0, radius * 0.8)
        off = rng.normal(size=3)
        off *= (radius - r_s) * 0.4 * rng.uniform(0, 1) / np.linalg.norm(off)
        core = soft_edge(_ellipsoid_depth(grid, box, center + off, rot, np.full(3, r_s)), edge)
        core = np.minimum(core, occ)
    lo, hi = KIND_HU[spec.kind]
    mean_hu = rng.uniform(lo, hi)
    texture_sd = {"solid": 12.0, "part_solid": 45.0, "ground_glass": 45.0, "calcified": 80.0}
    tex_shape = tuple(s.stop - s.start for s in tex_box)
    tex = ndimage.gaussian_filter(rng.standard_normal(tex_shape).astype(np.float32), 1.0)
    tex *= np.float32(texture_sd[spec.kind] / max(float(tex.std()), 1e-3))
    if box != tex_box:  # spicules reach beyond the texture's box: repeat it out to them
        pad = [(t.start - b.start, b.stop - t.stop) for t, b in zip(tex_box, box, strict=True)]
        tex = np.pad(tex, pad, mode="wrap")
    hu = (np.float32(mean_hu) + tex).astype(np.float32)
    return NoduleDraw(box, occ, core, hu, core_hu)


def _frame_with_axis(axis: F64, rng: np.random.Generator) -> F64:
    """Rotation whose first column is ``axis`` (perifissural lesions lie flat on it)."""
    a = axis / np.linalg.norm(axis)
    helper = rng.normal(size=3)
    b = helper - a * (helper @ a)
    b /= np.linalg.norm(b)
    return np.c_[a, b, np.cross(a, b)]


def composite(hu: F32, draw: NoduleDraw, clip: F32 | None = None) -> tuple[F32, F32]:
    """Blend a drawn nodule into ``hu`` in place; returns (occupancy, core) after clipping.

    ``clip`` (0..1 over the box) keeps the lesion inside the lung, which flattens a
    juxtapleural nodule against the chest wall as it would be in a patient.
    """
    occ = draw.occupancy if clip is None else draw.occupancy * clip
    core = draw.core if clip is None else draw.core * clip
    view = hu[draw.box]
    view *= 1.0 - occ
    view += occ * draw.hu
    view *= 1.0 - core
    view += core * np.float32(draw.core_hu)
    return occ.astype(np.float32), core.astype(np.float32)
