"""What every result object shares: the signed-study inputs, UIDs, series numbers, provenance.

Output UIDs are derived, never random (DESIGN.md section 4, "Results are idempotent"):
``derive_uid(study, family, role, model versions, revision, ...)`` gives the same UID
for a retry or a rebuild of the same signed revision and a new one for a new revision.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from countyread import __version__
from countyread.domain import Measurement, ModelRef
from countyread.uids import derive_uid

#: Manufacturer written into every object we create (General Equipment, PS3.3 C.7.5.1).
MANUFACTURER = "CountyRead"
#: The verifying organisation named in SR VerifyingObserverSequence (PS3.3 C.17.2).
REVIEW_CENTER = "县域影像诊断中心 County Review Center"
#: SpecificCharacterSet of every object: UTF-8, so GB18030 names survive (PS3.3 C.12.1.1.2).
CHARSET = "ISO_IR 192"


class Family(enum.StrEnum):
    """Object families a node can choose to receive (countyread.nodes.OBJECT_FAMILIES)."""

    SR = "SR"
    SEG = "SEG"
    SC = "SC"
    KOS = "KOS"
    RENDER = "RENDER"


# Deterministic series numbers: 9000-block per family, revision in the last digits, so a
# console lists our series after the scanner's and an amended report sorts after the first.
_SERIES_BASE = {
    Family.SR: 9100,
    Family.SEG: 9200,
    Family.SC: 9300,
    Family.KOS: 9400,
    Family.RENDER: 9500,
}


def series_number(family: Family, revision: int, offset: int = 0) -> int:
    """Series number of ``family`` at ``revision``; ``offset`` separates RENDER series."""
    return _SERIES_BASE[family] + offset * 10 + revision % 10


@dataclass(frozen=True, slots=True)
class PatientInfo:
    """Patient/study header from the ``studies`` row (names already decoded to str)."""

    name: str | None
    patient_id: str | None
    birth_date: str | None
    sex: str | None
    accession_number: str | None
    study_date: str | None
    study_time: str | None
    study_description: str | None


@dataclass(frozen=True, slots=True)
class Reviewer:
    username: str
    display_name: str


@dataclass(frozen=True, slots=True)
class CroppedMask:
    """A boolean mask cropped to ``offset`` (k0, j0, i0) in the source series grid."""

    array: npt.NDArray[np.bool_]
    offset: tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class ConfirmedFinding:
    """A finding the radiologist accepted, edited or added, as signed."""

    id: int
    analysis_id: int | None
    number: int  # 1-based position in the report: tracking identifier and segment number
    kind: str
    source: str  # 'ai' or 'radiologist'
    verdict: str
    series_uid: str | None
    sop_instance_uid: str | None
    center_lps: tuple[float, float, float] | None
    measurements: tuple[Measurement, ...]
    attributes: tuple[tuple[str, str], ...]
    category: str | None
    model: ModelRef | None
    key_image: Path | None
    mask: CroppedMask | None
    comment: str | None

    def attribute(self, name: str) -> str | None:
        return dict(self.attributes).get(name)


@dataclass(frozen=True, slots=True)
class SourceSeries:
    """A stored source series in slice order; headers (no pixel data) read on demand.

    Only the slices an output references are ever parsed, which keeps building a
    result for a 300-slice CT well below a second.
    """

    series_uid: str
    frame_of_reference_uid: str | None
    sop_uids: tuple[str, ...]
    paths: dict[str, Path]
    cache: dict[str, Dataset] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.sop_uids)

    def header(self, sop_uid: str) -> Dataset | None:
        if sop_uid not in self.paths:
            return None
        if sop_uid not in self.cache:
            self.cache[sop_uid] = pydicom.dcmread(self.paths[sop_uid], stop_before_pixels=True)
        return self.cache[sop_uid]

    def at(self, index: int) -> Dataset:
        ds = self.header(self.sop_uids[index])
        assert ds is not None
        return ds


@dataclass(frozen=True, slots=True)
class SignedStudy:
    """Everything the builders need, loaded once from the database and the store."""

    study_uid: str
    revision: int
    patient: PatientInfo
    reviewer: Reviewer
    signed_at: datetime | None
    findings: tuple[ConfirmedFinding, ...]
    sources: tuple[SourceSeries, ...]
    models: tuple[ModelRef, ...]
    report_text: str | None = None
    #: (pipeline, analysis artifacts dir) of the analyses behind the findings, where
    #: plug-in series builders (CTA renders) find their images.
    artifacts: tuple[tuple[str, Path], ...] = ()
    #: An unreviewed AI alert sent before sign-off (revision 0): unverified, said so.
    preliminary: bool = False

    @property
    def model_key(self) -> str:
        """The model versions that shaped this result, part of every output UID."""
        return ",".join(sorted(f"{m.name}@{m.version}" for m in self.models)) or "manual"

    def source(self, series_uid: str | None) -> SourceSeries | None:
        for s in self.sources:
            if s.series_uid == series_uid:
                return s
        return None

    def uid(self, family: Family, role: str, *extra: str | int) -> str:
        """Deterministic UID of one output (a series or an instance)."""
        return derive_uid(
            "countyread-result",
            self.study_uid,
            family.value,
            role,
            self.model_key,
            self.revision,
            *extra,
        )


def person_name(display: str) -> str:
    """A PN value: a bare display name becomes the family-name component (PS3.5 6.2.1.2)."""
    return display if "^" in display else f"{display}^"


def tracking_uid(study_uid: str, finding: ConfirmedFinding) -> str:
    """Stable across revisions, so a finding keeps its identity when a report is amended."""
    return derive_uid("countyread-tracking", study_uid, finding.id)


def contributing_equipment(models: tuple[ModelRef, ...]) -> list[hd.ContributingEquipment]:
    """IHE AI Results: one Contributing Equipment item per model (PS3.3 C.12.1.1.5).

    The model's sha256 (64 hex characters, the LO limit) goes in DeviceSerialNumber so a
    PACS can tell two builds of the same version apart.
    """
    items = [
        hd.ContributingEquipment(
            manufacturer=MANUFACTURER,
            purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name=m.name[:64],
            software_versions=m.version[:64],
            device_serial_number=m.sha256[:64],
            contribution_description=f"AI model {m.name} {m.version} sha256:{m.sha256}",
        )
        for m in models
    ]
    items.append(
        hd.ContributingEquipment(
            manufacturer=MANUFACTURER,
            purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name="CountyRead results builder",
            software_versions=__version__,
        )
    )
    return items


def apply_patient(ds: Dataset, patient: PatientInfo) -> None:
    """Write the decoded patient/study header in UTF-8 (PS3.5 6.1.2.3)."""
    ds.SpecificCharacterSet = CHARSET
    ds.PatientName = patient.name or ""
    ds.PatientID = patient.patient_id or ""
    ds.PatientBirthDate = patient.birth_date or ""
    ds.PatientSex = patient.sex if patient.sex in {"M", "F", "O"} else ""
    ds.AccessionNumber = patient.accession_number or ""
