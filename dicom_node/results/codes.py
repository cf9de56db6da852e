"""Coded concepts for our findings: SNOMED CT / DCM where a standard code exists.

Concepts without a standard code (Lung-RADS categories, nodule composition values) use
the private coding scheme ``99CRD`` (PS3.16 section 8.2: "99" prefixed designators are
private), declared in each object's CodingSchemeIdentificationSequence.
"""

from __future__ import annotations

import re

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

PRIVATE_SCHEME = "99CRD"


def private(value: str, meaning: str) -> Code:
    return Code(value, PRIVATE_SCHEME, meaning)


def declare_private_scheme(ds: Dataset) -> None:
    """CodingSchemeIdentificationSequence entry for 99CRD (PS3.3 C.12.1.1.6)."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "CountyRead private codes"
    item.CodingSchemeResponsibleOrganization = "CountyRead"
    ds.CodingSchemeIdentificationSequence = [item]


VESSEL_KINDS = {"stenosis", "occlusion", "near_occlusion", "aneurysm"}

_FINDING_TYPES: dict[str, Code] = {
    "nodule": codes.SCT.Nodule,
    "dr_nodule": codes.SCT.Nodule,
    "mass": codes.SCT.Mass,
    "stenosis": codes.SCT.Stenosis,
    "occlusion": codes.SCT.OcclusionOfArtery,
    "near_occlusion": codes.SCT.Stenosis,
}


# The CT pipeline calls its findings lung_nodule / lung_mass and its lobes right_upper
# ...; findings radiologists add, and the DR and CTA pipelines, use nodule / mass and
# RUL ... Both spellings reach the result builders.
_KIND_ALIASES = {"lung_nodule": "nodule", "lung_mass": "mass"}
NODULE_KINDS = frozenset({"nodule", "dr_nodule", "mass"})


def base_kind(kind: str) -> str:
    """``nodule``, ``mass``, ``dr_nodule``, ``stenosis`` ... whichever spelling came in."""
    k = kind.lower().strip()
    return _KIND_ALIASES.get(k, k)


def finding_type(kind: str, attributes: dict[str, str] | None = None) -> Code:
    """Finding type (TID 1501 row 3); a radiograph opacity typed "mass" is a Mass."""
    if attributes and (attributes.get("type") or "").lower() == "mass":
        return codes.SCT.Mass
    return _FINDING_TYPES.get(base_kind(kind), codes.SCT.Finding)


# Lobe abbreviations as pipelines and radiologists write them.
_LOBES: dict[str, tuple[Code, Code | None]] = {
    "rul": (codes.SCT.UpperLobeOfLung, codes.SCT.Right),
    "rml": (codes.SCT.MiddleLobeOfRightLung, None),
    "rll": (codes.SCT.LowerLobeOfLung, codes.SCT.Right),
    "lul": (codes.SCT.UpperLobeOfLung, codes.SCT.Left),
    "lll": (codes.SCT.LowerLobeOfLung, codes.SCT.Left),
}

_LOBE_ALIASES = {
    "right_upper": "rul",
    "right_middle": "rml",
    "right_lower": "rll",
    "left_upper": "lul",
    "left_lower": "lll",
}


def lobe_key(attributes: dict[str, str]) -> str | None:
    """``rul`` ... ``lll`` from a finding's ``lobe`` attribute in either spelling."""
    raw = (attributes.get("lobe") or "").lower().strip().replace(" ", "_")
    raw = _LOBE_ALIASES.get(raw, raw)
    return raw if raw in _LOBES else None


_VESSELS: dict[str, Code] = {
    "ica": codes.SCT.InternalCarotidArtery,
    "cca": codes.SCT.CommonCarotidArtery,
    "eca": codes.SCT.ExternalCarotidArtery,
    "va": codes.SCT.VertebralArtery,
    "vertebral": codes.SCT.VertebralArtery,
    "ba": codes.SCT.BasilarArtery,
    "basilar": codes.SCT.BasilarArtery,
    "mca": codes.SCT.MiddleCerebralArtery,
    "m1": codes.SCT.MiddleCerebralArteryM1Segment,
    "a1": codes.SCT.AnteriorCerebralArtery,
    "p1": codes.SCT.PosteriorCerebralArteryP1Segment,
    "aca": codes.SCT.AnteriorCerebralArtery,
    "pca": codes.SCT.PosteriorCerebralArtery,
}


def _side(text: str) -> Code | None:
    t = text.lower()
    if re.search(r"(^|[_\s-])(l|left)([_\s-]|$)", t) or "左" in t:
        return codes.SCT.Left
    if re.search(r"(^|[_\s-])(r|right)([_\s-]|$)", t) or "右" in t:
        return codes.SCT.Right
    return None


