"""Training samples for the DR nodule model: phantom -> the service's own preparation -> targets.

Images go through exactly the functions the service uses (``inference.dr.image`` and
``inference.dr.detect``), so what the network sees in training is what it sees in
production. Targets follow CenterNet: a Gaussian per nodule centre on the stride-4 grid
(peak 1 at the centre cell) and the log diameter (input pixels) around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.dr.detect import INPUT_SIZE, STRIDE, letterbox
from inference.dr.image import PixelGeometry, prepare_values
from training.dr.synth import SynthChest, SynthConfig, make_synth_chest

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Sample:
    """One network input with its truth in input pixels: (row, col, diameter_px, diameter_mm)."""

    image: F32  # (INPUT_SIZE, INPUT_SIZE)
    nodules: tuple[tuple[float, float, float, float], ...]


def sample_from_chest(chest: SynthChest) -> Sample:
    """Prepare a synthetic MONOCHROME2 radiograph like a stored file and frame it."""
    values = chest.image.astype(np.float32)
    geo = PixelGeometry((chest.spacing_mm, chest.spacing_mm), "PixelSpacing")
    radiograph = prepare_values(values, 1, values.shape, geo)
    x, box = letterbox(radiograph.pixels, INPUT_SIZE)
    nodules = []
    for n in chest.nodules:
        working = np.asarray(n.center_rc) - np.asarray(radiograph.crop)
        r, c = box.to_input(working)[0]
        nodules.append((float(r), float(c), n.diameter_px * box.scale, n.diameter_mm))
    return Sample(x, tuple(nodules))


def synth_sample(seed: int, config: SynthConfig | None = None) -> Sample:
    return sample_from_chest(make_synth_chest(seed, config))


def targets(sample: Sample, size: int = INPUT_SIZE) -> tuple[F32, F32, F32]:
    """Heatmap, log-diameter and size-loss weight maps at stride ``STRIDE``."""
    g = size // STRIDE
    heat = np.zeros((g, g), dtype=np.float32)
    logd = np.zeros((g, g), dtype=np.float32)
    weight = np.zeros((g, g), dtype=np.float32)
    yy, xx = np.mgrid[0:g, 0:g].astype(np.float32)
    for r, c, d, _ in sample.nodules:
        cr = round((r - (STRIDE - 1) / 2) / STRIDE)
        cc = round((c - (STRIDE - 1) / 2) / STRIDE)
        if not (0 <= cr < g and 0 <= cc < g):
            continue
        sigma = max(d / STRIDE / 4.0, 0.7)
        blob = np.exp(-((yy - cr) ** 2 + (xx - cc) ** 2) / (2 * sigma**2)).astype(np.float32)
        heat = np.maximum(heat, blob)
        heat[cr, cc] = 1.0
        near = blob > 0.3
        logd[near] = np.log(d)
        weight[near] = np.maximum(weight[near], blob[near])
    return heat, logd, weight


def augment(image: F32, rng: np.random.Generator) -> F32:
    """Display-curve and noise jitter; geometry is left alone (truth stays exact)."""
    out = np.clip(image, 0.0, 1.0) ** rng.uniform(0.75, 1.35)
    out = out * rng.uniform(0.85, 1.1) + rng.uniform(-0.05, 0.05)
    if rng.random() < 0.5:
        out = out + rng.normal(0, rng.uniform(0.0, 0.02), out.shape)
    return np.asarray(np.clip(out, 0.0, 1.0), dtype=np.float32)
