"""Comparison with the patient's prior chest CT: new, growing or stable nodules, VDT.

Lung-RADS v2022 categorises a follow-up by change, not by size alone (DESIGN.md
section 5): a *new* solid nodule of 6 mm is 4A where a baseline one is 3, a *growing*
one (mean diameter up by more than 1.5 mm within 12 months) is 4A below 8 mm and 4B from
8 mm. Volume doubling time = dt * ln 2 / ln(V2 / V1).

Two scans of one patient do not share a coordinate system: the table position (z) and
the centring (x, y) differ from visit to visit. The shift between them is estimated from
the nodules themselves: every pairing of a current and a prior nodule of the same side
and compatible size proposes a translation, and the translation that lines up most
pairs wins (a one-parameter RANSAC over all pairs, exhaustive because nodule counts are
small); a pairing that needs more than a plausible repositioning is never proposed.
With one nodule on each side a match therefore needs the same lung, a compatible size
and a shift within those bounds.

Pure functions: the worker looks the prior up in the database and applies the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import date

import numpy as np

from countyread.domain import AnalysisResult, Finding, Measurement, Urgency
from inference.ct_nodule.rules import (
    Change,
    NoduleFacts,
    NoduleType,
    fleischner,
    is_urgent,
    lung_rads,
    study_category,
)

#: Largest repositioning between two visits we accept (mm): centring in x / y, table in z.
MAX_SHIFT_MM = np.array([30.0, 30.0, 80.0])
#: Growth threshold and window of Lung-RADS v2022.
GROWTH_MM = 1.5
GROWTH_WINDOW_DAYS = 366
#: A prior nodule and a current one are the same when, after the shift, their centres
#: are closer than this or than half the larger diameter.
MATCH_MM = 6.0
#: Diameter ratio beyond which two nodules are not considered the same one.
MAX_SIZE_RATIO = 3.0
#: A current nodule is "new" only where the prior scan covered it, with this margin.
COVERAGE_MARGIN_MM = 10.0


@dataclass(frozen=True, slots=True)
class PriorNodule:
    """One nodule of the prior study, as confirmed there (or as the AI saw it)."""

    center_lps: tuple[float, float, float]
    mean_diameter_mm: float
    volume_mm3: float | None
    type: str
    side: str | None
    finding_id: int | None = None


@dataclass(frozen=True, slots=True)
class PriorStudy:
    study_uid: str
    study_date: date
    nodules: tuple[PriorNodule, ...]
    #: Superior-inferior extent of the prior scan (LPS z, mm), for "new" decisions.
    z_range: tuple[float, float] | None
    reviewed: bool


@dataclass(frozen=True, slots=True)
class NoduleChange:
    change: Change
    prior: PriorNodule | None
    growth_mm: float | None
    vdt_days: float | None
    interval_days: int


def _diameter(f: Finding) -> float:
    return float(f.measurement("mean_diameter") or f.measurement("long_axis") or 0.0)


def _compatible(f: Finding, p: PriorNodule) -> bool:
    side = f.attribute("side")
    if side and p.side and side != p.side:
        return False
    d1, d2 = max(_diameter(f), 1.0), max(p.mean_diameter_mm, 1.0)
    return max(d1, d2) / min(d1, d2) <= MAX_SIZE_RATIO


def _tolerance(f: Finding, p: PriorNodule) -> float:
    return max(MATCH_MM, 0.5 * max(_diameter(f), p.mean_diameter_mm))


def _pairs_for_shift(
    current: list[Finding], priors: tuple[PriorNodule, ...], shift: np.ndarray
) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching under ``shift`` (prior + shift ~ current)."""
    options = []
    for i, f in enumerate(current):
        c = np.asarray(f.center_lps)
        for j, p in enumerate(priors):
            if not _compatible(f, p):
                continue
            dist = float(np.linalg.norm(c - (np.asarray(p.center_lps) + shift)))
            if dist <= _tolerance(f, p):
                options.append((dist, i, j))
    used_i: set[int] = set()
    used_j: set[int] = set()
    out = []
    for dist, i, j in sorted(options):
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            out.append((i, j, dist))
    return out


def match(
    current: list[Finding], priors: tuple[PriorNodule, ...]
) -> tuple[dict[int, int], np.ndarray]:
    """current index -> prior index, and the shift (mm) that maps prior onto current."""
    best: tuple[int, float] = (0, math.inf)
    best_pairs: list[tuple[int, int, float]] = []
    best_shift = np.zeros(3)
    for f in current:
        for p in priors:
            if not _compatible(f, p):
                continue
            shift = np.asarray(f.center_lps) - np.asarray(p.center_lps)
            if np.any(np.abs(shift) > MAX_SHIFT_MM):
                continue
            pairs = _pairs_for_shift(current, priors, shift)
            # Refine: the mean offset of the pairs this proposal lines up.
            if pairs:
                shift = np.mean([np.asarray(current[i].center_lps)
                                 - np.asarray(priors[j].center_lps) for i, j, _ in pairs], axis=0)
                pairs = _pairs_for_shift(current, priors, shift)
            score = (len(pairs), sum(d for *_, d in pairs))
            if score[0] > best[0] or (score[0] == best[0] and score[1] < best[1]):
                best, best_pairs, best_shift = score, pairs, shift
    return {i: j for i, j, _ in best_pairs}, best_shift


