"""SR: Comprehensive 3D SR with a TID 1500 Measurement Report (PS3.16 TID 1500, PS3.3 A.35.13).

One measurement group per confirmed finding: a TID 1411 volumetric group referencing
its SEG segment when a mask exists, a TID 1410 planar group around its SCOORD3D centre
when only a point is known, else a TID 1501 group. The radiologist who signed is both
the person observer and the verifying observer (VerificationFlag VERIFIED, PS3.3
C.17.2); the models appear as algorithm identification (TID 4019) and as Contributing
Equipment (IHE AI Results).
"""

from __future__ import annotations

import logging
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from countyread.uids import derive_uid
from dicom_node.results.codes import (
    NO_FINDING,
    declare_private_scheme,
    finding_sites,
    finding_type,
    measurement_concept,
    qualitative,
)
from dicom_node.results.common import (
    MANUFACTURER,
    REVIEW_CENTER,
    ConfirmedFinding,
    Family,
    SignedStudy,
    apply_patient,
    contributing_equipment,
    person_name,
    series_number,
    tracking_uid,
)

logger = logging.getLogger(__name__)

# A planar region needs an area; around a point finding we draw a small square in the
# axial plane whose half-width is the long-axis radius (or 2 mm when unmeasured).
_DEFAULT_HALF_MM = 2.0


def _observation_context(signed: SignedStudy) -> hd.sr.ObservationContext:
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derive_uid("countyread-device", MANUFACTURER),
            name="CountyRead",
            manufacturer_name=MANUFACTURER,
            model_name=signed.model_key[:64],
        ),
    )
    if signed.preliminary:
        # An unreviewed alert: the algorithm is the only observer (TID 1002).
        return hd.sr.ObservationContext(observer_device_context=device)
    person = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=person_name(signed.reviewer.display_name),
            login_name=signed.reviewer.username,
            organization_name=REVIEW_CENTER,
        ),
    )
    return hd.sr.ObservationContext(observer_person_context=person, observer_device_context=device)


def _algorithm(finding: ConfirmedFinding) -> hd.sr.AlgorithmIdentification | None:
    if finding.model is None or finding.source != "ai":
        return None
    params = [f"sha256={finding.model.sha256}"] if finding.model.sha256 else None
    return hd.sr.AlgorithmIdentification(
        name=finding.model.name[:64], version=finding.model.version[:64], parameters=params
    )


def _measurements(finding: ConfirmedFinding) -> list[hd.sr.Measurement]:
    out = []
    algorithm = _algorithm(finding) if finding.verdict == "accepted" else None
    for m in finding.measurements:
        coded = measurement_concept(m.name, m.unit)
        if coded is None or not np.isfinite(m.value):
            logger.debug(
                "measurement without a UCUM unit left out",
                extra={"finding_id": finding.id, "measurement": m.name},
            )
            continue
        concept, qualifier, unit = coded
        out.append(
            hd.sr.Measurement(
                name=concept,
                value=round(float(m.value), 3),
                unit=unit,
                qualifier=qualifier,
                algorithm_id=algorithm,
            )
        )
    return out


def _square_around(center: tuple[float, float, float], finding: ConfirmedFinding) -> np.ndarray:
    long_axis = max(
        (m.value for m in finding.measurements if m.name.startswith("long_axis")), default=0.0
    )
    half = max(float(long_axis) / 2.0, _DEFAULT_HALF_MM)
    x, y, z = center
    return np.array(
        [
            [x - half, y - half, z],
            [x + half, y - half, z],
            [x + half, y + half, z],
            [x - half, y + half, z],
            [x - half, y - half, z],
        ],
        dtype=float,
    )


def _radiograph_circle(signed: SignedStudy, finding: ConfirmedFinding) -> hd.sr.ImageRegion | None:
    """A SCOORD CIRCLE on the radiograph for findings located in image pixels (DR)."""
    centre = finding.attribute("pixel_center")
    source = signed.source(finding.series_uid)
    if not centre or source is None or not finding.sop_instance_uid:
        return None
    header = source.header(finding.sop_instance_uid)
    try:
        col, row = (float(v) for v in centre.split(","))
    except ValueError:
        return None
    if header is None:
        return None
    diameter = next((m for m in finding.measurements if m.name == "diameter"), None)
    radius = 10.0
    spacing = header.get("PixelSpacing") or header.get("ImagerPixelSpacing")
    if diameter is not None and diameter.unit == "px":
        radius = diameter.value / 2.0
    elif diameter is not None and diameter.unit == "mm" and spacing:
        radius = diameter.value / 2.0 / float(spacing[1])
    # PS3.3 C.18.6.1.2: CIRCLE is the centre, then one point on the perimeter.
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.CIRCLE,
        graphic_data=np.array([[col, row], [col + max(radius, 1.0), row]]),
        source_image=hd.sr.SourceImageForRegion(str(header.SOPClassUID), finding.sop_instance_uid),
    )


