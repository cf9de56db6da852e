"""Declarative series selection: which stored series a pipeline analyses, and why.

A pipeline declares :class:`SelectionRules`; :func:`select_series` applies them to
header summaries (one instance read per series, no pixel data) and returns the chosen
series with the reason every other series was passed over, so the worklist can say
"analysed series 3 (1.0 mm B70f); series 2 rejected: localiser".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from countyread.errors import NotAnalyzableError

# PS3.3 C.8.2.1.1.1: Image Type value 3 of a CT localiser (scout) is LOCALIZER.
_LOCALIZER_TYPES = {"LOCALIZER", "SCOUT", "TOPOGRAM"}


@dataclass(frozen=True, slots=True)
class SeriesHeader:
    """What selection needs to know about one series."""

    series_uid: str
    paths: tuple[Path, ...]
    modality: str
    image_type: tuple[str, ...]
    orientation: tuple[float, ...] | None
    slice_thickness: float | None
    kernel: str
    description: str
    body_part: str
    contrast_agent: str
    n_instances: int

    @property
    def is_axial(self) -> bool:
        if self.orientation is None or len(self.orientation) != 6:
            return False
        normal = np.cross(self.orientation[:3], self.orientation[3:])
        return bool(abs(normal[2]) > 0.9)  # within ~25 deg of the patient z axis

    @property
    def tilt_deg(self) -> float | None:
        """Angle between the image plane and the axial plane (gantry tilt, reformats)."""
        if self.orientation is None or len(self.orientation) != 6:
            return None
        normal = np.cross(self.orientation[:3], self.orientation[3:])
        norm = float(np.linalg.norm(normal))
        if norm == 0.0:
            return None
        return float(np.degrees(np.arccos(min(1.0, abs(float(normal[2])) / norm))))


@dataclass(frozen=True, slots=True)
class SelectionRules:
    """Rules in data, one pipeline's preferences.

    Required: modality matches, ORIGINAL image type, axial, not a localiser, at least
    ``min_instances``, thickness <= ``max_thickness_mm`` and body part / description not
    excluded. Ranked by: thickness <= ``preferred_thickness_mm``, kernel matches
    ``preferred_kernel`` (lung / sharp), non-contrast, thinner, more instances.
    """

    modality: str = r"(?i)^CT$"
    require_original: bool = True
    require_axial: bool = True
    min_instances: int = 10
    max_thickness_mm: float = 10.0
    preferred_thickness_mm: float = 2.5
    preferred_kernel: str = r"(?i)(lung|sharp|B[5-8]\d|I[5-8]\d|FC5\d|FC8\d|YA|YB|\bL\b|BONE)"
    excluded_description: str = r"(?i)(localizer|scout|topogram|dose|report|mip|mpr|3d)"
    angiography_description: str = r"(?i)(cta|angio)"


@dataclass(frozen=True, slots=True)
class SeriesChoice:
    chosen: SeriesHeader
    rejected: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (uid, reason)

    def explanation(self) -> str:
        c = self.chosen
        thick = f"{c.slice_thickness:g} mm" if c.slice_thickness else "unknown thickness"
        kernel = c.kernel or "-"
        text = f"analysed series {c.series_uid} ({c.n_instances} images, {thick}, kernel {kernel})"
        if self.rejected:
            text += "; passed over: " + "; ".join(f"{uid}: {why}" for uid, why in self.rejected)
        return text


def _sample_paths(paths: tuple[Path, ...]) -> list[Path]:
    """Middle, first and last instance, then the next few: a localiser sent inside the
    series (often Instance Number 1) must not stand for the whole series."""
    picks = [paths[len(paths) // 2], paths[0], paths[-1], *paths[1:5]] if paths else []
    return list(dict.fromkeys(picks))


def read_series_header(series_uid: str, paths: tuple[Path, ...]) -> SeriesHeader:
    """Summarise a series from a representative readable instance (no pixel data)."""
    ds = None
    for path in _sample_paths(paths):
        try:
            candidate = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # a corrupt file must not hide the rest of the series
            continue
        if ds is None:
            ds = candidate
        image_type = {str(v).upper() for v in (candidate.get("ImageType") or ())}
        if not _LOCALIZER_TYPES & image_type:
            ds = candidate
            break
    if ds is None:
        return SeriesHeader(series_uid, paths, "", (), None, None, "", "", "", "", len(paths))
    orientation = ds.get("ImageOrientationPatient")
    shared = ds.get("SharedFunctionalGroupsSequence")
    thickness = ds.get("SliceThickness")
    n = len(paths)
    if shared:  # Enhanced CT: orientation and thickness live in functional groups
        group = shared[0]
        if group.get("PlaneOrientationSequence"):
            orientation = group.PlaneOrientationSequence[0].get("ImageOrientationPatient")
        if group.get("PixelMeasuresSequence"):
            thickness = group.PixelMeasuresSequence[0].get("SliceThickness")
        n = int(ds.get("NumberOfFrames") or n)
    kernel = ds.get("ConvolutionKernel") or ""
    if not isinstance(kernel, str):
        kernel = "\\".join(str(k) for k in kernel)
    return SeriesHeader(
        series_uid=series_uid,
        paths=paths,
        modality=str(ds.get("Modality") or ""),
        image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or ())),
        orientation=tuple(float(v) for v in orientation) if orientation else None,
        slice_thickness=float(thickness) if thickness not in (None, "") else None,
        kernel=str(kernel),
        description=str(ds.get("SeriesDescription") or ""),
        body_part=str(ds.get("BodyPartExamined") or ""),
        contrast_agent=str(ds.get("ContrastBolusAgent") or ""),
        n_instances=n,
    )


def rejection_reason(h: SeriesHeader, rules: SelectionRules) -> str | None:
    """Why this series cannot be analysed at all, or None."""
    if not re.search(rules.modality, h.modality):
        return f"modality {h.modality or 'missing'}"
    if _LOCALIZER_TYPES & set(h.image_type) or re.search(rules.excluded_description, h.description):
        return "localiser or derived display series"
    if rules.require_original and h.image_type and h.image_type[0] != "ORIGINAL":
        return f"image type {h.image_type[0]} (not ORIGINAL)"
    if rules.require_axial and not h.is_axial:
        tilt = h.tilt_deg
        if tilt is not None and tilt < 60.0:  # an oblique (gantry-tilted) axial, not a reformat
            return f"not axial: plane tilted {tilt:.0f} deg (gantry tilt)"
        return "not axial"
    if h.n_instances < rules.min_instances:
        return f"only {h.n_instances} images"
    if h.slice_thickness is not None and h.slice_thickness > rules.max_thickness_mm:
        return f"slice thickness {h.slice_thickness:g} mm > {rules.max_thickness_mm:g} mm"
    return None


def _rank(h: SeriesHeader, rules: SelectionRules) -> tuple[float, ...]:
    thick = h.slice_thickness if h.slice_thickness is not None else 5.0
    return (
        0.0 if thick <= rules.preferred_thickness_mm else 1.0,
        0.0 if re.search(rules.preferred_kernel, f"{h.kernel} {h.description}") else 1.0,
        1.0 if h.contrast_agent else 0.0,
        thick,
        -float(h.n_instances),
    )


def select_series(headers: list[SeriesHeader], rules: SelectionRules) -> SeriesChoice:
    """Pick the best series; NotAnalyzableError names why none qualifies."""
    rejected: list[tuple[str, str]] = []
    usable: list[SeriesHeader] = []
    for h in headers:
        reason = rejection_reason(h, rules)
        if reason is None:
            usable.append(h)
        else:
            rejected.append((h.series_uid, reason))
    if not usable:
        reasons = "; ".join(sorted({why for _, why in rejected})) or "no series"
        raise NotAnalyzableError(f"no suitable CT series: {reasons}")
    angio = [h for h in usable if re.search(rules.angiography_description, h.description)]
    if len(angio) == len(usable):
        raise NotAnalyzableError(
            "contrast-only (CT angiography) series: not a chest CT for nodules"
        )
    usable = [h for h in usable if h not in angio]
    rejected += [(h.series_uid, "CT angiography series") for h in angio]
    usable.sort(key=lambda h: _rank(h, rules))
    chosen = usable[0]
    for h in usable[1:]:
        rejected.append((h.series_uid, _why_not(h, chosen, rules)))
    return SeriesChoice(chosen, tuple(rejected))


def _why_not(h: SeriesHeader, chosen: SeriesHeader, rules: SelectionRules) -> str:
    a, b = _rank(h, rules), _rank(chosen, rules)
    if a[0] > b[0]:
        return f"thicker than {rules.preferred_thickness_mm:g} mm"
    if a[1] > b[1]:
        return "not a lung kernel"
    if a[2] > b[2]:
        return "contrast-enhanced"
    if a[3] > b[3]:
        return "thicker slices"
    return "fewer images"
