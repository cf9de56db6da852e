"""Lung-RADS v2022 and Fleischner 2017 as data-driven functions (DESIGN.md section 5).

Sizes are mean diameters, (long + short axis) / 2 on the lung window, rounded to 0.1 mm
before any comparison, as Lung-RADS v2022 prescribes. Categories follow the ACR
Lung-RADS v2022 assessment table (ACR, November 2022; Christensen et al., CHEST 2024;
165(3):738-753): solid, part-solid and non-solid rows at baseline, new or growing, the
juxtapleural row (solid, smooth, < 10 mm at baseline or new) and 4X for category 3 or 4
nodules with features that raise suspicion (here: spiculation).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class NoduleType(StrEnum):
    SOLID = "solid"
    PART_SOLID = "part_solid"
    GROUND_GLASS = "ground_glass"
    CALCIFIED = "calcified"


class Change(StrEnum):
    BASELINE = "baseline"
    NEW = "new"
    GROWING = "growing"
    STABLE = "stable"


#: Lung-RADS categories in increasing order of suspicion.
CATEGORY_ORDER = ("0", "1", "2", "3", "4A", "4B", "4X")
MASS_MM = 30.0


@dataclass(frozen=True, slots=True)
class NoduleFacts:
    """What the rules need to know about one nodule."""

    type: NoduleType
    mean_diameter_mm: float
    solid_part_mm: float = 0.0
    juxtapleural_or_perifissural: bool = False
    smooth_margin: bool = True
    spiculated: bool = False
    change: Change = Change.BASELINE
    mass: bool = False  # any diameter >= 30 mm (e.g. the long axis), not just the mean


def _r(value: float) -> float:
    return round(value + 1e-9, 1)


def _solid(d: float, change: Change, facts: NoduleFacts) -> str:
    # juxtapleural (incl. perifissural): solid, smooth, < 10 mm, "at baseline or new"
    juxta = facts.juxtapleural_or_perifissural and facts.smooth_margin
    if juxta and d < 10.0 and change is not Change.GROWING:
        return "2"
    if change is Change.NEW:
        if d < 4.0:
            return "2"
        if d < 6.0:
            return "3"
        if d < 8.0:
            return "4A"
        return "4B"
    if change is Change.GROWING:
        return "4A" if d < 8.0 else "4B"
    if d < 6.0:
        return "2"
    if d < 8.0:
        return "3"
    if d < 15.0:
        return "4A"
    return "4B"


def _part_solid(d: float, solid: float, change: Change) -> str:
    # a new part-solid nodule's solid component is new: "new or growing < 4 mm solid
    # component" is 4A, >= 4 mm 4B; a new one < 6 mm in all is 3
    if change is Change.NEW and d < 6.0:
        return "3"
    if change in (Change.NEW, Change.GROWING):
        return "4A" if solid < 4.0 else "4B"
    if d < 6.0:
        return "2"
    if solid < 6.0:
        return "3"
    if solid < 8.0:
        return "4A"
    return "4B"


def _ground_glass(d: float, change: Change) -> str:
    # >= 30 mm is 3 at baseline or new; unchanged (or slowly growing) it is 2
    return "2" if d < 30.0 or change is Change.STABLE else "3"


def lung_rads(facts: NoduleFacts) -> str:
    """Lung-RADS v2022 category of one nodule (DESIGN.md section 5 table)."""
    d = _r(facts.mean_diameter_mm)
    if facts.type is NoduleType.CALCIFIED:
        return "1"
    if facts.type is NoduleType.GROUND_GLASS:
        category = _ground_glass(d, facts.change)
    elif facts.type is NoduleType.PART_SOLID:
        category = _part_solid(d, _r(facts.solid_part_mm), facts.change)
    else:
        category = _solid(d, facts.change, facts)
    # 4X: category 3 or 4 with additional features that increase suspicion.
    if facts.spiculated and category in ("3", "4A", "4B"):
        return "4X"
    return category


def study_category(categories: list[str]) -> str:
    """The study's Lung-RADS category is that of its most suspicious nodule; 1 if none."""
    if not categories:
        return "1"
    return max(categories, key=CATEGORY_ORDER.index)