def finding_sites(kind: str, attributes: dict[str, str]) -> list[hd.sr.FindingSite]:
    """Lobe of lung for nodules, the named artery for vessel findings (TID 1419 site)."""
    lobe = lobe_key(attributes)
    if lobe is not None:
        site, side = _LOBES[lobe]
        return [hd.sr.FindingSite(site, laterality=side)]
    vessel = (attributes.get("vessel") or attributes.get("segment") or "").strip()
    if vessel:
        tokens = re.split(r"[_\s-]+", vessel.lower())
        for tok in tokens:
            if tok in _VESSELS:
                return [hd.sr.FindingSite(_VESSELS[tok], laterality=_side(vessel))]
        return [hd.sr.FindingSite(codes.SCT.Artery, laterality=_side(vessel))]
    if base_kind(kind) in NODULE_KINDS:
        return [hd.sr.FindingSite(codes.SCT.Lung, laterality=_side(attributes.get("side", "")))]
    if kind.lower() in VESSEL_KINDS:
        return [hd.sr.FindingSite(codes.SCT.Artery)]
    return []


# Measurement names (as the pipelines write them) -> (concept, qualifier, UCUM unit).
_UNITS = {"mm": codes.UCUM.Millimeter, "mm3": codes.UCUM.CubicMillimeter, "%": codes.UCUM.Percent}
_MEASUREMENTS: dict[str, tuple[Code, Code | None]] = {
    "long_axis": (codes.SCT.LongAxis, None),
    "short_axis": (codes.SCT.ShortAxis, None),
    "mean_diameter": (codes.SCT.Diameter, codes.SCT.Mean),
    "diameter": (codes.SCT.Diameter, None),
    "solid_part": (private("SOLIDPART", "Solid component diameter"), None),
    "volume": (codes.SCT.Volume, None),
    "stenosis": (codes.SCT.LumenDiameterStenosis, None),
    "stenosis_percent": (codes.SCT.LumenDiameterStenosis, None),
    "min_lumen_diameter": (codes.SCT.VesselLumenDiameter, codes.SCT.Minimum),
    "min_diameter": (codes.SCT.VesselLumenDiameter, codes.SCT.Minimum),
    "residual_lumen": (private("RESIDUALLUMEN", "Residual lumen diameter"), None),
    "reference_diameter": (codes.SCT.VesselLumenDiameter, None),
    "length": (codes.SCT.Length, None),
}


def measurement_concept(name: str, unit: str) -> tuple[Code, Code | None, Code] | None:
    """(concept, qualifier, unit) for a measurement; None for units we cannot code."""
    key = re.sub(r"_(mm|mm3|pct)$", "", name.lower())
    ucum = _UNITS.get(unit)
    if ucum is None:
        return None
    concept, qualifier = _MEASUREMENTS.get(key, (private(key.upper()[:16], name), None))
    return concept, qualifier, ucum


NO_FINDING = private("NOFINDING", "No confirmed AI finding")
LUNG_RADS = private("LUNGRADS", "Lung-RADS v2022 assessment category")
COMPOSITION = private("COMPOSITION", "Nodule composition")
STENOSIS_GRADE = codes.SCT.Severity

_COMPOSITIONS = {
    "solid": codes.DCM.SolidMass,
    "part_solid": private("PARTSOLID", "Part-solid nodule"),
    "non_solid": codes.DCM.GroundGlassOpacity,
    "ggn": codes.DCM.GroundGlassOpacity,
    "ground_glass": codes.DCM.GroundGlassOpacity,
    "calcified": codes.SCT.Calcified,
}


def qualitative(
    kind: str, category: str | None, attributes: dict[str, str]
) -> list[hd.sr.QualitativeEvaluation]:
    """Lung-RADS category and composition for nodules; the grade for stenoses."""
    out: list[hd.sr.QualitativeEvaluation] = []
    if category and base_kind(kind) in NODULE_KINDS:
        out.append(
            hd.sr.QualitativeEvaluation(
                LUNG_RADS, private(f"LR{category.upper()}"[:16], f"Lung-RADS {category.upper()}")
            )
        )
    composition = (attributes.get("type") or attributes.get("composition") or "").lower()
    composition = composition.replace("-", "_").replace(" ", "_")
    if composition in _COMPOSITIONS:
        out.append(hd.sr.QualitativeEvaluation(COMPOSITION, _COMPOSITIONS[composition]))
    grade = attributes.get("grade") or (category if kind.lower() in VESSEL_KINDS else None)
    if grade:
        g = grade.lower().replace("-", "_").replace(" ", "_")
        out.append(
            hd.sr.QualitativeEvaluation(STENOSIS_GRADE, private(f"GRADE_{g.upper()}"[:16], grade))
        )
    spiculated = attributes.get("spiculated", "").lower() in {"1", "true", "yes"}
    if spiculated or attributes.get("margin", "").lower() == "spiculated":
        out.append(
            hd.sr.QualitativeEvaluation(private("MARGIN", "Nodule margin"), codes.DCM.Spiculated)
        )
    return out


def segment_codes(kind: str) -> tuple[Code, Code]:
    """(category, type) for a SEG segment (CID 7150 / 7151 style)."""
    if kind.lower() in VESSEL_KINDS or kind.lower() == "vessel":
        return codes.SCT.AnatomicalStructure, codes.SCT.Artery
    return codes.SCT.MorphologicallyAbnormalStructure, finding_type(base_kind(kind))
