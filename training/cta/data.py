"""Training cases and patch sampling for the CTA vessel network."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

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


def make_case(seed: int) -> Case:
    """One phantom drawn directly at the network spacing, with randomised scanner traits."""
    rng = np.random.default_rng(seed + 7_000_000)
    cfg = SynthConfig(
        spacing=(SPACING_MM, SPACING_MM, SPACING_MM),
        n_stenoses=int(rng.integers(0, 4)),
        occlusion=bool(rng.random() < 0.3),
        noise_hu=float(rng.uniform(8, 25)),
        blur_mm=float(rng.uniform(0.3, 0.7)),
    )
    p = make_synthetic_cta(seed, cfg)
    assert p.bone_mask is not None
    return Case(normalise(p.volume.array), (p.labels > 0).astype(np.uint8), p.bone_mask)


def sample_patches(
    cases: list[Case], rng: np.random.Generator, n: int, size: int, positive_fraction: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``n`` patches: a share centred on vessel voxels, the rest on bone or anywhere."""
    xs = np.empty((n, 1, size, size, size), dtype=np.float32)
    ys = np.empty((n, 1, size, size, size), dtype=np.float32)
    for b in range(n):
        case = cases[int(rng.integers(len(cases)))]
        shape = np.array(case.image.shape)
        u = rng.random()
        pool = case.label if u < positive_fraction else (case.bone if u < 0.9 else None)
        if pool is not None:
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
