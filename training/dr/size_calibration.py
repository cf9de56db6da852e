"""Diameter calibration of the DR nodule model: log(true) = a + b log(predicted).

The size head regresses log diameters with an L1 loss; with few large nodules in the
data it shrinks the largest toward the typical size (a 30 mm mass read as ~22 mm by
1.1.0). A straight line in log space, fitted on images apart from the training and the
held-out sets, undoes most of that without touching the heatmap. The exporter writes the
pair into the network (``DRNoduleNet.size_a``/``size_b``) before the ONNX export.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from training.dr.data import Sample
from training.dr.heldout import Runner, predict

B_RANGE = (0.7, 1.6)  # a fit outside this is noise, not shrinkage


@dataclass(frozen=True, slots=True)
class SizeCalibration:
    a: float
    b: float
    n_pairs: int

    def apply(self, diameter: float) -> float:
        return float(np.exp(self.a + self.b * np.log(diameter)))


def matched_diameters(run: Runner, samples: Iterable[Sample]) -> list[tuple[float, float]]:
    """(predicted, true) diameters in input pixels for nodules whose centre cell was found."""
    pairs = []
    for s in samples:
        cands = predict(run, s)
        for r, c, d, _ in s.nodules:
            near = [x for x in cands if np.hypot(x.row - r, x.col - c) < max(d / 2, 4.0)]
            if near:
                pairs.append((near[0].diameter, d))
    return pairs


def fit(pairs: list[tuple[float, float]]) -> SizeCalibration:
    """Least squares in log space; identity when there are too few pairs to trust."""
    if len(pairs) < 20:
        return SizeCalibration(0.0, 1.0, len(pairs))
    p = np.log(np.asarray(pairs, dtype=np.float64))
    b, a = np.polyfit(p[:, 0], p[:, 1], 1)
    b = float(np.clip(b, *B_RANGE))
    a = float(np.mean(p[:, 1] - b * p[:, 0]))  # refit the intercept for the clipped slope
    return SizeCalibration(round(a, 4), round(b, 4), len(pairs))
