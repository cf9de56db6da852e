"""Training samples for the DR nodule model: phantom -> the service's own preparation -> targets.

Images go through exactly the functions the service uses (``inference.dr.image`` and
``inference.dr.detect``), so what the network sees in training is what it sees in
production. Targets follow CenterNet: a Gaussian per nodule centre on the stride-4 grid
(peak 1 at the centre cell) and the log diameter (input pixels) around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.dr.detect import INPUT_SIZE, STRIDE, letterbox
from inference.dr.image import PixelGeometry, prepare_values
from training.dr.synth import SynthChest, SynthConfig, SynthNodule, make_synth_chest

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Sample:
    """One network input with its truth in input pixels: (row, col, diameter_px, diameter_mm)."""

    image: F32  # (INPUT_SIZE, INPUT_SIZE)
    nodules: tuple[tuple[float, float, float, float], ...]
    # nodules in the phantom too faint to show on the film (training.phantoms.dr
    # ``visible``): neither a target nor a false positive when marked
    hidden: tuple[tuple[float, float, float, float], ...] = ()


def sample_from_chest(chest: SynthChest, knee: float | None = None) -> Sample:
    """Prepare a synthetic MONOCHROME2 radiograph like a stored file and frame it
    (``knee``: ``inference.dr.image.normalise``)."""
    values = chest.image.astype(np.float32)
    geo = PixelGeometry((chest.spacing_mm, chest.spacing_mm), "PixelSpacing")
    radiograph = prepare_values(values, 1, values.shape, geo, knee=knee)
    x, box = letterbox(radiograph.pixels, INPUT_SIZE)
    nodules = []
    for n in chest.nodules:
        working = np.asarray(n.center_rc) - np.asarray(radiograph.crop)
        r, c = box.to_input(working)[0]
        nodules.append((float(r), float(c), n.diameter_px * box.scale, n.diameter_mm))
    return Sample(x, tuple(nodules))


def synth_sample(seed: int, config: SynthConfig | None = None, knee: float | None = None) -> Sample:
    return sample_from_chest(make_synth_chest(seed, config), knee)


def _chest_path(cache: Path, seed: int) -> Path:
    return cache / f"{seed}.npz"


def cached_chest(seed: int, cache: Path | None, config: SynthConfig | None = None) -> SynthChest:
    """The analytic phantom of a seed as held-out and calibration sets draw it (default
    ``SynthConfig``, or ``config``: one cache per config), kept under ``cache`` once drawn
    (about 0.4 s each) so that preparations and models can be compared without drawing it
    again."""
    path = _chest_path(cache, seed) if cache is not None else None
    if path is not None and path.is_file():
        with np.load(path) as z:
            rows = z["nodules"].reshape(-1, 4)
            nodules = tuple(
                SynthNodule((float(r), float(c)), float(mm), float(px)) for r, c, mm, px in rows
            )
            return SynthChest(z["image"], float(z["spacing_mm"]), str(z["view"]), nodules)
    chest = make_synth_chest(seed, config)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [(*n.center_rc, n.diameter_mm, n.diameter_px) for n in chest.nodules]
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp,
            image=chest.image,
            spacing_mm=np.float64(chest.spacing_mm),
            view=np.str_(chest.view),
            nodules=np.asarray(rows, np.float64).reshape(-1, 4),
        )
        tmp.replace(path)
    return chest


def targets(sample: Sample, size: int = INPUT_SIZE) -> tuple[F32, F32, F32]:
    """Heatmap, log-diameter and size-loss weight maps at stride ``STRIDE``."""
    g = size // STRIDE
    heat = np.zeros((g, g), dtype=np.float32)
    logd = np.zeros((g, g), dtype=np.float32)
    weight = np.zeros((g, g), dtype=np.float32)
    yy, xx = np.mgrid[0:g, 0:g].astype(np.float32)
    rows = [(n, True) for n in sample.nodules] + [(n, False) for n in sample.hidden]
    for (r, c, d, _), shown in rows:
        cr = round((r - (STRIDE - 1) / 2) / STRIDE)
        cc = round((c - (STRIDE - 1) / 2) / STRIDE)
        if not (0 <= cr < g and 0 <= cc < g):
            continue
        sigma = max(d / STRIDE / 4.0, 0.7)
        blob = np.exp(-((yy - cr) ** 2 + (xx - cc) ** 2) / (2 * sigma**2)).astype(np.float32)
        if not shown:  # a soft target without a peak: the focal loss neither rewards nor punishes
            heat = np.maximum(heat, np.float32(0.99) * blob)
            continue
        heat = np.maximum(heat, blob)
        heat[cr, cc] = 1.0
        near = blob > 0.3
        logd[near] = np.log(d)
        weight[near] = np.maximum(weight[near], blob[near])
    return heat, logd, weight


def augment(image: F32, rng: np.random.Generator) -> F32:
    """Display-curve, sharpness, grid-line, shutter and noise jitter (geometry: ``jitter``)."""
    out = np.clip(image, 0.0, 1.0) ** rng.uniform(0.7, 1.4)
    out = out * rng.uniform(0.85, 1.1) + rng.uniform(-0.05, 0.05)
    u = rng.random()
    if u < 0.25:  # softer detector / heavier resampling
        out = ndimage.gaussian_filter(out, rng.uniform(0.4, 1.0))
    elif u < 0.5:  # stronger edge enhancement than the phantoms' own
        out = out + rng.uniform(0.2, 0.8) * (out - ndimage.gaussian_filter(out, 2.0))
    if rng.random() < 0.2:  # stationary anti-scatter grid lines, aliased to a few pixels
        axis = int(rng.integers(2))
        period = rng.uniform(2.2, 6.0)
        lines = np.sin(2 * np.pi * np.arange(out.shape[axis]) / period) * rng.uniform(0.005, 0.03)
        out = out + (lines[:, None] if axis == 0 else lines[None, :])
    if rng.random() < 0.15:  # an uncropped bright shutter band along one edge
        w = int(rng.integers(3, 20))
        side = int(rng.integers(4))
        edges = [np.s_[:w, :], np.s_[-w:, :], np.s_[:, :w], np.s_[:, -w:]]
        out[edges[side]] = rng.uniform(0.85, 1.0)
    if rng.random() < 0.5:
        out = out + rng.normal(0, rng.uniform(0.0, 0.03), out.shape)
    return np.asarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


def jitter(sample: Sample, rng: np.random.Generator) -> Sample:
    """Rotate (+-8 deg), scale (0.85-1.15) and shift (+-12 px) image and truth together."""
    size = sample.image.shape[0]
    angle = np.deg2rad(rng.uniform(-8.0, 8.0))
    scale = rng.uniform(0.85, 1.15)
    shift = rng.uniform(-12.0, 12.0, 2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale
    centre = np.full(2, (size - 1) / 2.0)
    inv = np.linalg.inv(rot)  # output pixel -> input pixel, as affine_transform wants
    offset = centre - inv @ (centre + shift)
    image = ndimage.affine_transform(sample.image, inv, offset, order=1, cval=0.0)

    def move(
        rows: tuple[tuple[float, float, float, float], ...],
    ) -> tuple[tuple[float, float, float, float], ...]:
        out = []
        for r, c, d, mm in rows:
            nr, nc = rot @ (np.array([r, c]) - centre) + centre + shift
            if 0 <= nr < size and 0 <= nc < size:
                out.append((float(nr), float(nc), d * scale, mm))
        return tuple(out)

    return Sample(image.astype(np.float32), move(sample.nodules), move(sample.hidden))
