"""Volume -> assessed nodules: lung mask, candidates, network, measurements, categories.

Pure stages on an in-memory :class:`~countyread.domain.Volume`; the pipeline class does
series selection, volume loading and output assembly around this.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from scipy import ndimage

from countyread.domain import Volume
from inference.ct_nodule.candidates import find_candidates, make_work_grid
from inference.ct_nodule.detector import Detection, RunFn, detect
from inference.ct_nodule.lobes import LobeModel, fit_lobes
from inference.ct_nodule.lungs import LungMask, segment_lungs
from inference.ct_nodule.measure import NoduleMeasurements, measure_in_volume
from inference.ct_nodule.refine import refit
from inference.ct_nodule.rules import MASS_MM, NoduleFacts, NoduleType, lung_rads

PLEURA_MM = 2.0
# Held-out phantoms 9000-9023: perifissural nodules 0.48-0.72 (8 of 12 below 0.6), round
# nodules elsewhere in the lung >= 0.62.
FISSURE_FLATNESS = 0.6
# A detection touching a slice made up across a gap must show on this many acquired
# slices (see ``gap_supported``).
MIN_ACQUIRED_SLICES = 2
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AssessedNodule:
    detection: Detection
    measurements: NoduleMeasurements
    side: str
    location: str  # lung / juxtapleural / perifissural
    category: str
    facts: NoduleFacts
    lobe: str | None = None  # right_upper ... left_lower; None where the fissures are unseen

    @property
    def is_mass(self) -> bool:
        return (
            self.measurements.axes.mean_mm >= MASS_MM or self.measurements.axes.long_mm >= MASS_MM
        )


@dataclass
class StageTimer:
    """Wall-clock milliseconds per named stage, in call order."""

    timings: list[tuple[str, float]] = field(default_factory=list)

    def run(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        t0 = time.perf_counter()
        out = fn(*args)
        self.timings.append((name, round((time.perf_counter() - t0) * 1000.0, 1)))
        return out


def _location(volume: Volume, lung: LungMask, det: Detection, flat: float) -> str:
    """Juxtapleural when the nodule comes within PLEURA_MM of tissue outside the lungs;
    perifissural when, inside the lung, it is lentiform (flatness < FISSURE_FLATNESS),
    lying flat on a fissure."""
    steps = max(1, round(PLEURA_MM / min(volume.spacing)))
    grown = ndimage.binary_dilation(np.pad(det.mask, steps), iterations=steps)
    pts = np.argwhere(grown) - steps + np.array([b.start for b in det.box])
    pts = pts[:: max(1, len(pts) // 4000)]
    inside = lung.contains(pts.astype(np.float64))
    if (~inside).mean() > 0.02:
        return "juxtapleural"
    return "perifissural" if flat < FISSURE_FLATNESS else "lung"


def assess(
    volume: Volume, lung: LungMask, det: Detection, lobes: LobeModel | None = None
) -> AssessedNodule:
    m = measure_in_volume(volume.array, det.box, det.mask, volume.spacing)
    centre_lps = volume.index_to_lps(det.center_kji)
    side = "left" if centre_lps[0] > lung.midline_x else "right"
    location = _location(volume, lung, det, m.flatness)
    facts = NoduleFacts(
        type=m.type,
        mean_diameter_mm=m.axes.mean_mm,
        solid_part_mm=m.solid_part_mm,
        juxtapleural_or_perifissural=location != "lung",
        smooth_margin=m.margin == "smooth",
        spiculated=m.margin == "spiculated" and m.type is not NoduleType.CALCIFIED,
        mass=max(m.axes.mean_mm, m.axes.long_mm) >= MASS_MM,
    )
    lobe = lobes.lobe_at(centre_lps) if lobes is not None else None
    if lobe is not None and not lobe.startswith(side):
        lobe = None  # the midline and the lobe model disagree: keep the side only
    return AssessedNodule(det, m, side, location, lung_rads(facts), facts, lobe)


def gap_supported(det: Detection, interpolated: frozenset[int]) -> bool:
    """Whether a detection rests on acquired slices, not on one made up across a gap.

    A slice interpolated into a gap is a cross-fade of its two neighbours, 2 steps apart:
    a vessel that runs obliquely through the gap appears there twice at half contrast, a
    short thick stub where the tube breaks off, which the network (trained on contiguous
    slices) reads as a small nodule. Linear interpolation "along the true geometry" gives
    the very same values, so the only honest remedy is to ask for evidence the scanner
    recorded: a structure that touches the made-up slice must also be seen on at least
    ``MIN_ACQUIRED_SLICES`` acquired slices; otherwise its extent along z is no larger
    than the gap and its 3-D shape (round or tubular) was never measured. A real nodule
    near the gap spans several acquired slices and is kept.
    """
    if not interpolated:
        return True
    ks = det.box[0].start + np.flatnonzero(det.mask.any(axis=(1, 2)))
    made_up = sum(1 for k in ks if int(k) in interpolated)
    return made_up == 0 or len(ks) - made_up >= MIN_ACQUIRED_SLICES


@dataclass(frozen=True, slots=True)
class VolumeAnalysis:
    lung: LungMask
    nodules: tuple[AssessedNodule, ...]
    n_candidates: int
    timings_ms: tuple[tuple[str, float], ...]
    gap_suppressed: int = 0  # detections set aside by ``gap_supported``
    lobes: LobeModel | None = None  # fitted only when there is a nodule to place


def analyze_volume(
    volume: Volume,
    run: RunFn,
    min_probability: float,
    timer: StageTimer | None = None,
    large_floor: float | None = None,
    interpolated: tuple[int, ...] = (),
) -> VolumeAnalysis:
    """Every detection with probability >= ``min_probability``, measured and categorised.

    ``interpolated``: slices of ``volume`` made up across a missing-slice gap; detections
    that rest on them without support on acquired slices are dropped (``gap_supported``).
    """
    timer = timer or StageTimer()
    lung = timer.run("lung_mask", segment_lungs, volume)
    grid = timer.run("work_grid", make_work_grid, volume, lung)
    cands = timer.run("candidates", find_candidates, grid)
    del grid  # the 1 mm grid is the largest array after the volume: free it early
    found = timer.run("model", detect, volume, cands, run, min_probability, large_floor)
    made_up = frozenset(interpolated)
    dets = [d for d in found if gap_supported(d, made_up)]
    gap_suppressed = len(found) - len(dets)
    dets = timer.run("refit", refit, volume, dets, run)
    lobes = timer.run("lobes", fit_lobes, volume, lung) if dets else None
    nodules = timer.run(
        "measurements", lambda: tuple(assess(volume, lung, d, lobes) for d in dets)
    )
    return VolumeAnalysis(lung, nodules, len(cands), tuple(timer.timings), gap_suppressed, lobes)
