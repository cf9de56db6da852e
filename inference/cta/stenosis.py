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
from scipy import ndimage

from inference.cta.profile import STEP_MM, Profile

REPORT_MIN_PERCENT = 20.0
NARROW_FRACTION = 0.9
END_SKIP_MM = 3.0
FREE_END_SKIP_MM = 6.0
#: The internal carotid ends at its terminus, where the centreline may run on into the
#: first millimetres of a branch: not graded (NASCET lesions sit at the bulb).
ICA_END_SKIP_MM = 10.0
ICA_START_SKIP_MM = 1.0
#: The vertebral centreline starts at its junction on the subclavian's axis, inside the
#: subclavian lumen (radius 3-5 mm), and its first millimetres cut the subclavian wall
#: off-centre (3-5 mm off the true axis): they read as waists next to wide "references"
#: (a false 58 % vertebral stenosis, seed 606 of training.cta.diagnose). Not graded; the
#: cost is an ostial lesion within 5 mm of the junction, which is not graded either.
VA_START_SKIP_MM = 5.0
DISTAL_REF_MM = (5.0, 25.0)
NEAR_REF_MM = 15.0
COLLAPSE_RATIO = 0.6
#: A narrowing must hold over this many consecutive samples (1 mm): one low section
#: is calibre noise (1-2 voxels across a small artery), not a lesion.
MIN_RUN_SAMPLES = 2
#: A branch leaving a junction (A1/M1 off the carotid terminus, P1 off the basilar tip)
#: starts inside its parent's lumen: its first millimetres are no normal reference.
JUNCTION_SKIP_MM = 4.0
MAX_CANDIDATES = 4
WAIST_FLOOR = 0.6
#: A non-carotid reference is at most this many times the vessel's median calibre.
MAX_REF_RATIO = 1.3
#: The blur along the vessel is taken out of a waist (:func:`_deblurred_waist`) only
#: where it reads under this fraction of its reference (a severe stenosis, >= 70 %):
#: there the residual lumen is below the resolution and the blur fills it (issue 5: a
#: 93.5 % M1 stenosis, 0.18 mm, read 0.63 mm: 77 %). The first-order inverse overshoots
#: on a cusp-like waist (see DEBLUR_MIN_AREA_SHARE), so the % stays capped at 99 and the
#: grade stays severe: it moves no grade and makes no new call on a vessel measured
#: under 70 %.
SEVERE_RESIDUAL = 0.3
WAIST_FIT_SAMPLES = 2
#: The first-order inverse holds while its correction is small against the measured
#: area; on a short, cusp-like waist the parabola's curvature (fitted over +-1 mm)
#: exceeds the waist's own and the correction took all of it: an 88 % stenosis of the
#: common carotid (4.3 mm long, 0.93 mm left) read 1.44 mm and then 0.07 mm, 99 %
#: (synthetic fixed set, seed 501). The deblurred area keeps at least this share of
#: the measured one (half its diameter): that case reads 90.4 %, the project set's
#: 91.7 % basilar 89.1 % (99 % before), its 93.5 % M1 88.6 % (91.2 %).
DEBLUR_MIN_AREA_SHARE = 0.25


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


def _waist(
    raw: npt.NDArray[np.float64], closed: npt.NDArray[np.float64], i: int, lo: int, hi: int
) -> float:
    """The narrowest lumen of a narrowing found on the closed profile.

    The closing (MIN_RUN_SAMPLES) finds narrowings that hold over a millimetre, but at the
    bottom of a tight waist it returns the wider neighbour of the narrowest section, which
    read short stenoses 0.1-0.4 mm wide (5-15 points low). The waist is the narrowest raw
    section beside it, never below WAIST_FLOOR of the closed value: a single section that
    drops by more is centreline noise, not lumen.
    """
    j0, j1 = max(lo, i - 1), min(hi, i + 2)
    return max(float(raw[j0:j1].min()), WAIST_FLOOR * float(closed[i]))


def _deblurred_waist(
    raw: npt.NDArray[np.float64], i: int, lo: int, hi: int, blur_mm: npt.NDArray[np.float64]
) -> float:
    """The waist's lumen with the blur along the vessel taken out, to first order.

    Blur along the vessel (sigma s) turns the true area profile A into A * g_s, whose
    value at a waist is A + (s^2 / 2) A'' + ...: the wider lumen on either side fills
    the waist. Inverting to first order, A ~ A_meas - (s^2 / 2) A_meas'' (the first term
    of the inverse series, as in Van Cittert's iteration), with A_meas'' from a parabola
    fitted to the area over +-1 mm (WAIST_FIT_SAMPLES either side) of the narrowest
    section. Only ever narrows the waist.
    """
    j0 = max(lo, i - 1)
    j = j0 + int(np.argmin(raw[j0 : min(hi, i + 2)]))
    a, b = max(0, j - WAIST_FIT_SAMPLES), min(len(raw), j + WAIST_FIT_SAMPLES + 1)
    if b - a < 2 * WAIST_FIT_SAMPLES + 1:
        return float(raw[j])
    s = (np.arange(a, b) - j) * STEP_MM
    area = np.pi * raw[a:b] ** 2 / 4.0
    curvature = 2.0 * float(np.polyfit(s, area, 2)[0])  # A''
    sigma = float(blur_mm[j])
    measured = float(area[j - a])
    deblurred = max(
        measured - 0.5 * sigma**2 * max(curvature, 0.0), DEBLUR_MIN_AREA_SHARE * measured
    )
    return float(min(raw[j], 2.0 * np.sqrt(max(deblurred, 0.0) / np.pi)))


