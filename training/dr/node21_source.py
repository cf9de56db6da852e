"""NODE21 radiographs (``training.loaders.node21``) as DR training samples.

An optional data source: where a NODE21 copy exists, ``node21_images``/``node21_boxes``
in the training config name it and ``node21_fraction`` of each batch is drawn from it.
Images are prepared as the service prepares a stored file (block reduction to the
working size, collimation crop, percentile scaling, letterbox); each box becomes a
nodule at its centre with the mean of its sides as diameter. NODE21 images are stored
for presentation with dense = bright (as MONOCHROME2), so no inversion is applied.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from inference.dr.detect import INPUT_SIZE, letterbox
from inference.dr.image import WORK_MAX, PixelGeometry, block_reduce, prepare_values
from training.dr.data import Sample
from training.loaders.node21 import load_node21
from training.loaders.types import DRCase

logger = logging.getLogger(__name__)


def sample_from_case(case: DRCase) -> Sample:
    """One NODE21 case, framed like the service; diameter_mm is NaN without a spacing."""
    factor = max(1, math.ceil(max(case.image.shape) / WORK_MAX))
    values = block_reduce(case.image, factor)
    geometry = (
        PixelGeometry(case.spacing_mm, "PixelSpacing")
        if case.spacing_mm is not None
        else PixelGeometry(None, "none")
    )
    radiograph = prepare_values(values, factor, case.image.shape, geometry)
    x, box = letterbox(radiograph.pixels, INPUT_SIZE)
    nodules = []
    for b in case.boxes:
        centre = np.array([b.y + b.height / 2, b.x + b.width / 2])
        # stored pixel centre -> working pixel (inverse of Radiograph.to_stored)
        working = (centre - (factor - 1) / 2.0) / factor - np.asarray(radiograph.crop)
        r, c = box.to_input(working)[0]
        side = (b.width + b.height) / 2
        mm = (
            side * math.sqrt(case.spacing_mm[0] * case.spacing_mm[1])
            if case.spacing_mm
            else math.nan
        )
        nodules.append((float(r), float(c), side / factor * box.scale, mm))
    return Sample(x, tuple(nodules))


def load_samples(image_dir: Path, boxes_csv: Path, limit: int | None = None) -> list[Sample]:
    """Prepared samples of the first ``limit`` cases (all when None), sorted by name."""
    out = []
    for case in load_node21(image_dir, boxes_csv):
        out.append(sample_from_case(case))
        if limit is not None and len(out) >= limit:
            break
    logger.info("node21 samples", extra={"images": len(out)})
    return out
