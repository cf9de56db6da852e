"""Which analysis pipelines a series is offered to, decided from its header alone.

Routing is deliberately generous: it only decides which pipelines *look at* a series.
Each pipeline's own series selection then accepts it or explains why not, so a
mis-labelled series ends as "not analyzable: <reason>" instead of being dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CT_NODULE = "ct_nodule"
CTA = "cta"
DR_NODULE = "dr_nodule"

_CTA_WORDS = re.compile(
    r"(?i)\b(cta|angio|carotid|willis|head\s*neck|neck|brain|head|"
    r"颈|头|血管)"
)
_CHEST_WORDS = re.compile(r"(?i)(chest|thorax|lung|pulm|胸|肺)")
_NOT_IMAGE_WORDS = re.compile(r"(?i)(dose|report|screen\s*save|protocol|summary|"
                              r"剂量|报告|协议)")
_DR_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1",  # CR Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
}
_SC_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"


@dataclass(frozen=True, slots=True)
class SeriesHeader:
    modality: str | None
    sop_class_uid: str | None
    series_description: str | None
    body_part: str | None
    study_description: str | None = None


def pipelines_for(header: SeriesHeader) -> tuple[str, ...]:
    """Return the pipelines to offer a series to, most likely first; () for none."""
    modality = (header.modality or "").upper()
    text = " ".join(
        t for t in (header.series_description, header.body_part, header.study_description) if t
    )
    if modality in {"DX", "CR"} or header.sop_class_uid in _DR_SOP_CLASSES:
        return (DR_NODULE,)
    if modality == "CT":
        if _CTA_WORDS.search(text) and not _CHEST_WORDS.search(text):
            return (CTA,)
        return (CT_NODULE,)
    if header.sop_class_uid == _SC_SOP_CLASS and _NOT_IMAGE_WORDS.search(
        header.series_description or ""
    ):
        # Dose screens and scanned reports are stored as Secondary Capture inside chest
        # studies; they are not radiographs.
        return ()
    if header.sop_class_uid == _SC_SOP_CLASS and _CHEST_WORDS.search(text):
        # Some township DR consoles export as Secondary Capture (issue 6).
        return (DR_NODULE,)
    return ()