def _reference(
    d: npt.NDArray[np.float64],
    a: int,
    b: int,
    lo: int,
    hi: int,
    ref_lo: int,
    ref0: float,
    is_ica: bool,
) -> float:
    """NASCET: the normal internal carotid 5-25 mm beyond the narrowing; otherwise the
    median of the normal segments on either side."""
    if is_ica:
        s0, s1 = b + int(DISTAL_REF_MM[0] / STEP_MM), b + int(DISTAL_REF_MM[1] / STEP_MM)
        distal = d[s0 : min(s1, hi)]
        if len(distal) >= 6:
            return max(float(np.median(distal)), 1e-3)
    w = int(NEAR_REF_MM / STEP_MM)
    buf = int(2.0 / STEP_MM)
    left = d[max(ref_lo, a - buf - w) : max(ref_lo, a - buf)]
    right = d[min(hi, b + buf) : min(hi, b + buf + w)]
    both = np.r_[left, right]
    ref = float(np.median(both)) if len(both) >= 4 else ref0
    # a segment far wider than the vessel's own calibre is no normal segment: a junction
    # the centreline runs into (the vertebral origin off the subclavian), a merged
    # neighbour; it read a 20 % waist of the vertebral artery as a 60 % stenosis
    return max(min(ref, MAX_REF_RATIO * ref0), 1e-3)


def assess(
    vessel: str,
    prof: Profile,
    free_end: bool,
    contralateral_ref_mm: float | None = None,
    branch: bool = False,
) -> StenosisCall | None:
    """The narrowest point of one vessel and its grade; None if under REPORT_MIN_PERCENT.

    ``free_end``: the vessel ends in the image (its last millimetres taper); ``branch``:
    it starts at a junction (see JUNCTION_SKIP_MM).
    """
    # the narrowing at a sample is the widest of its MIN_RUN_SAMPLES-long neighbourhoods
    d = ndimage.minimum_filter1d(
        ndimage.maximum_filter1d(prof.diameter_mm, MIN_RUN_SAMPLES, mode="nearest"),
        MIN_RUN_SAMPLES,
        mode="nearest",
    )
    n = len(d)
    # the internal carotid starts at the bifurcation, where a lesion at its origin sits
    start_mm = END_SKIP_MM
    if vessel.startswith("ICA"):
        start_mm = ICA_START_SKIP_MM
    elif vessel.startswith("VA"):
        start_mm = VA_START_SKIP_MM
    lo = int(start_mm / STEP_MM)
    end_mm = FREE_END_SKIP_MM if free_end else END_SKIP_MM
    if vessel.startswith("ICA"):
        end_mm = ICA_END_SKIP_MM
    hi = n - int(end_mm / STEP_MM)
    if hi - lo < 4:
        return None
    ref0 = float(np.median(d[lo:hi]))
    is_ica = vessel.startswith("ICA")
    method = "NASCET" if is_ica else "diameter reduction"
    ref_lo = lo + int(JUNCTION_SKIP_MM / STEP_MM) if branch else lo
    # every separate narrowing is graded against its own reference and the worst one is
    # reported: the narrowest section is not always the worst lesion (a vessel that is
    # thinner along its whole course, a skull-base segment that reads low)
    best: tuple[float, int, float, float] | None = None
    free = np.zeros(n, dtype=bool)
    free[lo:hi] = True
    for _ in range(MAX_CANDIDATES):
        if not free.any():
            break
        i = int(np.flatnonzero(free)[np.argmin(d[free])])
        a, b = _run(d, i, NARROW_FRACTION * ref0)
        gap = int(2.0 / STEP_MM)
        free[max(lo, min(a, i - gap)) : max(b, i + gap + 1)] = False
        if free_end and b >= hi:
            # a narrowing that runs on to the traced end of a branch never recovers: the
            # trace went on into a smaller branch past the artery's end (an M1 into an
            # M2 read as a 57 % stenosis, seed 808 of training.cta.diagnose) or it
            # tapers; a lesion has normal lumen beyond it
            continue
        ref = _reference(d, a, b, lo, hi, ref_lo, ref0, is_ica)
        dmin_i = _waist(prof.diameter_mm, d, i, lo, hi)
        if prof.blur_mm is not None and dmin_i < SEVERE_RESIDUAL * ref:
            dmin_i = min(dmin_i, _deblurred_waist(prof.diameter_mm, i, lo, hi, prof.blur_mm))
        pct = float(np.clip(100.0 * (1.0 - dmin_i / ref), 0.0, 99.0))
        # the reported residual lumen agrees with the capped % (a deblurred waist can
        # reach 0 mm, which would read as an occlusion next to a 99 % stenosis)
        dmin_i = max(dmin_i, ref * (1.0 - pct / 100.0))
        if best is None or pct > best[0]:
            best = (pct, i, ref, dmin_i)
    if best is None:
        return None
    percent, i, ref, dmin = best
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