def is_urgent(study_cat: str, largest_mm: float) -> bool:
    """Urgent on the worklist: Lung-RADS 4B/4X or a mass >= 30 mm."""
    return study_cat in ("4B", "4X") or largest_mm >= MASS_MM


NO_NODULE = "No pulmonary nodule detected: no nodule follow-up needed."
_CAVEAT = " (Fleischner 2017: incidental nodules, age >= 35, not for lung cancer screening.)"
_MASS = (
    "Lung mass >= 30 mm: outside Fleischner nodule guidance; prompt work-up "
    "(contrast CT or PET/CT and tissue sampling)."
)


def fleischner(facts: list[NoduleFacts], high_risk: bool = False) -> str:
    """Fleischner 2017 recommendation for the study's nodules (English)."""
    relevant = [f for f in facts if f.type is not NoduleType.CALCIFIED]
    if not relevant:
        if facts:
            return "Calcified (benign) nodule(s) only: no follow-up needed."
        return NO_NODULE
    if any(f.mass or _r(f.mean_diameter_mm) >= MASS_MM for f in relevant):
        return _MASS
    multiple = len(relevant) > 1
    solids = [f for f in relevant if f.type is NoduleType.SOLID]
    subsolids = [f for f in relevant if f.type is not NoduleType.SOLID]
    texts = []
    if solids:
        texts.append(
            _fleischner_solid(max(_r(f.mean_diameter_mm) for f in solids), multiple, high_risk)
        )
    if subsolids:
        texts.append(_fleischner_subsolid(subsolids, multiple))
    return " ".join(texts) + _CAVEAT


def _fleischner_solid(d: float, multiple: bool, high_risk: bool) -> str:
    what = "Multiple solid nodules" if multiple else "Solid nodule"
    if d < 6.0:
        tail = "optional CT at 12 months" if high_risk else "high risk: optional CT at 12 months"
        return f"{what} < 6 mm: no routine follow-up ({tail})."
    if d <= 8.0:
        if multiple:
            return f"{what} 6-8 mm: CT at 3-6 months, then consider CT at 18-24 months."
        return f"{what} 6-8 mm: CT at 6-12 months, then consider CT at 18-24 months."
    if multiple:
        return f"{what} > 8 mm: CT at 3-6 months, then consider CT at 18-24 months."
    return f"{what} > 8 mm: consider CT at 3 months, PET/CT, or tissue sampling."


def _fleischner_subsolid(subsolids: list[NoduleFacts], multiple: bool) -> str:
    d = max(_r(f.mean_diameter_mm) for f in subsolids)
    part_solid = [f for f in subsolids if f.type is NoduleType.PART_SOLID]
    if multiple:
        if d < 6.0:
            return (
                "Multiple subsolid nodules < 6 mm: CT at 3-6 months; if stable, consider CT "
                "at 2 and 4 years."
            )
        return (
            "Multiple subsolid nodules, one >= 6 mm: CT at 3-6 months; subsequent management "
            "based on the most suspicious nodule."
        )
    f = subsolids[0]
    if f.type is NoduleType.GROUND_GLASS:
        if d < 6.0:
            return "Ground-glass nodule < 6 mm: no routine follow-up."
        return (
            "Ground-glass nodule >= 6 mm: CT at 6-12 months to confirm persistence, then CT "
            "every 2 years until 5 years."
        )
    if d < 6.0:
        return "Part-solid nodule < 6 mm: no routine follow-up."
    text = (
        "Part-solid nodule >= 6 mm: CT at 3-6 months to confirm persistence; if unchanged "
        "and the solid component remains < 6 mm, annual CT for 5 years."
    )
    if part_solid and _r(f.solid_part_mm) >= 6.0:
        text += " Solid component >= 6 mm: highly suspicious."
    return text