def _group(
    signed: SignedStudy, finding: ConfirmedFinding, seg: Dataset | None, segment: int | None
) -> object:
    tracking = hd.sr.TrackingIdentifier(
        uid=tracking_uid(signed.study_uid, finding),
        identifier=f"{finding.kind}-{finding.number}"[:64],
    )
    attrs = dict(finding.attributes)
    common: dict[str, Any] = {
        "tracking_identifier": tracking,
        "finding_type": finding_type(finding.kind, attrs),
        "algorithm_id": _algorithm(finding),
        "finding_sites": finding_sites(finding.kind, attrs) or None,
        "measurements": _measurements(finding) or None,
        "qualitative_evaluations": qualitative(finding.kind, finding.category, attrs) or None,
    }
    if seg is not None and segment is not None and finding.series_uid:
        ref = hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=segment,
            source_series=hd.sr.SourceSeriesForSegmentation(finding.series_uid),
        )
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=ref, **common
        )
    source = signed.source(finding.series_uid)
    circle = _radiograph_circle(signed, finding)
    if circle is not None:
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=circle, **common
        )
    if finding.center_lps is not None and source is not None and source.frame_of_reference_uid:
        region = hd.sr.ImageRegion3D(
            graphic_type=hd.sr.GraphicTypeValues3D.POLYGON,
            graphic_data=_square_around(finding.center_lps, finding),
            frame_of_reference_uid=source.frame_of_reference_uid,
        )
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=region, **common
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(**common)


def _procedure(signed: SignedStudy) -> Code:
    """Procedure reported (TID 1500 row 4, CID 100): CT, or plain radiography for DX/CR."""
    first = signed.sources[0].at(0) if signed.sources and len(signed.sources[0]) else None
    modality = str(getattr(first, "Modality", "CT") or "CT").upper()
    return codes.SCT.PlainRadiography if modality in {"DX", "CR"} else codes.SCT.ComputedTomography


def build_sr(
    signed: SignedStudy,
    evidence: list[Dataset],
    seg: Dataset | None,
    segments: dict[int, int],
    previous: list[Dataset],
) -> Dataset:
    """Build the TID 1500 SR of ``signed``.

    Parameters
    ----------
    evidence
        Source instances to list in Current Requested Procedure Evidence (PS3.3 C.17.2.3);
        the first one supplies the study header.
    seg, segments
        The SEG built for this revision and finding id -> segment number.
    previous
        SR of earlier revisions of this study; they become Predecessor Documents
        (PS3.3 C.17.2.1), which is how an amendment supersedes the signed original.
    """
    groups = [_group(signed, f, seg, segments.get(f.id)) for f in signed.findings]
    if not groups:
        # TID 1500 needs one measurement group; the radiologist confirmed no finding.
        groups = [
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=signed.uid(Family.SR, "no-finding"), identifier="no confirmed finding"
                ),
                finding_type=NO_FINDING,
            )
        ]
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(signed),
        procedure_reported=_procedure(signed),
        imaging_measurements=groups,  # type: ignore[arg-type]
    )
    docs = ([seg] if seg is not None else []) + list(evidence)
    sr = hd.sr.Comprehensive3DSR(
        evidence=docs,
        content=report[0],
        series_instance_uid=signed.uid(Family.SR, "series"),
        series_number=series_number(Family.SR, signed.revision),
        sop_instance_uid=signed.uid(Family.SR, "instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        # An alert is PRELIMINARY and UNVERIFIED (PS3.3 C.17.2): no radiologist signed it.
        is_final=not signed.preliminary,
        is_verified=not signed.preliminary,
        institution_name=REVIEW_CENTER,
        verifying_observer_name=(
            None if signed.preliminary else person_name(signed.reviewer.display_name)),
        verifying_organization=None if signed.preliminary else REVIEW_CENTER,
        previous_versions=previous or None,
        contributing_equipment=contributing_equipment(signed.models),
        series_description=(
            "AI ALERT SR - not reviewed" if signed.preliminary
            else f"AI findings SR r{signed.revision}"),
        specific_character_set="ISO_IR 192",
    )
    apply_patient(sr, signed.patient)
    declare_private_scheme(sr)
    return sr
