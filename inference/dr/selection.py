"""Which radiograph of a study the DR pipeline reads, and why the others were passed over.

Eligible: DX or CR images (PS3.3 A.26 / A.2), and chest radiographs kept as Secondary
Capture (PS3.3 A.8; Modality OT, DX or CR) when the header says chest. Views come from
View Position (0018,5101), then the View Code Sequence (0054,0220; PS3.16 CID 4010),
then the series description / protocol name; a film with no view recorded is assumed
frontal and the result says so. Laterals and oblique views are skipped with a reason.
Preference among frontal films: PA over AP, FOR PRESENTATION over FOR PROCESSING
(PS3.3 C.8.11.1.1.1), the series that triggered the analysis, then the larger matrix.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataset import Dataset

from countyread.errors import NotAnalyzableError
from inference.dr.image import MIN_SIDE
from inference.dr.orientation import primary_letters
from inference.pipeline import StudyInput

logger = logging.getLogger(__name__)

SECONDARY_CAPTURE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
}
_RADIOGRAPHY = {"DX", "CR"}
_FRONTAL = {"PA", "AP"}
# View Position defined terms, PS3.3 C.8.11.5.1.1 (laterals, decubitus, obliques)
_NOT_FRONTAL = {
    "LL",
    "RL",
    "LLD",
    "RLD",
    "LLO",
    "RLO",
    "LAT",
    "LATERAL",
    "LPO",
    "RPO",
    "LAO",
    "RAO",
}
_CHEST = re.compile(r"(?i)(chest|thorax|thoracic|lung|\bcxr\b|胸|肺)")
# "正侧位" / "PA + LAT" name a study holding both views: no evidence about one image
_BOTH_VIEWS_TEXT = re.compile(r"(?i)(正侧位|正側位|\b(pa|ap)\s*(and|&|/|\+|,)\s*lat(eral)?\b)")
_LATERAL_TEXT = re.compile(r"(?i)(\blat(eral)?\b|\bll\b|\brl\b|侧位|oblique|斜位|decub)")
_PA_TEXT = re.compile(r"(?i)(\bpa\b|p-a|postero-?anterior|后前位|正位)")
_AP_TEXT = re.compile(r"(?i)(\bap\b|a-p|antero-?posterior|前后位|床旁|bedside|portable)")
_MAX_HEADERS = 20  # instances looked at per series (a DR series has a handful)


@dataclass(frozen=True, slots=True)
class RadiographHeader:
    """What selection needs from one instance (read without pixel data)."""

    path: Path
    series_uid: str
    sop_instance_uid: str
    modality: str
    sop_class_uid: str
    body_part: str
    description: str  # series description and protocol name
    view_position: str
    view_code_meaning: str
    presentation_intent: str
    rows: int
    columns: int
    study_description: str = ""
    orientation: tuple[str, ...] = ()  # Patient Orientation, primary letters


@dataclass(frozen=True, slots=True)
class ViewDecision:
    view: str  # "PA", "AP" or "" when not frontal
    source: str  # "ViewPosition", "ViewCodeSequence", "description", "assumed"
    reason: str | None  # why the image is not read, or None


@dataclass(frozen=True, slots=True)
class RadiographChoice:
    chosen: RadiographHeader
    view: ViewDecision
    rejected: tuple[tuple[str, str], ...]  # (sop_instance_uid, reason)
    notes: tuple[str, ...]

    def explanation(self) -> str:
        c = self.chosen
        text = (
            f"analysed {c.modality} {self.view.view} image {c.sop_instance_uid} "
            f"of series {c.series_uid} ({c.columns}x{c.rows})"
        )
        if self.rejected:
            text += "; passed over: " + "; ".join(f"{uid}: {why}" for uid, why in self.rejected)
        return text


def code_string(ds: Dataset, keyword: str) -> str:
    """A CS value as text. CS is ASCII by the standard (PS3.5 6.2), but township consoles
    write e.g. Body Part Examined "胸部" in the dataset's character set, which pydicom
    then reads as Latin-1; such a value is decoded again with (0008,0005)."""
    value = str(ds.get(keyword) or "")
    if value.isascii():
        return value
    charset = ds.get("SpecificCharacterSet") or "ISO_IR 100"
    try:
        raw = value.encode("latin-1")
        return decode_bytes(raw, convert_encodings(charset), set()).strip()
    except (UnicodeError, LookupError, ValueError):
        return value


def header_from_dataset(ds: Dataset, path: Path, series_uid: str) -> RadiographHeader:
    code_meaning = ""
    codes = ds.get("ViewCodeSequence")
    if codes:
        code_meaning = str(codes[0].get("CodeMeaning") or "")
    text = " ".join(str(ds.get(k) or "") for k in ("SeriesDescription", "ProtocolName"))
    return RadiographHeader(
        path=path,
        series_uid=str(ds.get("SeriesInstanceUID") or series_uid),
        sop_instance_uid=str(ds.get("SOPInstanceUID") or ""),
        modality=str(ds.get("Modality") or "").upper(),
        sop_class_uid=str(ds.get("SOPClassUID") or ""),
        body_part=code_string(ds, "BodyPartExamined").upper(),
        description=text.strip(),
        view_position=code_string(ds, "ViewPosition").upper().strip(),
        view_code_meaning=code_meaning,
        presentation_intent=str(ds.get("PresentationIntentType") or "").upper(),
        rows=int(ds.get("Rows") or 0),
        columns=int(ds.get("Columns") or 0),
        study_description=str(ds.get("StudyDescription") or "").strip(),
        orientation=primary_letters(ds),
    )


def read_headers(study: StudyInput) -> tuple[list[RadiographHeader], list[tuple[str, str]]]:
    """Headers of the instances of radiography-like series; unreadable files are noted."""
    headers: list[RadiographHeader] = []
    rejected: list[tuple[str, str]] = []
    for series in study.series:
        modality = (series.modality or "").upper()
        if modality and modality not in _RADIOGRAPHY | {"OT", "SC"}:
            rejected.append((series.series_uid, f"modality {modality}"))
            continue
        for path in series.paths[:_MAX_HEADERS]:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception as exc:  # a corrupt file is a reason, not a crash
                rejected.append((path.name, f"unreadable file ({type(exc).__name__})"))
                continue
            headers.append(header_from_dataset(ds, path, series.series_uid))
    return headers, rejected


def eligibility(h: RadiographHeader) -> str | None:
    """Why this instance is not a chest radiograph we read, or None."""
    is_sc = h.sop_class_uid in SECONDARY_CAPTURE_CLASSES
    if h.modality not in _RADIOGRAPHY and not (is_sc and h.modality in {"OT", "SC", ""}):
        return f"modality {h.modality or 'missing'}"
    labels = f"{h.description} {h.study_description}"
    if is_sc and not (_CHEST.search(h.body_part) or _CHEST.search(labels)):
        return "secondary capture not labelled as a chest radiograph"
    if h.body_part and not _CHEST.search(h.body_part):
        return f"body part {h.body_part}"
    if min(h.rows, h.columns) < MIN_SIDE:
        return f"matrix {h.columns}x{h.rows} too small for a chest film"
    return None


def decide_view(h: RadiographHeader) -> ViewDecision:
    if h.view_position:
        if h.view_position in _FRONTAL:
            return ViewDecision(h.view_position, "ViewPosition", None)
        if h.view_position in _NOT_FRONTAL:
            return ViewDecision("", "ViewPosition", f"{h.view_position} view (not frontal)")
    meaning = h.view_code_meaning.lower()
    if meaning:
        if "lateral" in meaning or "oblique" in meaning or "decubitus" in meaning:
            return ViewDecision("", "ViewCodeSequence", f"{h.view_code_meaning} view")
        if "postero-anterior" in meaning or "posteroanterior" in meaning:
            return ViewDecision("PA", "ViewCodeSequence", None)
        if "antero-posterior" in meaning or "anteroposterior" in meaning:
            return ViewDecision("AP", "ViewCodeSequence", None)
    # A film whose rows or columns run front-to-back (PS3.3 C.7.6.1.1.1) is a lateral.
    if len(h.orientation) == 2 and {"A", "P"} & set(h.orientation):
        shown = "\\".join(h.orientation)
        return ViewDecision("", "PatientOrientation", f"lateral projection (orientation {shown})")
    # The series' own text speaks for this image before the study's, which may name
    # every view the study holds.
    for text in (h.description, h.study_description):
        text = _BOTH_VIEWS_TEXT.sub(" ", text)
        if _LATERAL_TEXT.search(text):
            return ViewDecision("", "description", "lateral view (from the description)")
        if _PA_TEXT.search(text):
            return ViewDecision("PA", "description", None)
        if _AP_TEXT.search(text):
            return ViewDecision("AP", "description", None)
    return ViewDecision("PA", "assumed", None)


def select_radiograph(study: StudyInput) -> RadiographChoice:
    """The frontal chest film to read; NotAnalyzableError names why there is none."""
    headers, rejected = read_headers(study)
    usable: list[tuple[RadiographHeader, ViewDecision]] = []
    for h in headers:
        reason = eligibility(h)
        view = decide_view(h)
        reason = reason or view.reason
        if reason is None:
            usable.append((h, view))
        else:
            rejected.append((h.sop_instance_uid or h.path.name, reason))
    if not usable:
        reasons = "; ".join(sorted({why for _, why in rejected})) or "no images"
        raise NotAnalyzableError(f"no frontal chest radiograph: {reasons}")

    def rank(item: tuple[RadiographHeader, ViewDecision]) -> tuple[float, ...]:
        h, v = item
        return (
            0.0 if v.view == "PA" and v.source != "assumed" else 1.0,
            1.0 if h.presentation_intent == "FOR PROCESSING" else 0.0,
            0.0 if h.series_uid == study.trigger_series_uid else 1.0,
            -float(h.rows * h.columns),
        )

    usable.sort(key=rank)
    chosen, view = usable[0]
    for h, v in usable[1:]:
        rejected.append((h.sop_instance_uid, f"another frontal film ({v.view}) preferred"))
    notes = []
    if view.source == "assumed":
        notes.append("view position not recorded: assumed frontal (PA)")
        others = sum(1 for _, v in usable[1:] if v.source == "assumed")
        if others:
            notes.append(
                f"{others + 1} films record no view: the one read may not be the frontal film"
            )
    elif view.source != "ViewPosition":
        notes.append(f"view {view.view} inferred from {view.source}")
    if not chosen.body_part:
        notes.append("body part not recorded: assumed chest")
    if view.view == "AP":
        notes.append(
            "AP view (bedside/portable): heart and mediastinum look wider than on a PA film, "
            "and the scapulae may overlap the lungs"
        )
    if chosen.presentation_intent == "FOR PROCESSING":
        notes.append(
            "FOR PROCESSING image (not meant for display): read with its own window or, "
            "without one, the image statistics"
        )
    return RadiographChoice(chosen, view, tuple(rejected), tuple(notes))
