"""Synthetic head/neck CT angiography with named vessels, stenoses, occlusions and plaques."""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from countyread.domain import Volume
from countyread.uids import derive_uid
from training.phantoms.acquisition import KERNELS, apply_scanner, to_int16
from training.phantoms.cta_lesions import (
    OCCLUSION_SITES,
    SITES,
    Occlusion,
    Plaque,
    Stenosis,
    add_occlusion,
    add_stenosis,
    drawn_points,
    joint_caps,
    make_plaque,
)
from training.phantoms.cta_tissue import TISSUE_LABELS, TissueHU, render_tissue
from training.phantoms.cta_vessels import NAMED, VESSEL_IDS, Layout, Path3, build_paths
from training.phantoms.raster import F32, Grid, soft_edge

logger = logging.getLogger(__name__)

Phase = Literal["arterial", "noncontrast", "venous"]
THICKNESSES = (0.5, 0.625, 0.75, 0.8, 1.0, 1.25)


@dataclass(frozen=True, slots=True)
class CTAConfig:
    """CTA options; ``None`` draws the value from the seed."""

    matrix: int = 512
    pixel_spacing_mm: float | None = None  # drawn from 0.45..0.65
    slice_thickness_mm: float | None = None  # drawn from THICKNESSES
    coverage_mm: float = 330.0
    phase: Phase | None = None  # arterial for 80 % of seeds
    n_stenoses: int | None = None  # 0..2
    stenosis_percent: tuple[float, float] = (20.0, 99.0)
    n_occlusions: int | None = None  # 0 or 1
    n_plaques: int | None = None  # 0..4
    tortuosity_mm: float | None = None  # 0..6
    kernel: Literal["soft", "standard"] | None = None

    def __post_init__(self) -> None:
        lo, hi = self.stenosis_percent
        if not 1.0 <= lo <= hi <= 99.0:
            raise ValueError(f"stenosis_percent must satisfy 1 <= lo <= hi <= 99, got {lo, hi}")
        if self.coverage_mm < 200:
            raise ValueError(
                f"coverage_mm must be >= 200 (arch to circle of Willis), got {self.coverage_mm}"
            )

    @classmethod
    def small(cls, **overrides: object) -> CTAConfig:
        """Test / training size: 256 x 256 x 300 at 0.8 mm."""
        base: dict[str, object] = {
            "matrix": 256,
            "pixel_spacing_mm": 0.8,
            "slice_thickness_mm": 0.8,
            "coverage_mm": 240.0,
        }
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class VesselTruth:
    """A named vessel: centreline (N x 3 LPS mm) and lumen radius (mm) per point."""

    name: str
    label: int
    points_lps: npt.NDArray[np.float64]
    radius_mm: npt.NDArray[np.float64]
    occluded_from_index: int | None = None


@dataclass(frozen=True, slots=True)
class CTAAcquisition:
    pixel_spacing_mm: float
    slice_thickness_mm: float
    kernel: str
    kvp: int
    mas: float
    noise_sd_hu: float
    artery_hu: float
    vein_hu: float
    tortuosity_mm: float


@dataclass(frozen=True, slots=True)
class CTAPhantom:
    seed: int
    volume: Volume
    labels: npt.NDArray[np.uint8]  # tissue (TISSUE_LABELS)
    vessel_labels: npt.NDArray[np.uint8]  # VESSEL_IDS
    phase: Phase
    vessels: dict[str, VesselTruth]
    stenoses: tuple[Stenosis, ...]
    occlusions: tuple[Occlusion, ...]
    plaques: tuple[Plaque, ...]
    acquisition: CTAAcquisition
    label_names: dict[int, str] = field(default_factory=lambda: dict(TISSUE_LABELS))
    vessel_label_names: dict[int, str] = field(
        default_factory=lambda: {v: k for k, v in VESSEL_IDS.items()}
    )
    modality: str = "CTA"
    body_part: str = "HEADNECK"


