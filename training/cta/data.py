"""Training cases and patch sampling for the CTA vessel network."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from training.cta.model import HU_CENTER, HU_SCALE, HU_WINDOW, SPACING_MM
from training.cta.synth import SynthConfig, make_synthetic_cta


@dataclass(frozen=True, slots=True)
class Case:
    image: npt.NDArray[np.float32]  # normalised network input at SPACING_MM
    label: npt.NDArray[np.uint8]  # 1 inside a vessel lumen
    bone: npt.NDArray[np.bool_]


def normalise(hu: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
    x = np.clip(hu.astype(np.float32), *HU_WINDOW)
    return ((x - HU_CENTER) / HU_SCALE).astype(np.float32)


#: ``make_case(resampled=True)``: slice and in-plane spacings drawn from these ranges (mm)
SLICE_MM = (0.6, 1.25)
PIXEL_MM = (0.5, 0.9)


def make_case(seed: int, resampled: bool = False) -> Case:
    """One phantom with randomised scanner traits.

    By default drawn directly at the network spacing. ``resampled``: drawn at a random
    acquisition spacing and resampled onto the 1 mm work grid the way the pipeline
    resamples every series (``inference.cta.grid``), with the truth resampled alike and
    cut at 0.5, which is how the held-out and project cases are scored: a lumen edge
    drawn at 1 mm directly is a sharper, differently placed edge than the one the
    network meets at run time (1.2.0 scores about 0.014 Dice lower on the same phantoms
    drawn at 1 x 0.8 x 0.8 mm and resampled than drawn at 1 mm).
    """
    from inference.cta.grid import resample, work_grid

    rng = np.random.default_rng(seed + 7_000_000)
    n_stenoses = int(rng.integers(0, 4))
    occlusion = bool(rng.random() < 0.3)
    noise_hu = float(rng.uniform(8, 25))
    blur_mm = float(rng.uniform(0.3, 0.7))
    spacing = (SPACING_MM, SPACING_MM, SPACING_MM)
    if resampled:
        pixel = float(rng.uniform(*PIXEL_MM))
        spacing = (float(rng.uniform(*SLICE_MM)), pixel, pixel)
    cfg = SynthConfig(
        spacing=spacing,
        n_stenoses=n_stenoses,
        occlusion=occlusion,
        noise_hu=noise_hu,
        blur_mm=blur_mm,
    )
    p = make_synthetic_cta(seed, cfg)
    assert p.bone_mask is not None
    if not resampled:
        return Case(normalise(p.volume.array), (p.labels > 0).astype(np.uint8), p.bone_mask)
    grid = work_grid(p.volume, SPACING_MM)
    label = resample(p.volume.with_array((p.labels > 0).astype(np.float32)), grid) > 0.5
    bone = resample(p.volume.with_array(p.bone_mask.astype(np.float32)), grid) > 0.5
    return Case(normalise(resample(p.volume, grid)), label.astype(np.uint8), bone & ~label)


@dataclass(frozen=True, slots=True)
class PositivePool:
    """Vessel voxels (flat indices on the 2-voxel subgrid) and the odds of centring on each.

    Uniform odds per voxel spend most positive patches on the aorta and carotids (the
    aorta alone is 60 % of a project phantom's lumen); odds ~ 1 / r**power per voxel of
    a vessel of radius r make each millimetre of centreline about as likely as any other
    for power 2 (a section holds ~ pi r**2 voxels), so vertebral arteries in their
    foramina and the circle of Willis come up about as often as the arch. The radius is
    the deepest distance-transform value within 2 voxels, which under-reads it at the
    wall of a vessel wider than that: thick vessels keep somewhat higher odds.
    """

    index: npt.NDArray[np.int64]
    cumulative: npt.NDArray[np.float64]


def positive_pool(label: npt.NDArray[np.uint8], power: float) -> PositivePool:
    sub = label[::2, ::2, ::2] > 0
    idx = np.flatnonzero(sub)
    if power <= 0 or not idx.size:
        w = np.ones(idx.size)
    else:
        # local vessel radius: the deepest distance-transform value within 2 voxels
        depth = ndimage.distance_transform_edt(label > 0)
        radius = ndimage.maximum_filter(depth, size=5)[::2, ::2, ::2].ravel()[idx]
        w = np.maximum(radius, 0.5) ** -power
    c = np.cumsum(w)
    return PositivePool(idx.astype(np.int64), c / c[-1] if c.size else c)


def sample_patches(
    cases: list[Case],
    rng: np.random.Generator,
    n: int,
    size: int,
    positive_fraction: float,
    pools: list[PositivePool] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``n`` patches: a share centred on vessel voxels, the rest on bone or anywhere.

    ``pools`` (one per case, :func:`positive_pool`) weight the vessel centres; without
    them every vessel voxel is equally likely.
    """
    xs = np.empty((n, 1, size, size, size), dtype=np.float32)
    ys = np.empty((n, 1, size, size, size), dtype=np.float32)
    for b in range(n):
        ci = int(rng.integers(len(cases)))
        case = cases[ci]
        shape = np.array(case.image.shape)
        u = rng.random()
        pool = case.label if u < positive_fraction else (case.bone if u < 0.9 else None)
        if pools is not None and u < positive_fraction and pools[ci].index.size:
            pp = pools[ci]
            k = int(
                pp.index[min(int(np.searchsorted(pp.cumulative, rng.random())), pp.index.size - 1)]
            )
            c = np.array(np.unravel_index(k, case.label[::2, ::2, ::2].shape)) * 2
        elif pool is not None:
            idx = np.flatnonzero(pool[::2, ::2, ::2])
            k = int(idx[rng.integers(len(idx))])
            c = np.array(np.unravel_index(k, pool[::2, ::2, ::2].shape)) * 2
        else:
            c = rng.integers(0, shape)
        c = c + rng.integers(-size // 4, size // 4 + 1, 3)
        lo = np.clip(c - size // 2, 0, shape - size)
        sl = tuple(slice(int(a), int(a) + size) for a in lo)
        x, y = case.image[sl], case.label[sl]
        if rng.random() < 0.5:  # left-right mirror (column axis)
            x, y = x[:, :, ::-1], y[:, :, ::-1]
        xs[b, 0] = x
        ys[b, 0] = y
    return xs, ys
