"""Placing nodules in lungs (phantom or real CT) and measuring their ground truth."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from countyread.domain import Volume
from countyread.errors import InvalidInputError
from training.phantoms.measure import axial_size, centroid_index
from training.phantoms.nodule_shapes import (
    KINDS,
    SHAPES,
    Kind,
    Location,
    NoduleDraw,
    NoduleSpec,
    Shape,
    composite,
    draw_nodule,
)
from training.phantoms.raster import F32, F64, U8, Grid

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NoduleTruth:
    """Ground truth of one nodule, measured from its rasterised mask (LPS mm)."""

    index: int
    center_lps: tuple[float, float, float]
    kind: Kind
    shape: Shape
    location: Location
    side: str
    long_axis_mm: float
    short_axis_mm: float
    mean_diameter_mm: float
    solid_part_mm: float | None
    volume_mm3: float
    mean_hu: float
    lobe: str | None = None  # set where the phantom knows its fissures (chest phantoms)

    @property
    def is_mass(self) -> bool:
        """Lung-RADS calls lesions over 30 mm masses."""
        return self.mean_diameter_mm > 30.0


@dataclass(frozen=True, slots=True)
class FissureSites:
    """Sample points on the fissures (LPS mm) with the unit normal of each."""

    points: F64
    normals: F64


@dataclass(frozen=True, slots=True)
class Placed:
    """A nodule composited into the fine grid, before slice averaging."""

    spec: NoduleSpec
    draw: NoduleDraw
    occupancy: F32
    core: F32
    location: Location
    side: str


def sample_specs(
    rng: np.random.Generator,
    count: int,
    size_range: tuple[float, float],
    kinds: Sequence[Kind] = KINDS,
    shapes: Sequence[Shape] = SHAPES,
    location_weights: tuple[float, float, float] = (0.6, 0.25, 0.15),
    mass_fraction: float = 0.05,
) -> tuple[NoduleSpec, ...]:
    """Draw ``count`` specs: log-uniform sizes, kinds and shapes mixed evenly."""
    lo, hi = size_range
    specs = []
    for _ in range(count):
        if hi > 30 and rng.uniform() < mass_fraction:
            d = rng.uniform(30.0, hi)
        else:
            d = float(np.exp(rng.uniform(np.log(lo), np.log(min(hi, 30.0)))))
        kind: Kind = kinds[int(rng.integers(len(kinds)))]
        shape: Shape = shapes[int(rng.integers(len(shapes)))]
        w = np.asarray(location_weights, dtype=float)
        loc: Location = ("lung", "juxtapleural", "perifissural")[int(rng.choice(3, p=w / w.sum()))]
        if kind == "calcified" or d > 30:
            shape = "round" if kind == "calcified" else shape
        if loc == "perifissural":
            shape = "round"
            d = min(d, 12.0)
        specs.append(NoduleSpec(diameter_mm=round(d, 1), kind=kind, shape=shape, location=loc))
    return tuple(specs)


class _Sites:
    """Candidate centres from a coarse distance-to-pleura map of the lung region."""

    def __init__(self, grid: Grid, region: U8, fissures: FissureSites | None) -> None:
        self.grid, self.region, self.fissures = grid, region, fissures
        dz, dy, dx = grid.spacing
        self.stride = (max(1, round(3.0 / dz)), max(1, round(3.0 / dy)), max(1, round(3.0 / dx)))
        sz, sy, sx = self.stride
        self.side_coarse = region[::sz, ::sy, ::sx]
        coarse = self.side_coarse > 0
        self.step = (sz * dz, sy * dy, sx * dx)
        self.edt = ndimage.distance_transform_edt(coarse, sampling=self.step).astype(np.float32)

    def coarse_lps(self, idx: npt.NDArray[np.int64]) -> F64:
        sz, sy, sx = self.stride
        return self.grid.to_lps(idx * np.array([sz, sy, sx]))

    def side_at(self, p: F64) -> int:
        k = np.round(self.grid.to_index(p)[0]).astype(int)
        if np.any(k < 0) or np.any(k >= self.region.shape):
            return 0
        return int(self.region[tuple(k)])

    def pick(self, rng: np.random.Generator, lo: float, hi: float, side: int) -> F64 | None:
        ok = (self.edt >= lo) & (self.edt <= hi)
        if side:
            ok &= self.side_coarse == side
        cand = np.argwhere(ok)
        if len(cand) == 0:
            return None
        c = cand[int(rng.integers(len(cand)))]
        jitter = rng.uniform(-0.5, 0.5, 3) * np.array(self.stride)
        return self.grid.to_lps(c * np.array(self.stride) + jitter)[0]

    def inward_normal(self, p: F64) -> F64:
        sz, sy, sx = self.stride
        k = np.clip(
            np.round(self.grid.to_index(p)[0] / [sz, sy, sx]).astype(int),
            1,
            np.array(self.edt.shape) - 2,
        )
        g = np.array(
            [
                self.edt[k[0] + 1, k[1], k[2]] - self.edt[k[0] - 1, k[1], k[2]],
                self.edt[k[0], k[1] + 1, k[2]] - self.edt[k[0], k[1] - 1, k[2]],
                self.edt[k[0], k[1], k[2] + 1] - self.edt[k[0], k[1], k[2] - 1],
            ]
        ) / (2 * np.array(self.step))
        v = np.array([g[2], g[1], g[0]])  # (z, y, x) gradient -> LPS vector
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else np.array([1.0, 0.0, 0.0])


def _propose(
    rng: np.random.Generator, spec: NoduleSpec, sites: _Sites, side: int
) -> tuple[F64, F64 | None] | None:
    r = spec.diameter_mm / 2.0 * (1.6 if spec.shape == "spiculated" else 1.0)
    if spec.center_lps is not None:
        return np.asarray(spec.center_lps, dtype=np.float64), None
    if (
        spec.location == "perifissural"
        and sites.fissures is not None
        and len(sites.fissures.points)
    ):
        i = int(rng.integers(len(sites.fissures.points)))
        n = sites.fissures.normals[i]
        c = sites.fissures.points[i] + n * rng.choice([-1.0, 1.0]) * 0.45 * r * 0.7
        return c, n
    if spec.location == "juxtapleural":
        step = max(sites.step)
        start = sites.pick(rng, step * 0.5, step * 2.5, side)
        if start is None:
            return None
        n = sites.inward_normal(start)
        for t in np.arange(0.0, 40.0, 0.5):
            if sites.side_at(start - n * t) == 0:
                return start - n * t + n * (0.8 * r), None
        return None
    deep = sites.pick(rng, r + 3.0, 1e9, side)
    if deep is None:  # big mass in a small lung: take the deepest spot available
        k = np.unravel_index(int(np.argmax(sites.edt)), sites.edt.shape)
        deep = sites.coarse_lps(np.array([k]))[0]
    return deep, None


def place_nodules(
    rng: np.random.Generator,
    grid: Grid,
    hu: F32,
    region: U8,
    specs: Sequence[NoduleSpec],
    fissures: FissureSites | None = None,
) -> list[Placed]:
    """Composite ``specs`` into ``hu`` (in place) inside ``region`` (1 right, 2 left lung)."""
    sites = _Sites(grid, region, fissures)
    placed: list[Placed] = []
    centers: list[tuple[F64, float]] = []
    for spec in specs:
        side = {"right": 1, "left": 2, None: 0}[spec.side]
        reach = spec.diameter_mm / 2.0 * (1.9 if spec.shape == "spiculated" else 1.1)
        for attempt in range(40):
            prop = _propose(rng, spec, sites, side)
            if prop is None:
                continue
            center, normal = prop
            if any(np.linalg.norm(center - c) < reach + r + 4.0 for c, r in centers):
                continue
            at = sites.side_at(center)
            if at == 0 or (side and at != side):
                continue
            draw = draw_nodule(rng, grid, spec, center, normal)
            if draw is None:
                continue
            inside = (region[draw.box] > 0).astype(np.float32)
            lost = float((draw.occupancy * (1.0 - inside)).sum())
            total = float(draw.occupancy.sum())
            touches = lost > 0.02 * total
            relaxed = attempt >= 30 or spec.center_lps is not None
            if spec.location == "juxtapleural" and not touches and not relaxed:
                continue
            if spec.location != "juxtapleural" and touches and not relaxed:
                continue
            occ, core = composite(hu, draw, inside)
            location: Location = (
                "juxtapleural" if touches else ("perifissural" if normal is not None else "lung")
            )
            placed.append(Placed(spec, draw, occ, core, location, "right" if at == 1 else "left"))
            centers.append((center, reach))
            break
        else:
            logger.warning(
                "nodule could not be placed",
                extra={"diameter_mm": spec.diameter_mm, "location": spec.location},
            )
    return placed


def reduce_box(
    box: tuple[slice, slice, slice], occ: F32, ns: int, nz_out: int
) -> tuple[tuple[slice, slice, slice], F32]:
    """Average a fine-grid local array over groups of ``ns`` sub-slices (one output slice)."""
    z0, z1 = box[0].start, box[0].stop
    a, b = z0 // ns, -(-z1 // ns)
    pad = np.zeros((b * ns - a * ns, *occ.shape[1:]), dtype=np.float32)
    pad[z0 - a * ns : z1 - a * ns] = occ
    out = pad.reshape(b - a, ns, *occ.shape[1:]).mean(axis=1)
    b = min(b, nz_out)
    return (slice(a, b), box[1], box[2]), out[: b - a]


def measure(
    index: int,
    placed: Placed,
    fine: Grid,
    out: Grid,
    ns: int,
    image: npt.NDArray[np.int16],
    instance: npt.NDArray[np.uint16],
) -> NoduleTruth | None:
    """Truth of one placed nodule on the output grid; writes its id into ``instance``."""
    box, occ = reduce_box(placed.draw.box, placed.occupancy, ns, out.shape[0])
    peak = float(occ.max()) if occ.size else 0.0
    if peak <= 0.05:
        return None
    mask = (occ >= 0.5 * peak) & (instance[box] == 0)
    if not mask.any():
        return None
    instance[box][mask] = index + 1
    dz, dy, dx = out.spacing
    size = axial_size(mask, dy, dx)
    solid = None
    if placed.spec.kind == "part_solid":
        _, core = reduce_box(placed.draw.box, placed.core, ns, out.shape[0])
        cpeak = float(core.max())
        solid = axial_size(core >= 0.5 * cpeak, dy, dx).mean_diameter_mm if cpeak > 0.05 else 0.0
    local = centroid_index(placed.occupancy)
    start = np.array([s.start for s in placed.draw.box], dtype=np.float64)
    center = fine.to_lps(local + start)[0]
    return NoduleTruth(
        index=index,
        center_lps=(
            round(float(center[0]), 2),
            round(float(center[1]), 2),
            round(float(center[2]), 2),
        ),
        kind=placed.spec.kind,
        shape=placed.spec.shape,
        location=placed.location,
        side=placed.side,
        long_axis_mm=size.long_axis_mm,
        short_axis_mm=size.short_axis_mm,
        mean_diameter_mm=size.mean_diameter_mm,
        solid_part_mm=solid,
        volume_mm3=round(float(mask.sum()) * dz * dy * dx, 1),
        mean_hu=round(float(image[box][mask].mean()), 1),
    )


def insert_nodules(
    volume: Volume,
    lung_mask: npt.NDArray[np.bool_],
    specs: Sequence[NoduleSpec],
    seed: int,
) -> tuple[Volume, npt.NDArray[np.uint16], tuple[NoduleTruth, ...]]:
    """Insert synthetic nodules into a real CT's lungs, with noise matched to the image.

    The volume must be axial and axis-aligned (the common case for chest CT); slices may
    run either way along z. ``lung_mask`` is a boolean array of the volume's shape.
    """
    if lung_mask.shape != volume.shape:
        raise InvalidInputError("lung_mask must have the volume's shape")
    m = volume.affine[:3, :3]
    if not np.allclose(m, np.diag(np.diag(m)), atol=1e-3):
        raise InvalidInputError("insert_nodules needs an axis-aligned axial volume")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1A5E]))
    flips = tuple(ax for ax, s in zip((2, 1, 0), np.diag(m), strict=True) if s < 0)
    arr = np.flip(volume.array, flips).astype(np.float32)
    lungs = np.flip(lung_mask, flips)
    spacing = tuple(abs(float(s)) for s in np.diag(m)[::-1])
    corner = volume.index_to_lps([0, 0, 0])
    far = volume.index_to_lps(np.array(volume.shape, dtype=float) - 1)
    origin = tuple(float(min(corner[i], far[i])) for i in range(3))
    grid = Grid(
        volume.shape, (spacing[0], spacing[1], spacing[2]), (origin[0], origin[1], origin[2])
    )
    xs = grid.axis(2)
    mid = float(np.median(np.nonzero(lungs.any(axis=(0, 1)))[0])) if lungs.any() else 0.0
    region = np.where(lungs, np.where(xs[None, None, :] < grid.axis(2)[int(mid)], 1, 2), 0)
    region = region.astype(np.uint8)
    before = arr.copy()
    placed = place_nodules(rng, grid, arr, region, specs)
    noise_sd = _noise_sd(before, lungs)
    for p in placed:
        noise = ndimage.gaussian_filter(
            rng.standard_normal(p.occupancy.shape).astype(np.float32), 0.7
        )
        noise *= np.float32(noise_sd / max(float(noise.std()), 1e-3))
        arr[p.draw.box] += noise * p.occupancy
    image = np.clip(np.rint(arr), -1024, 3071).astype(volume.array.dtype)
    instance = np.zeros(volume.shape, dtype=np.uint16)
    truths = [
        measure(i, p, grid, grid, 1, image.astype(np.int16), instance) for i, p in enumerate(placed)
    ]
    out = volume.with_array(np.flip(image, flips).copy())
    return out, np.flip(instance, flips).copy(), tuple(t for t in truths if t is not None)


def _noise_sd(hu: F32, lungs: npt.NDArray[np.bool_]) -> float:
    """Image noise estimated from pixel-to-pixel differences inside the lungs."""
    diff = np.diff(hu, axis=2)[lungs[:, :, 1:] & lungs[:, :, :-1]]
    if diff.size < 100:
        return 20.0
    mad = float(np.median(np.abs(diff - np.median(diff))))
    return 1.4826 * mad / np.sqrt(2.0)