def _phase_hu(rng: np.random.Generator, phase: str) -> tuple[float, float, float]:
    """(artery, vein, thyroid) HU: iodine in the arteries, the veins, or nowhere."""
    if phase == "arterial":
        return float(rng.uniform(250, 500)), float(rng.uniform(60, 140)), 180.0
    if phase == "venous":
        return float(rng.uniform(130, 170)), float(rng.uniform(180, 260)), 140.0
    return float(rng.uniform(35, 50)), float(rng.uniform(35, 50)), 95.0


def _lesions(
    rng: np.random.Generator, cfg: CTAConfig, paths: list[Path3]
) -> tuple[list[Path3], list[Stenosis], list[Occlusion], list[Plaque]]:
    by_name = {p.name: i for i, p in enumerate(paths)}
    n_st = int(rng.integers(0, 3)) if cfg.n_stenoses is None else cfg.n_stenoses
    n_oc = int(rng.uniform() < 0.2) if cfg.n_occlusions is None else cfg.n_occlusions
    n_pl = int(rng.integers(0, 5)) if cfg.n_plaques is None else cfg.n_plaques
    occ_names = [str(v) for v in rng.choice(list(OCCLUSION_SITES), n_oc, replace=False)]
    free = [n for n in SITES if n not in occ_names]
    weights = np.array([3.0 if n.startswith("ICA") else 1.0 for n in free])
    st_names = [
        str(v)
        for v in rng.choice(free, min(n_st, len(free)), replace=False, p=weights / weights.sum())
    ]
    stenoses, occlusions, plaques = [], [], []
    for name in st_names:
        pct = float(rng.uniform(*cfg.stenosis_percent))
        paths[by_name[name]], st = add_stenosis(
            rng, paths[by_name[name]], pct, float(rng.uniform(4.0, 15.0))
        )
        stenoses.append(st)
    for name in occ_names:
        paths[by_name[name]], oc = add_occlusion(rng, paths[by_name[name]])
        occlusions.append(oc)
    for _ in range(n_pl):
        name = str(rng.choice(["ICA_L", "ICA_R", "CCA_L", "CCA_R", "AORTA", "VA_L"]))
        if name not in occ_names:
            plaques.append(make_plaque(rng, paths[by_name[name]]))
    return paths, stenoses, occlusions, plaques


def _draw_vessels(
    grid: Grid, paths: list[Path3], plaques: list[Plaque], hu: F32, art_hu: float, vein_hu: float
) -> npt.NDArray[np.uint8]:
    edge = float(np.mean(grid.spacing[1:]))
    vlab = np.zeros(grid.shape, np.uint8)
    occluded = {p.name for p in paths if p.drawn_until is not None}
    for artery in (False, True):  # arteries drawn last: they win where they touch veins
        fieldv = np.zeros(grid.shape, np.uint8)
        for p in paths:
            if p.artery != artery or p.parent in occluded:
                continue
            n = len(p.points) if p.drawn_until is None else p.drawn_until
            idx = drawn_points(p.radius, n)
            caps = joint_caps(p.radius, idx, p.points)
            for k, (a, b) in enumerate(itertools.pairwise(idx)):
                got = _capsule_occupancy(
                    grid,
                    p.points[a],
                    p.points[b],
                    (float(p.radius[a]), float(p.radius[b])),
                    (float(caps[k]), float(caps[k + 1])),
                    edge,
                )
                if got is None:
                    continue
                sl, occ = got
                np.maximum(fieldv[sl], occ, out=fieldv[sl])
                vlab[sl][occ >= 128] = VESSEL_IDS[p.label]
        _blend(hu, fieldv, art_hu if artery else vein_hu)
    for pl in plaques:
        c = np.asarray(pl.center_lps)
        box = grid.box(c - pl.radius_mm - edge, c + pl.radius_mm + edge)
        if box is None:
            continue
        z, y, x = grid.box_coords(box)
        d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
        pocc = soft_edge((pl.radius_mm - d).astype(np.float32), edge)
        view = hu[box]
        view *= 1.0 - pocc
        view += pocc * np.float32(pl.hu)
        vlab[box][pocc >= 0.5] = VESSEL_IDS["PLAQUE"]
    return vlab


