"""Clinical rules the report needs: Lung-RADS v2022, Fleischner 2017, NASCET grades.

The analysis pipelines categorise what they find; the report has to re-derive the study
category and recommendation from the findings a radiologist *confirmed* (rejected ones
drop out, edited sizes change the category), so the rules live here too. Thresholds are
those of DESIGN.md section 5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LUNG_RADS_ORDER = ("0", "1", "2", "3", "4A", "4B", "4X")

_TYPE_ALIASES = {
    "solid": "solid", "part_solid": "part_solid", "part-solid": "part_solid",
    "partsolid": "part_solid", "subsolid": "part_solid", "ground_glass": "ground_glass",
    "ground-glass": "ground_glass", "ggn": "ground_glass", "ggo": "ground_glass",
    "non_solid": "ground_glass", "non-solid": "ground_glass", "nonsolid": "ground_glass",
    "calcified": "calcified",
}

# Measurement names differ between pipelines and radiologist edits; accept the usual ones.
_LONG = ("long_axis", "long_axis_mm", "major_axis", "long_diameter")
_SHORT = ("short_axis", "short_axis_mm", "minor_axis", "short_diameter")
_MEAN = ("mean_diameter", "mean_diameter_mm", "diameter", "average_diameter")
_SOLID = ("solid_part_diameter", "solid_part_mean_diameter", "solid_mean_diameter",
          "solid_diameter", "solid_part")
_VOLUME = ("volume", "volume_mm3")


def lung_rads_rank(category: str | None) -> int:
    if category is None:
        return -1
    cat = category.strip().upper().removeprefix("LUNG-RADS").strip()
    return LUNG_RADS_ORDER.index(cat) if cat in LUNG_RADS_ORDER else -1


def max_lung_rads(categories: Sequence[str | None]) -> str | None:
    ranked = [(lung_rads_rank(c), c) for c in categories if lung_rads_rank(c) >= 0]
    if not ranked:
        return None
    return LUNG_RADS_ORDER[max(r for r, _ in ranked)]


def _measure(measurements: Sequence[Mapping[Any, Any]], names: Sequence[str]) -> float | None:
    for m in measurements:
        if str(m.get("name", "")).lower() in names:
            try:
                return float(m["value"])
            except (TypeError, ValueError, KeyError):
                return None
    return None


@dataclass(frozen=True, slots=True)
class NoduleSize:
    long_mm: float | None
    short_mm: float | None
    mean_mm: float | None
    solid_mm: float | None
    volume_mm3: float | None


def nodule_size(measurements: Sequence[Mapping[Any, Any]]) -> NoduleSize:
    long_ = _measure(measurements, _LONG)
    short = _measure(measurements, _SHORT)
    mean = _measure(measurements, _MEAN)
    if mean is None and long_ is not None and short is not None:
        # Lung-RADS mean diameter: (long + short) / 2, to 0.1 mm.
        mean = round((long_ + short) / 2, 1)
    return NoduleSize(long_, short, mean, _measure(measurements, _SOLID),
                      _measure(measurements, _VOLUME))


def nodule_type(attributes: Mapping[Any, Any]) -> str | None:
    raw = attributes.get("type") or attributes.get("nodule_type") or attributes.get("texture")
    if raw is None:
        return None
    return _TYPE_ALIASES.get(str(raw).strip().lower().replace(" ", "_"))


def lung_rads_baseline(ntype: str | None, size: NoduleSize, peripheral: bool = False) -> str | None:
    """Lung-RADS v2022 category of one nodule at baseline (no prior study)."""
    d = size.mean_mm
    if ntype == "calcified":
        return "1"
    if d is None:
        return None
    if ntype == "ground_glass":
        return "2" if d < 30 else "3"
    if ntype == "part_solid":
        solid = size.solid_mm
        if d < 6:
            return "2"
        if solid is None or solid < 6:
            return "3"
        return "4A" if solid < 8 else "4B"
    if peripheral and d < 10:
        return "2"  # perifissural / juxtapleural solid nodules < 10 mm
    if d < 6:
        return "2"
    if d < 8:
        return "3"
    return "4A" if d < 15 else "4B"


@dataclass(frozen=True, slots=True)
class Advice:
    zh: str
    en: str


def lung_rads_management(category: str | None) -> Advice | None:
    table = {
        "1": Advice("12个月后低剂量CT年度筛查", "continue annual screening with LDCT in 12 months"),
        "2": Advice("12个月后低剂量CT年度筛查", "continue annual screening with LDCT in 12 months"),
        "3": Advice("6个月后低剂量CT复查", "LDCT in 6 months"),
        "4A": Advice("3个月后低剂量CT复查；实性成分≥8 mm可行PET/CT",
                     "LDCT in 3 months; PET/CT may be used if the solid component is >= 8 mm"),
        "4B": Advice("胸部诊断性CT（增强或平扫）、PET/CT和/或组织活检",
                     "diagnostic chest CT with or without contrast, PET/CT and/or tissue sampling"),
        "4X": Advice("胸部诊断性CT（增强或平扫）、PET/CT和/或组织活检",
                     "diagnostic chest CT with or without contrast, PET/CT and/or tissue sampling"),
    }
    return table.get(category or "")


def fleischner(ntype: str | None, size: NoduleSize) -> Advice:
    """Fleischner 2017 recommendation for an incidental nodule (patient aged 35 or older)."""
    d = size.mean_mm or 0.0
    if ntype == "calcified":
        return Advice("钙化结节，良性表现，无需随访",
                      "calcified (benign) nodule, no follow-up needed")
    if ntype == "ground_glass":
        if d < 6:
            return Advice("无需常规随访", "no routine follow-up")
        return Advice("6–12个月CT复查，此后每2年复查至5年",
                      "CT at 6-12 months, then every 2 years until 5 years")
    if ntype == "part_solid":
        if d < 6:
            return Advice("无需常规随访", "no routine follow-up")
        text = Advice("3–6个月CT复查确认是否持续存在",
                      "CT at 3-6 months to confirm persistence")
        if (size.solid_mm or 0.0) >= 6:
            return Advice(text.zh + "；实性成分≥6 mm，高度可疑", text.en
                          + "; solid component >= 6 mm is highly suspicious")
        return text
    if d < 6:
        return Advice("无需常规随访（高危人群可选12个月CT复查）",
                      "no routine follow-up (optional CT at 12 months if high risk)")
    if d <= 8:
        return Advice("6–12个月CT复查", "CT at 6-12 months")
    return Advice("3个月CT复查、PET/CT或组织活检", "CT at 3 months, PET/CT or tissue sampling")


def nascet_grade(percent: float) -> str:
    """NASCET grade of a diameter stenosis: mild < 50, moderate 50-69, severe 70-99."""
    if percent >= 100:
        return "occlusion"
    if percent >= 70:
        return "severe"
    if percent >= 50:
        return "moderate"
    return "mild"


def stenosis_percent(measurements: Sequence[Mapping[Any, Any]]) -> float | None:
    return _measure(measurements, ("stenosis_percent", "stenosis", "nascet_percent"))


def residual_lumen(measurements: Sequence[Mapping[Any, Any]]) -> float | None:
    return _measure(measurements, ("residual_lumen", "residual_lumen_mm", "min_diameter"))
