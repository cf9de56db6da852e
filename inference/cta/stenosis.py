"""Stenosis grading per named vessel (DESIGN.md section 5).

Internal carotid: NASCET, % = (1 - d_min / d_distal_normal_ICA) x 100, where the distal
reference is the normal ICA beyond the narrowing; a collapsed distal ICA (reference
well below the other side's) with a severe narrowing is a near-occlusion, reported with
the residual lumen instead of a percentage. Every other artery: % diameter reduction
against the nearest normal segment on either side of the narrowing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.cta.profile import STEP_MM, Profile

REPORT_MIN_PERCENT = 20.0
NARROW_FRACTION = 0.9
END_SKIP_MM = 3.0
FREE_END_SKIP_MM = 6.0
DISTAL_REF_MM = (5.0, 25.0)
NEAR_REF_MM = 15.0
COLLAPSE_RATIO = 0.6


@dataclass(frozen=True, slots=True)
class StenosisCall:
    vessel: str
    index: int  # profile sample of the narrowest point
    percent: float
    min_diameter_mm: float
    reference_mm: float
    length_mm: float
    start: int
    stop: int  # profile samples of the narrowed run [start, stop)
    method: str
    grade: str
    calcified: bool


def grade_of(percent: float) -> str:
    if percent >= 100.0:
        return "occlusion"
    if percent >= 70.0:
        return "severe"
    if percent >= 50.0:
        return "moderate"
    return "mild"


def _run(d: npt.NDArray[np.float64], i: int, limit: float) -> tuple[int, int]:
    a = i
    while a > 0 and d[a - 1] < limit:
        a -= 1
    b = i + 1
    while b < len(d) and d[b] < limit:
        b += 1
    return a, b


def assess(
    vessel: str,
    prof: Profile,
    free_end: bool,
    contralateral_ref_mm: float | None = None,
) -> StenosisCall | None:
    """The narrowest point of one vessel and its grade; None if under REPORT_MIN_PERCENT."""
    d = prof.diameter_mm
    n = len(d)
    lo = int(END_SKIP_MM / STEP_MM)
    hi = n - int((FREE_END_SKIP_MM if free_end else END_SKIP_MM) / STEP_MM)
    if hi - lo < 4:
        return None
    ref0 = float(np.median(d[lo:hi]))
    i = lo + int(np.argmin(d[lo:hi]))
    a, b = _run(d, i, NARROW_FRACTION * ref0)
    is_ica = vessel.startswith("ICA")
    ref = None
    method = "diameter reduction"
    if is_ica:
        method = "NASCET"
        s0, s1 = b + int(DISTAL_REF_MM[0] / STEP_MM), b + int(DISTAL_REF_MM[1] / STEP_MM)
        distal = d[s0 : min(s1, hi)]
        if len(distal) >= 6:
            ref = float(np.median(distal))
    if ref is None:
        w = int(NEAR_REF_MM / STEP_MM)
        buf = int(2.0 / STEP_MM)
        left = d[max(lo, a - buf - w) : max(lo, a - buf)]
        right = d[min(hi, b + buf) : min(hi, b + buf + w)]
        both = np.r_[left, right]
        ref = float(np.median(both)) if len(both) >= 4 else ref0
    ref = max(ref, 1e-3)
    dmin = float(d[i])
    percent = float(np.clip(100.0 * (1.0 - dmin / ref), 0.0, 99.0))
    if percent < REPORT_MIN_PERCENT:
        return None
    a, b = _run(d, i, NARROW_FRACTION * ref)
    grade = grade_of(percent)
    if (
        is_ica
        and percent >= 70.0
        and contralateral_ref_mm is not None
        and ref < COLLAPSE_RATIO * contralateral_ref_mm
    ):
        grade = "near-occlusion"
    lo_c, hi_c = max(0, a - int(3 / STEP_MM)), min(n, b + int(3 / STEP_MM))
    return StenosisCall(
        vessel=vessel,
        index=i,
        percent=round(percent, 1),
        min_diameter_mm=round(dmin, 2),
        reference_mm=round(ref, 2),
        length_mm=round((b - a) * STEP_MM, 1),
        start=a,
        stop=b,
        method=method,
        grade=grade,
        calcified=bool(prof.calcium[lo_c:hi_c].any()),
    )
