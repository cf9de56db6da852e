"""Detections on a radiograph -> domain findings, image score and urgency (no I/O).

Coordinates: a radiograph has no patient z, so ``center_lps`` of a DR finding is the
point in the image plane ``(column * column_spacing, row * row_spacing, 0)`` in mm from
the top-left corner of the stored matrix (pixel centres, PS3.3 C.8.11.4 / 10.7.1.3);
without any pixel spacing it is ``(column, row, 0)`` in pixels, and the ``unit``
attribute says which. ``sop_instance_uid`` names the image the point lies on. The
``side`` attribute is the patient's side of the film's midline once the film is in the
standard display (:mod:`inference.dr.orientation`); it is left out when the film's
orientation is not known.

Urgency (documented rule): urgent when a detection above the operating threshold is a
mass (diameter >= 30 mm, with a known pixel size) or the image score is at least
``urgent_score`` (a high-confidence nodule); otherwise routine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from countyread.domain import Finding, Measurement, ModelRef, Urgency
from inference.dr.detect import Candidate, Letterbox
from inference.dr.image import Radiograph

KIND = "dr_nodule"
MASS_MM = 30.0


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Operating point (from the model card) and the urgency rule."""

    operating: float = 0.5
    urgent_score: float = 0.9
    mass_mm: float = MASS_MM


@dataclass(frozen=True, slots=True)
class Mark:
    """One detection in stored-pixel coordinates, ready to report or draw."""

    row: float
    col: float
    diameter_px: float
    diameter: float  # in ``unit``
    unit: str  # "mm" or "px"
    score: float

    @property
    def is_mass(self) -> bool:
        return self.unit == "mm" and self.diameter >= MASS_MM


def to_marks(cands: Sequence[Candidate], box: Letterbox, radiograph: Radiograph) -> list[Mark]:
    """Map network-input detections back to the stored matrix and to mm where known."""
    marks = []
    geo = radiograph.geometry
    mm = radiograph.working_mm
    for c in cands:
        working = box.to_working((c.row, c.col))
        r, col = radiograph.to_stored(working)[0]
        d_working = c.diameter / box.scale
        d_px = d_working * radiograph.stored_per_working
        d = d_working * mm if mm is not None else d_px
        marks.append(Mark(float(r), float(col), float(d_px), round(float(d), 1), geo.unit, c.score))
    return marks


def image_score(marks: Sequence[Mark]) -> float:
    """Image-level nodule score: the strongest detection (0 when there is none)."""
    return max((m.score for m in marks), default=0.0)


def to_findings(
    marks: Sequence[Mark],
    radiograph: Radiograph,
    *,
    series_uid: str,
    sop_instance_uid: str,
    view: str,
    model: ModelRef,
    thresholds: Thresholds,
    key_image: str | None,
) -> tuple[Finding, ...]:
    """Findings for the marks at or above the operating threshold, strongest first."""
    spacing = radiograph.geometry.spacing_mm
    out = []
    for m in sorted(marks, key=lambda m: -m.score):
        if m.score < thresholds.operating:
            continue
        if spacing is not None:
            center = (m.col * spacing[1], m.row * spacing[0], 0.0)
        else:
            center = (m.col, m.row, 0.0)
        attributes: tuple[tuple[str, str], ...] = (
            ("view", view),
            ("unit", m.unit),
            ("coordinates", "image plane (column, row, 0) from the top-left pixel"),
            ("pixel_center", f"{m.col:.2f},{m.row:.2f}"),
            ("spacing_source", radiograph.geometry.source),
            ("type", "mass" if m.diameter >= thresholds.mass_mm and m.unit == "mm" else "nodule"),
        )
        side = radiograph.side((m.row, m.col))
        if side is not None:  # of the film's midline, in the standard display
            attributes = (*attributes, ("side", side))
        out.append(
            Finding(
                kind=KIND,
                probability=round(m.score, 4),
                center_lps=(round(center[0], 2), round(center[1], 2), 0.0),
                series_uid=series_uid,
                sop_instance_uid=sop_instance_uid,
                measurements=(Measurement("diameter", m.diameter, m.unit),),
                attributes=attributes,
                model=model,
                key_image=key_image,
            )
        )
    return tuple(out)


def urgency(findings: Sequence[Finding], score: float, thresholds: Thresholds) -> Urgency:
    """The rule in the module docstring."""
    if score >= thresholds.urgent_score:
        return Urgency.URGENT
    for f in findings:
        d = f.measurement("diameter")
        if f.attribute("unit") == "mm" and d is not None and d >= thresholds.mass_mm:
            return Urgency.URGENT
    return Urgency.ROUTINE
