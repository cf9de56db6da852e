"""Held-out evaluation of a DR nodule model through the service's own pre/post-processing.

``predict`` runs any callable ``image (1, 1, S, S) -> (heatmap, diameter)`` (torch or
onnxruntime) on one prepared sample; ``evaluate`` turns a set of samples into the NODE21
metrics of :mod:`training.dr.evaluate` for all nodules and for nodules >= 10 mm, plus the
image-level AUC and the FP rate at a given operating threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.dr.detect import Candidate, decode
from training.dr.data import Sample
from training.dr.evaluate import (
    Box,
    Detection,
    FrocResult,
    Truth,
    false_positives_per_image,
    froc,
    image_auc,
)

F32 = npt.NDArray[np.float32]
Runner = Callable[[F32], tuple[F32, F32]]
LARGE_MM = 10.0


def predict(run: Runner, sample: Sample) -> list[Candidate]:
    heat, diam = run(sample.image[None, None].astype(np.float32))
    return decode(np.asarray(heat)[0, 0], np.asarray(diam)[0, 0])


@dataclass(frozen=True, slots=True)
class HeldOutReport:
    all_sizes: FrocResult
    large: FrocResult  # nodules >= 10 mm
    auc: float
    auc_large: float
    n_images: int
    n_nodule_free: int
    detections: tuple[Detection, ...]
    truths: tuple[Truth, ...]

    def metrics(self, operating: float) -> dict[str, float]:
        out = {**self.all_sizes.as_metrics(""), **self.large.as_metrics("ge10mm_")}
        out["image_auc"] = self.auc
        out["image_auc_ge10mm"] = self.auc_large
        out["fp_per_image_at_operating"] = false_positives_per_image(
            self.detections, self.truths, self.n_images, operating
        )
        out["ge10mm_sens_at_operating"] = self.sensitivity_at(operating, LARGE_MM)
        out["n_images"] = float(self.n_images)
        out["n_nodules"] = float(self.all_sizes.n_truths)
        out["n_nodules_ge10mm"] = float(self.large.n_truths)
        return out

    def sensitivity_at(self, threshold: float, min_mm: float = 0.0) -> float:
        kept = [d for d in self.detections if d.score >= threshold]
        res = froc(kept, self.truths, self.n_images, min_mm, fp_rates=(1e9,))
        return res.sensitivity[1e9]


def evaluate(run: Runner, samples: Iterable[Sample]) -> HeldOutReport:
    detections: list[Detection] = []
    truths: list[Truth] = []
    scores: list[float] = []
    positive: list[bool] = []
    positive_large: list[bool] = []
    only_hidden: list[bool] = []
    n = n_free = 0
    for i, s in enumerate(samples):
        cands = predict(run, s)
        detections += [Detection(i, Box.around(c.row, c.col, c.diameter), c.score) for c in cands]
        truths += [Truth(i, Box.around(r, c, d), mm) for r, c, d, mm in s.nodules]
        truths += [Truth(i, Box.around(r, c, d), mm, shown=False) for r, c, d, mm in s.hidden]
        scores.append(max((c.score for c in cands), default=0.0))
        positive.append(bool(s.nodules))
        positive_large.append(any(mm >= LARGE_MM for *_, mm in s.nodules))
        only_hidden.append(bool(s.hidden) and not s.nodules)
        n += 1
        n_free += not s.nodules and not s.hidden
    # images whose only nodules are small (or not shown) are left out of the >= 10 mm AUC;
    # images whose only nodules are not shown are neither positive nor negative
    keep = [
        (p or not q) and not h
        for p, q, h in zip(positive_large, positive, only_hidden, strict=True)
    ]
    keep_all = [not h for h in only_hidden]
    return HeldOutReport(
        froc(detections, truths, n),
        froc(detections, truths, n, LARGE_MM),
        _auc(scores, positive, keep_all),
        _auc(scores, positive_large, keep),
        n,
        n_free,
        tuple(detections),
        tuple(truths),
    )


def _auc(scores: list[float], positive: list[bool], keep: list[bool]) -> float:
    kept = [(s, p) for s, p, k in zip(scores, positive, keep, strict=True) if k]
    return image_auc([s for s, _ in kept], [p for _, p in kept])