def _capsule_occupancy(
    grid: Grid,
    p0: npt.NDArray[np.float64],
    p1: npt.NDArray[np.float64],
    radii: tuple[float, float],
    caps: tuple[float, float],
    edge_mm: float,
) -> tuple[tuple[slice, slice, slice], npt.NDArray[np.uint8]] | None:
    """Soft occupancy (0..255) of a frustum from ``p0`` to ``p1`` whose ends are closed by
    spheres of the ``caps`` radii (see ``cta_lesions.joint_caps``); None if off-grid."""
    r0, r1 = radii
    m = max(r0, r1) + edge_mm
    sl = grid.box(np.minimum(p0, p1) - m, np.maximum(p0, p1) + m)
    if sl is None:
        return None
    z, y, x = grid.box_coords(sl)
    d = (p1 - p0).astype(np.float32)
    length2 = float(d @ d) or 1e-6
    px, py, pz = (x - np.float32(p0[0])), (y - np.float32(p0[1])), (z - np.float32(p0[2]))
    t_raw = (px * d[0] + py * d[1] + pz * d[2]) / np.float32(length2)
    t = np.clip(t_raw, 0.0, 1.0)
    dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
    radius = np.where(
        t_raw < 0.0,
        np.float32(caps[0]),
        np.where(t_raw > 1.0, np.float32(caps[1]), np.float32(r0) + t * np.float32(r1 - r0)),
    )
    occ = soft_edge((_ramp_radius(radius, edge_mm) - dist).astype(np.float32), edge_mm)
    return sl, (occ * 255.0 + 0.5).astype(np.uint8)


def _ramp_radius(radius: npt.NDArray[np.floating], edge_mm: float) -> npt.NDArray[np.float32]:
    """The radius at which a linear edge ramp of width w keeps a round lumen's area.

    Partial volume conserves contrast: a lumen of radius r adds pi r^2 x (lumen - tissue)
    to every section, however small it is. A ramp centred on r adds pi (r^2 + w^2 / 12)
    (the outer half of the ramp is wider than the inner), which doubles the contrast of a
    0.5 mm residual lumen. Centred on sqrt(r^2 - w^2 / 12) it adds pi r^2; below
    r = w / sqrt(3) the ramp no longer reaches 1 at the centre and the area-keeping
    radius is (3 w r^2)^(1/3) - w / 2.
    """
    r = np.asarray(radius, dtype=np.float32)
    w = np.float32(edge_mm)
    wide = np.sqrt(np.maximum(r * r - w * w / 12, 0.0))
    thin = np.cbrt(3 * w * r * r) - w / 2
    return np.where(r >= w / np.sqrt(np.float32(3.0)), wide, thin).astype(np.float32)


def _blend(hu: F32, fieldv: npt.NDArray[np.uint8], value: float) -> None:
    for k0 in range(0, hu.shape[0], 32):
        f = fieldv[k0 : k0 + 32]
        m = f > 0
        if m.any():
            o = f[m].astype(np.float32) / np.float32(255.0)
            h = hu[k0 : k0 + 32]
            h[m] = h[m] * (1.0 - o) + np.float32(value) * o