def vdt_days(v1: float | None, v2: float | None, interval_days: int) -> float | None:
    """Volume doubling time; None without growth or without volumes."""
    if not v1 or not v2 or v2 <= v1 or interval_days <= 0:
        return None
    return interval_days * math.log(2.0) / math.log(v2 / v1)


def compare(
    current: list[Finding], prior: PriorStudy, current_date: date
) -> tuple[list[NoduleChange], np.ndarray]:
    """One :class:`NoduleChange` per current finding, in order, and the shift used."""
    interval = (current_date - prior.study_date).days
    mapping, shift = match(current, prior.nodules)
    out = []
    for i, f in enumerate(current):
        j = mapping.get(i)
        if j is None:
            z = f.center_lps[2] - float(shift[2])  # where it would be in the prior scan
            covered = prior.z_range is not None and (
                min(prior.z_range) + COVERAGE_MARGIN_MM <= z
                <= max(prior.z_range) - COVERAGE_MARGIN_MM)
            change = Change.NEW if covered else Change.BASELINE
            out.append(NoduleChange(change, None, None, None, interval))
            continue
        p = prior.nodules[j]
        growth = round(_diameter(f) - p.mean_diameter_mm, 1)
        if growth > GROWTH_MM and interval <= GROWTH_WINDOW_DAYS:
            change = Change.GROWING
        elif growth > GROWTH_MM:
            # Larger, but over more than the 12-month window the definition uses: size
            # rules apply (baseline) and the VDT tells the rest.
            change = Change.BASELINE
        else:
            change = Change.STABLE
        vdt = vdt_days(p.volume_mm3, f.measurement("volume"), interval)
        out.append(NoduleChange(change, p, growth, vdt, interval))
    return out, shift


def _facts(f: Finding, change: Change) -> NoduleFacts:
    type_ = NoduleType(f.attribute("type") or "solid")
    mean = _diameter(f)
    margin = f.attribute("margin") or "smooth"
    return NoduleFacts(
        type=type_,
        mean_diameter_mm=mean,
        solid_part_mm=float(f.measurement("solid_part") or 0.0),
        juxtapleural_or_perifissural=(f.attribute("location") or "lung") != "lung",
        smooth_margin=margin == "smooth",
        spiculated=margin == "spiculated" and type_ is not NoduleType.CALCIFIED,
        change=change,
        mass=max(mean, float(f.measurement("long_axis") or 0.0)) >= 30.0,
    )


def _with_change(f: Finding, c: NoduleChange, prior: PriorStudy) -> Finding:
    values = list(f.measurements)
    if c.growth_mm is not None:
        values.append(Measurement("diameter_change", c.growth_mm, "mm"))
        values.append(Measurement("prior_mean_diameter", round(c.prior.mean_diameter_mm, 1)
                                  if c.prior else 0.0, "mm"))
    if c.vdt_days is not None:
        values.append(Measurement("volume_doubling_time", round(c.vdt_days), "d"))
    attrs = dict(f.attributes)
    attrs["change"] = c.change.value
    attrs["prior_study_uid"] = prior.study_uid
    attrs["prior_date"] = prior.study_date.isoformat()
    category = lung_rads(_facts(f, c.change)) if f.category else f.category
    return replace(f, measurements=tuple(values), attributes=tuple(sorted(attrs.items())),
                   category=category)


def apply(result: AnalysisResult, prior: PriorStudy, current_date: date,
          current_z_range: tuple[float, float] | None = None) -> AnalysisResult:
    """The result with each finding's change, VDT and change-aware Lung-RADS category."""
    findings = list(result.findings)
    changes, shift = compare(findings, prior, current_date)
    updated = [_with_change(f, c, prior) for f, c in zip(findings, changes, strict=True)]
    cats = [f.category for f in updated if f.category]
    study_cat = study_category(cats)
    largest = max((float(f.measurement("long_axis") or 0.0) for f in updated), default=0.0)
    urgency = result.urgency
    if urgency is not Urgency.CRITICAL:
        urgency = Urgency.URGENT if is_urgent(study_cat, largest) else Urgency.ROUTINE
    counts = {k: sum(c.change is k for c in changes) for k in Change}
    seen = {c.prior for c in changes if c.prior is not None}
    # A prior nodule counts as "not seen now" only where this scan covers its place.
    gone = sum(
        1 for p in prior.nodules
        if p not in seen and (current_z_range is None
                              or min(current_z_range) <= p.center_lps[2] + float(shift[2])
                              <= max(current_z_range))
    )
    interval = (current_date - prior.study_date).days
    note = (
        f"compared with prior CT of {prior.study_date.isoformat()} ({interval} days "
        f"earlier{'' if prior.reviewed else ', prior not yet reviewed'}): "
        f"{counts[Change.NEW]} new, {counts[Change.GROWING]} growing, "
        f"{counts[Change.STABLE]} stable, {gone} prior nodule(s) not seen now"
    )
    recommendation = fleischner([_facts(f, c.change) for f, c in zip(updated, changes,
                                                                       strict=True)])
    return replace(result, findings=tuple(updated), category=study_cat, urgency=urgency,
                   recommendation=recommendation if result.recommendation else None,
                   notes=(*result.notes, note))
