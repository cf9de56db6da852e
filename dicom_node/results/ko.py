"""KOS: a Key Object Selection naming the key images and the SR (PS3.3 A.35.4, TID 2010)."""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from dicom_node.results.common import (
    MANUFACTURER,
    REVIEW_CENTER,
    Family,
    SignedStudy,
    apply_patient,
    contributing_equipment,
    person_name,
    series_number,
)


def build_kos(signed: SignedStudy, referenced: list[Dataset]) -> Dataset | None:
    """Reference ``referenced`` (SC key images, SR) as "Of Interest"; None when empty."""
    if not referenced:
        return None
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=person_name(signed.reviewer.display_name), organization_name=REVIEW_CENTER
        ),
    )
    content = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.OfInterest,
        referenced_objects=referenced,
        observer_person_context=observer,
        # Key Object Description (TEXT): consoles that show it get the signed impression.
        description=" ".join(
            p
            for p in (
                f"Radiologist-verified AI findings, revision {signed.revision}.",
                signed.report_text or "",
            )
            if p
        )[:1024],
    )
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=referenced,
        content=content,
        series_instance_uid=signed.uid(Family.KOS, "series"),
        series_number=series_number(Family.KOS, signed.revision),
        sop_instance_uid=signed.uid(Family.KOS, "instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        institution_name=REVIEW_CENTER,
        contributing_equipment=contributing_equipment(signed.models),
        series_description=f"AI key objects r{signed.revision}",
        specific_character_set="ISO_IR 192",
    )
    apply_patient(kos, signed.patient)
    return kos