def make_head_neck_cta(seed: int, config: CTAConfig | None = None) -> CTAPhantom:
    """Make one head/neck CTA phantom; the same seed and config give identical arrays."""
    cfg = config or CTAConfig()
    t0 = time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC7A]))
    phase: Phase = cfg.phase or (
        "arterial" if rng.uniform() < 0.8 else ("venous" if rng.uniform() < 0.5 else "noncontrast")
    )
    ps = cfg.pixel_spacing_mm or round(float(rng.uniform(0.45, 0.65)), 4)
    thick = cfg.slice_thickness_mm or float(rng.choice(THICKNESSES))
    kernel = cfg.kernel or str(rng.choice(["soft", "standard"]))
    size = float(rng.uniform(0.92, 1.08))
    tort = float(rng.uniform(0, 6)) if cfg.tortuosity_mm is None else cfg.tortuosity_mm
    nz = max(8, round(cfg.coverage_mm / thick))
    half = ps * (cfg.matrix - 1) / 2.0
    origin = (
        -half + float(rng.uniform(-5, 5)),
        -half + 10.0 + float(rng.uniform(-5, 5)),
        -float(round(rng.uniform(100, 300), 1)),
    )
    grid = Grid((nz, cfg.matrix, cfg.matrix), (thick, ps, ps), origin)
    span = min(float(rng.uniform(225, 250)) * size, cfg.coverage_mm - 42.0)
    z_arch = origin[2] + 30.0
    lay = Layout(
        z_arch,
        span,
        z_arch + span * float(rng.uniform(0.52, 0.6)),
        z_arch + span * float(rng.uniform(0.52, 0.6)),
        size,
    )
    paths = build_paths(rng, lay, tort)
    paths, stenoses, occlusions, plaques = _lesions(rng, cfg, paths)
    inside = [
        np.all((k >= 0) & (k <= np.array(grid.shape) - 1))
        for k in (grid.to_index(p.center_lps)[0] for p in plaques)
    ]
    plaques = [p for p, keep in zip(plaques, inside, strict=True) if keep]
    art_hu, vein_hu, thyroid_hu = _phase_hu(rng, phase)
    tissue = TissueHU(
        fat=float(rng.uniform(-110, -85)),
        muscle=float(rng.uniform(40, 60)),
        brain=float(rng.uniform(30, 38)),
        cortex=float(rng.uniform(1100, 1600)),
        cancellous=float(rng.uniform(250, 400)),
        thyroid=thyroid_hu,
    )
    va = {p.name: p.points for p in paths if p.name in ("VA_L", "VA_R")}
    hu, labels = render_tissue(lay, grid, tissue, va)
    vessel_labels = _draw_vessels(grid, paths, plaques, hu, art_hu, vein_hu)
    # A lumen through bone (carotid canal, transverse foramen) is not bone.
    labels[(vessel_labels > 0) & (labels != 0)] = 1
    mas = float(rng.uniform(100, 300))
    sd = KERNELS[kernel].base_sd * float(np.sqrt(100.0 / mas)) * 0.9
    hu = apply_scanner(rng, hu, ps, KERNELS[kernel], sd, float(rng.uniform(-8, 8)))
    image = to_int16(hu)
    vessels = {
        p.name: VesselTruth(
            p.name, VESSEL_IDS[p.name], np.round(p.points, 3), np.round(p.radius, 3), p.drawn_until
        )
        for p in paths
        if p.name in NAMED
    }
    series_uid = derive_uid("countyread-phantom", "cta", seed, "series")
    volume = Volume(
        image,
        grid.affine,
        frame_of_reference_uid=derive_uid("countyread-phantom", "cta", seed, "for"),
        series_uid=series_uid,
        sop_instance_uids=tuple(derive_uid(series_uid, k) for k in range(nz)),
    )
    acq = CTAAcquisition(
        ps,
        thick,
        kernel,
        int(rng.choice([100, 120])),
        round(mas, 1),
        round(sd, 2),
        round(art_hu, 1),
        round(vein_hu, 1),
        round(tort, 2),
    )
    logger.info(
        "head/neck CTA phantom made",
        extra={
            "seed": seed,
            "shape": image.shape,
            "phase": phase,
            "stenoses": len(stenoses),
            "duration_ms": round((time.perf_counter() - t0) * 1000),
        },
    )
    return CTAPhantom(
        seed,
        volume,
        labels,
        vessel_labels,
        phase,
        vessels,
        tuple(stenoses),
        tuple(occlusions),
        tuple(plaques),
        acq,
    )
