"""DR nodule evaluation as NODE21 counts it: FROC at low FP rates (IoU > 0.2) and image AUC.

A detection is a true positive when its box overlaps a not yet matched truth box with
IoU > 0.2 (greedy, best score first, each truth matched once). Detections that only
match an already matched truth are false positives (duplicates). With a minimum truth
size (e.g. ">= 10 mm"), detections matched to smaller truths are left out of the
count: they are neither hits of the size band nor false alarms. The same holds for
truths marked not shown (a phantom nodule too faint for the film).

Sensitivity at a false-positive rate r is the best sensitivity over score thresholds whose
false positives per image are <= r (PS: FROC as in Chakraborty's definition, as used by
LUNA16 and NODE21). The image-level AUC uses the image score (the highest detection
score; 0 when there is none) against "image has at least one eligible nodule".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FP_RATES = (0.125, 0.25, 0.5, 1.0)
IOU_HIT = 0.2


@dataclass(frozen=True, slots=True)
class Box:
    """Axis-aligned box in pixels: (row0, col0, row1, col1), row1 > row0, col1 > col0."""

    r0: float
    c0: float
    r1: float
    c1: float

    @classmethod
    def around(cls, row: float, col: float, diameter: float) -> Box:
        h = diameter / 2
        return cls(row - h, col - h, row + h, col + h)

    @property
    def area(self) -> float:
        return max(0.0, self.r1 - self.r0) * max(0.0, self.c1 - self.c0)

    def iou(self, other: Box) -> float:
        ih = min(self.r1, other.r1) - max(self.r0, other.r0)
        iw = min(self.c1, other.c1) - max(self.c0, other.c0)
        if ih <= 0 or iw <= 0:
            return 0.0
        inter = ih * iw
        return inter / (self.area + other.area - inter)


@dataclass(frozen=True, slots=True)
class Detection:
    image: int
    box: Box
    score: float


@dataclass(frozen=True, slots=True)
class Truth:
    image: int
    box: Box
    diameter_mm: float
    shown: bool = True  # False: on the phantom but too faint for the film; never counted


@dataclass(frozen=True, slots=True)
class FrocResult:
    sensitivity: dict[float, float]  # FP rate -> sensitivity
    threshold: dict[float, float]  # FP rate -> score threshold reaching it
    n_truths: int
    n_images: int

    def as_metrics(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}sens_at_{r:g}_fp": s for r, s in self.sensitivity.items()}
        out[f"{prefix}mean_sens"] = float(np.mean(list(self.sensitivity.values())))
        return out


def label_detections(
    detections: Sequence[Detection], truths: Sequence[Truth], min_diameter_mm: float = 0.0
) -> list[tuple[float, str]]:
    """(score, 'tp' | 'fp' | 'ignored') for each detection."""
    by_image: dict[int, list[Truth]] = {}
    for t in truths:
        by_image.setdefault(t.image, []).append(t)
    matched: set[int] = set()
    out: list[tuple[float, str]] = []
    for det in sorted(detections, key=lambda d: -d.score):
        best, best_iou = None, IOU_HIT
        for t in by_image.get(det.image, []):
            iou = det.box.iou(t.box)
            if iou > best_iou and id(t) not in matched:
                best, best_iou = t, iou
        if best is None:
            out.append((det.score, "fp"))
        else:
            matched.add(id(best))
            counted = best.shown and best.diameter_mm >= min_diameter_mm
            out.append((det.score, "tp" if counted else "ignored"))
    return out


def froc(
    detections: Sequence[Detection],
    truths: Sequence[Truth],
    n_images: int,
    min_diameter_mm: float = 0.0,
    fp_rates: Sequence[float] = FP_RATES,
) -> FrocResult:
    """Sensitivity at each FP rate; see the module docstring for the counting rules."""
    if n_images <= 0:
        raise ValueError("n_images must be positive")
    n_truths = sum(1 for t in truths if t.shown and t.diameter_mm >= min_diameter_mm)
    labels = [x for x in label_detections(detections, truths, min_diameter_mm) if x[1] != "ignored"]
    labels.sort(key=lambda x: -x[0])
    sens = {r: 0.0 for r in fp_rates}
    thr = {r: math.inf for r in fp_rates}
    tp = fp = 0
    i = 0
    while i < len(labels):
        score = labels[i][0]
        while i < len(labels) and labels[i][0] == score:  # ties enter together
            tp += labels[i][1] == "tp"
            fp += labels[i][1] == "fp"
            i += 1
        s = tp / n_truths if n_truths else 0.0
        for r in fp_rates:
            if fp / n_images <= r and s >= sens[r]:
                sens[r], thr[r] = s, score
    return FrocResult(sens, thr, n_truths, n_images)


def image_auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """ROC AUC by the Mann-Whitney statistic (ties count one half); NaN for one class."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def false_positives_per_image(
    detections: Sequence[Detection], truths: Sequence[Truth], n_images: int, threshold: float
) -> float:
    kept = [d for d in detections if d.score >= threshold]
    return sum(1 for _, lab in label_detections(kept, truths) if lab == "fp") / n_images
