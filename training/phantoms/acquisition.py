"""Scanner effects on a clean HU volume: reconstruction kernel (blur, edge enhancement,
noise texture), dose-dependent noise level and HU calibration offset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from training.phantoms.raster import F32, ordered_map


@dataclass(frozen=True, slots=True)
class Kernel:
    """A reconstruction kernel family, vendor-neutral (the DICOM writer names it per vendor).

    ``blur_mm`` is the Gaussian sigma of the in-plane point spread, ``enhance`` the
    unsharp-mask gain of sharp kernels (edge overshoot), ``grain_px`` the correlation
    length of the noise (soft kernels give blotchy, sharp kernels fine-grained noise),
    ``base_sd`` the noise (HU) of a standard patient at 100 mAs.
    """

    name: str
    blur_mm: float
    enhance: float
    grain_px: float
    base_sd: float


KERNELS: dict[str, Kernel] = {
    "soft": Kernel("soft", 0.85, 0.0, 1.6, 8.0),
    "standard": Kernel("standard", 0.65, 0.15, 1.2, 12.0),
    "lung": Kernel("lung", 0.45, 0.5, 0.8, 28.0),
    "sharp": Kernel("sharp", 0.35, 0.8, 0.6, 42.0),
}


def noise_sd(kernel: Kernel, mas: float, size: float) -> float:
    """Quantum noise scales with 1/sqrt(dose) and grows with patient attenuation."""
    return kernel.base_sd * float(np.sqrt(100.0 / mas)) * size**1.5


def apply_scanner(
    rng: np.random.Generator,
    hu: F32,
    pixel_mm: float,
    kernel: Kernel,
    sd: float,
    offset: float,
    slab: int = 8,
) -> F32:
    """Blur, sharpen and add textured noise slice by slice; returns ``hu`` (modified)."""
    sig = kernel.blur_mm / pixel_mm
    bank = _noise_bank(rng, hu.shape[1:], kernel.grain_px)
    # Every random draw happens here, in slice order, so threads cannot reorder them.
    picks = [_noise_pick(rng, bank) for _ in range(hu.shape[0])]

    def one(k0: int) -> None:
        v = hu[k0 : k0 + slab]
        blurred = ndimage.gaussian_filter(v, (0, sig, sig), mode="nearest", truncate=3.0)
        if kernel.enhance > 0:
            wide = ndimage.gaussian_filter(
                blurred, (0, 1.2 / pixel_mm, 1.2 / pixel_mm), mode="nearest", truncate=3.0
            )
            blurred += np.float32(kernel.enhance) * (blurred - wide)
        blurred += np.float32(offset)
        for j in range(blurred.shape[0]):
            blurred[j] += _noise_slice(bank, picks[k0 + j]) * np.float32(sd)
        hu[k0 : k0 + slab] = blurred

    for _ in ordered_map(one, range(0, hu.shape[0], slab)):
        pass
    return hu


def _noise_bank(rng: np.random.Generator, shape: tuple[int, ...], grain: float, n: int = 6) -> F32:
    """A few unit-variance textured noise images; slices draw shifted pairs of them.

    Filtering fresh noise for every slice dominated the phantom's run time; two
    independently rolled and flipped bank images summed give the same spectrum and
    no visible repetition.
    """
    n_img = rng.standard_normal((n, *shape), dtype=np.float32)
    n_img = ndimage.gaussian_filter(n_img, (0, grain, grain), mode="wrap")
    # Filtered back-projection suppresses the lowest frequencies (ramp filter).
    n_img -= np.float32(0.6) * ndimage.gaussian_filter(
        n_img, (0, 3 * grain, 3 * grain), mode="wrap"
    )
    n_img /= n_img.std(axis=(1, 2), keepdims=True)
    return n_img.astype(np.float32)


def _noise_pick(rng: np.random.Generator, bank: F32) -> tuple[int, ...]:
    i, j = rng.choice(len(bank), 2, replace=False)
    ny, nx = bank.shape[1], bank.shape[2]
    shifts = [int(rng.integers(m)) for m in (ny, nx, ny, nx)]
    return (int(i), int(j), *shifts, int(rng.integers(2)))


def _noise_slice(bank: F32, pick: tuple[int, ...]) -> F32:
    i, j, r1, c1, r2, c2, flip = pick
    a = np.roll(bank[i], (r1, c1), axis=(0, 1))
    b = np.roll(bank[j], (r2, c2), axis=(0, 1))
    if flip:
        b = b[::-1]
    return (a + b) * np.float32(1.0 / np.sqrt(2.0))


def to_int16(hu: F32) -> np.ndarray:
    """Round to stored CT numbers, clipped to -1024..3071 (overwrites ``hu`` to save memory)."""
    np.rint(hu, out=hu)
    np.clip(hu, -1024, 3071, out=hu)
    return hu.astype(np.int16)
