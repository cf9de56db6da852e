"""Synthetic chest CT with nodules of every Lung-RADS kind and measured ground truth."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from countyread.domain import Volume
from countyread.uids import derive_uid
from training.phantoms.acquisition import KERNELS, apply_scanner, noise_sd, to_int16
from training.phantoms.chest_anatomy import (
    CHEST_LABELS,
    ChestShape,
    Warp,
    fissure_normal,
    lobe_at,
    render,
    sample_shape,
)
from training.phantoms.chest_tubes import draw_tubes
from training.phantoms.nodule_shapes import KINDS, SHAPES, Kind, NoduleSpec, Shape
from training.phantoms.nodules import (
    FissureSites,
    NoduleTruth,
    measure,
    place_nodules,
    sample_specs,
)
from training.phantoms.raster import Grid

logger = logging.getLogger(__name__)

THICKNESSES = (0.625, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)


@dataclass(frozen=True, slots=True)
class ChestCTConfig:
    """What to randomise and what to fix. ``None`` means "draw it from the seed".

    Sizes: ``matrix`` pixels square at ``pixel_spacing_mm`` over ``coverage_mm`` of z.
    ``n_nodules=0`` makes a nodule-free case; ``nodule_specs`` places exact nodules.
    """

    matrix: int = 512
    pixel_spacing_mm: float | None = None  # drawn from 0.6..0.9
    slice_thickness_mm: float | None = None  # drawn from THICKNESSES
    coverage_mm: float = 310.0
    n_nodules: int | None = None  # drawn from 0..6
    nodule_size_mm: tuple[float, float] = (3.0, 30.0)
    mass_fraction: float = 0.05  # share of lesions 30..size max when size max > 30
    kinds: tuple[Kind, ...] = KINDS
    shapes: tuple[Shape, ...] = SHAPES
    location_weights: tuple[float, float, float] = (0.6, 0.25, 0.15)
    nodule_specs: tuple[NoduleSpec, ...] | None = None
    kernel: Literal["soft", "standard", "lung", "sharp"] | None = None
    mas: float | None = None  # tube current-time product; drawn from 20..250 (low dose too)
    hu_offset_max: float = 15.0
    patient_size: tuple[float, float] = (0.88, 1.12)
    deformation_mm: float = 4.0
    vessel_points_per_tree: int = 3000
    apex_margin_mm: tuple[float, float] = (12.0, 25.0)  # top of the volume to the lung apex

    def __post_init__(self) -> None:
        if self.matrix < 64:
            raise ValueError(f"matrix must be >= 64, got {self.matrix}")
        lo, hi = self.nodule_size_mm
        if not 1.0 <= lo <= hi <= 60.0:
            raise ValueError(f"nodule_size_mm must satisfy 1 <= lo <= hi <= 60, got {lo, hi}")
        if self.n_nodules is not None and self.n_nodules < 0:
            raise ValueError("n_nodules must be >= 0")

    @classmethod
    def small(cls, **overrides: object) -> ChestCTConfig:
        """Training / test size: 256 x 256 at 1.4 mm, 2.5 mm slices unless overridden."""
        base: dict[str, object] = {
            "matrix": 256,
            "pixel_spacing_mm": 1.4,
            "slice_thickness_mm": 2.5,
            "vessel_points_per_tree": 2000,
        }
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class CTAcquisition:
    """The randomised acquisition and patient parameters of one case."""

    pixel_spacing_mm: float
    slice_thickness_mm: float
    kernel: str
    mas: float
    kvp: int
    noise_sd_hu: float
    hu_offset: float
    patient_size: float
    inhale: float


@dataclass(frozen=True, slots=True)
class CTPhantom:
    """A chest CT case: int16 HU volume (LPS affine), labels, nodule instances and truth."""

    seed: int
    volume: Volume
    labels: npt.NDArray[np.uint8]
    instance_mask: npt.NDArray[np.uint16]
    nodules: tuple[NoduleTruth, ...]
    acquisition: CTAcquisition
    label_names: dict[int, str] = field(default_factory=lambda: dict(CHEST_LABELS))
    modality: str = "CT"
    body_part: str = "CHEST"
    # The drawn chest and its warp: ground truth for anything anatomical, e.g. the lobe of
    # any point (``chest_anatomy.lobe_at``).
    anatomy: tuple[ChestShape, Warp] | None = None


def _acquisition(rng: np.random.Generator, cfg: ChestCTConfig) -> CTAcquisition:
    kernel = cfg.kernel or str(rng.choice(list(KERNELS)))
    mas = cfg.mas or float(np.exp(rng.uniform(np.log(20), np.log(250))))
    size = float(rng.uniform(*cfg.patient_size))
    return CTAcquisition(
        pixel_spacing_mm=cfg.pixel_spacing_mm or round(float(rng.uniform(0.6, 0.9)), 4),
        slice_thickness_mm=cfg.slice_thickness_mm or float(rng.choice(THICKNESSES)),
        kernel=kernel,
        mas=round(mas, 1),
        kvp=int(rng.choice([100, 110, 120, 120, 130])),
        noise_sd_hu=round(noise_sd(KERNELS[kernel], mas, size), 2),
        hu_offset=round(float(rng.uniform(-cfg.hu_offset_max, cfg.hu_offset_max)), 2),
        patient_size=round(size, 3),
        inhale=round(float(rng.uniform(-1, 1)), 3),
    )


def make_chest_ct(seed: int, config: ChestCTConfig | None = None) -> CTPhantom:
    """Make one chest CT phantom; the same seed and config give identical arrays."""
    cfg = config or ChestCTConfig()
    t0 = time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC7]))
    acq = _acquisition(rng, cfg)
    ps, thick = acq.pixel_spacing_mm, acq.slice_thickness_mm
    nz = max(8, round(cfg.coverage_mm / thick))
    half = ps * (cfg.matrix - 1) / 2.0
    origin = (
        -half + float(rng.uniform(-8, 8)),
        -half + float(rng.uniform(-5, 15)),
        -float(round(rng.uniform(80, 400), 1)),
    )
    out = Grid((nz, cfg.matrix, cfg.matrix), (thick, ps, ps), origin)
    # Anatomy is drawn on sub-slices <= ~1 mm and averaged: the slice sensitivity profile.
    ns = max(1, round(thick / 1.0))
    fine = Grid(
        (nz * ns, cfg.matrix, cfg.matrix),
        (thick / ns, ps, ps),
        (origin[0], origin[1], origin[2] - (ns - 1) / 2.0 * thick / ns),
    )
    z_top = origin[2] + (nz - 1) * thick
    shape = sample_shape(
        rng, z_top - float(rng.uniform(*cfg.apex_margin_mm)), acq.patient_size, acq.inhale
    )
    warp = Warp.sample(rng, cfg.deformation_mm)
    anat = render(shape, warp, fine)
    draw_tubes(rng, shape, warp, fine, anat, cfg.vessel_points_per_tree)

    fissures = _fissure_sites(anat.fissure_idx, anat.fissure_plane, fine, shape)
    if cfg.nodule_specs is not None:
        specs = cfg.nodule_specs
    else:
        count = int(rng.integers(0, 7)) if cfg.n_nodules is None else cfg.n_nodules
        specs = sample_specs(
            rng,
            count,
            cfg.nodule_size_mm,
            cfg.kinds,
            cfg.shapes,
            cfg.location_weights,
            cfg.mass_fraction,
        )
    placed = place_nodules(rng, fine, anat.hu, anat.region, specs, fissures)

    hu = anat.hu.reshape(nz, ns, *anat.hu.shape[1:]).mean(axis=1, dtype=np.float32)
    labels = np.ascontiguousarray(anat.label[ns // 2 :: ns])
    del anat
    hu = apply_scanner(rng, hu, ps, KERNELS[acq.kernel], acq.noise_sd_hu, acq.hu_offset)
    image = to_int16(hu)
    instance = np.zeros(image.shape, np.uint16)
    truths = [measure(i, p, fine, out, ns, image, instance) for i, p in enumerate(placed)]
    found = [t for t in truths if t is not None]
    lobes = lobe_at(shape, warp, np.array([t.center_lps for t in found]))
    nodules = tuple(dataclasses.replace(t, lobe=lobe) for t, lobe in zip(found, lobes, strict=True))
    labels[instance > 0] = 8

    series_uid = derive_uid("countyread-phantom", "ct", seed, "series")
    volume = Volume(
        image,
        out.affine,
        frame_of_reference_uid=derive_uid("countyread-phantom", "ct", seed, "for"),
        series_uid=series_uid,
        sop_instance_uids=tuple(derive_uid(series_uid, k) for k in range(nz)),
    )
    logger.info(
        "chest CT phantom made",
        extra={
            "seed": seed,
            "shape": image.shape,
            "nodules": len(nodules),
            "duration_ms": round((time.perf_counter() - t0) * 1000),
        },
    )
    return CTPhantom(seed, volume, labels, instance, nodules, acq, anatomy=(shape, warp))


def _fissure_sites(
    idx: list[np.ndarray], plane: list[np.ndarray], grid: Grid, shape: ChestShape
) -> FissureSites:
    if not idx:
        return FissureSites(np.zeros((0, 3)), np.zeros((0, 3)))
    k = np.concatenate(idx)
    p = np.concatenate(plane)
    normals = np.stack([fissure_normal(shape, i) for i in range(3)])
    return FissureSites(grid.to_lps(k), normals[p])
