"""API schemas (pydantic): the public shape of studies, findings, reports and the rest.

They are kept apart from the database tables so the stable REST surface (issue 4, 7) does
not move when a column does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from countyread.domain import NodeKind, Role, StudyStatus, Urgency

_FREE_TEXT = 20_000
AttrValue = str | float | int | bool | None


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    username: str
    role: Role


class UserPublic(BaseModel):
    id: int
    username: str
    display_name: str | None
    role: Role
    node_id: int | None
    active: bool


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(min_length=8, max_length=256)
    role: Role
    display_name: str | None = Field(default=None, max_length=128)
    node_id: int | None = None


class Measurement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    value: float = Field(allow_inf_nan=False)
    unit: str = Field(max_length=32)


class FindingPublic(BaseModel):
    id: int
    study_uid: str
    analysis_id: int | None
    kind: str
    source: Literal["ai", "radiologist"] | str
    probability: float | None
    center_lps: list[float] | None = Field(description="[x, y, z] in patient LPS mm")
    series_uid: str | None
    sop_instance_uid: str | None
    measurements: list[Measurement]
    category: str | None
    attributes: dict[str, Any]
    model: dict[str, Any] | None
    verdict: Literal["pending", "accepted", "rejected", "edited"]
    revision: int
    reviewed_by: str | None
    reviewed_at: datetime | None
    comment: str | None
    key_image_url: str | None


class FindingReview(BaseModel):
    """A verdict on one finding; edited fields are allowed with verdict ``edited`` only."""

    model_config = ConfigDict(extra="forbid")
    verdict: Literal["accepted", "rejected", "edited"]
    kind: str | None = Field(default=None, min_length=1, max_length=32)
    measurements: list[Measurement] | None = Field(default=None, max_length=64)
    category: str | None = Field(default=None, max_length=16)
    attributes: dict[str, AttrValue] | None = Field(
        default=None, max_length=64,
        description="merged into the finding's attributes (type, location, vessel, grade, ...)"
    )
    center_lps: list[float] | None = Field(default=None, min_length=3, max_length=3)
    comment: str | None = Field(default=None, max_length=2000)


class FindingCreate(BaseModel):
    """A finding the AI missed, added by the reviewing radiologist."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(min_length=1, max_length=32)
    center_lps: list[float] | None = Field(default=None, min_length=3, max_length=3)
    series_uid: str | None = Field(default=None, max_length=64, pattern=r"^[0-9.]+$")
    sop_instance_uid: str | None = Field(default=None, max_length=64, pattern=r"^[0-9.]+$")
    measurements: list[Measurement] = Field(default_factory=list, max_length=64)
    category: str | None = Field(default=None, max_length=16)
    attributes: dict[str, AttrValue] = Field(default_factory=dict, max_length=64)
    comment: str | None = Field(default=None, max_length=2000)


class FindingRevisionPublic(BaseModel):
    revision: int
    verdict: str
    snapshot: dict[str, Any]
    comment: str | None
    changed_by: str
    changed_at: datetime


class SeriesPublic(BaseModel):
    series_uid: str
    modality: str | None
    series_number: int | None
    series_description: str | None
    body_part: str | None
    instance_count: int
    expected_count: int | None
    state: str
    first_received_at: datetime
    last_received_at: datetime
    stable_at: datetime | None


class JobPublic(BaseModel):
    id: int
    kind: str
    series_uid: str | None
    pipeline: str | None
    state: str
    attempts: int
    message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class AnalysisPublic(BaseModel):
    id: int
    series_uid: str
    pipeline: str
    status: str
    reason: str | None
    urgency: str | None
    category: str | None
    recommendation: str | None
    models: list[dict[str, Any]]
    notes: list[Any]
    timings_ms: dict[str, Any]
    created_at: datetime
    image_urls: list[str]


class StudySummary(BaseModel):
    study_uid: str
    patient_name: str | None
    patient_id: str | None
    patient_sex: str | None
    patient_birth_date: str | None
    accession_number: str | None
    study_date: str | None
    study_description: str | None
    modalities: str
    source_ae: str | None
    source_node_id: int | None
    status: StudyStatus
    reason: str | None
    urgency: Urgency | None
    deadline_at: datetime | None
    overdue: bool
    first_received_at: datetime
    last_received_at: datetime
    claimed_by: str | None = Field(description="holder of an unexpired claim, else null")
    claim_expires_at: datetime | None
    revision: int
    # Filled on worklist pages only (one extra query per page): what the list shows
    # so a radiologist can pick without opening each study.
    source_node_name: str | None = Field(
        default=None, description="township hospital the study came from (worklist only)")
    ai_category: str | None = Field(
        default=None, description="category of the latest finished AI analysis, e.g. "
        "Lung-RADS 4B or a stenosis grade (worklist only)")
    finding_count: int | None = Field(
        default=None, description="findings not rejected: AI and radiologist-added "
        "(worklist only)")


class StudyDetail(StudySummary):
    series: list[SeriesPublic]
    jobs: list[JobPublic]
    analyses: list[AnalysisPublic]
    findings: list[FindingPublic]


class StudyPage(BaseModel):
    items: list[StudySummary]
    total: int
    offset: int
    limit: int


class ClaimPublic(BaseModel):
    study_uid: str
    status: StudyStatus
    claimed_by: str | None
    claim_expires_at: datetime | None


class ReportPublic(BaseModel):
    study_uid: str
    state: Literal["generated", "draft", "signed"] = Field(
        description="generated: fresh from findings, not saved; draft: saved edits; signed"
    )
    language: Literal["zh", "en"]
    findings_text: str
    impression_text: str
    findings_text_en: str
    impression_text_en: str
    lung_rads: str | None
    revision: int
    signed_by: str | None
    signed_at: datetime | None
    updated_by: str | None
    updated_at: datetime | None


class ReportUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    language: Literal["zh", "en"] | None = None
    findings_text: str | None = Field(default=None, max_length=_FREE_TEXT)
    impression_text: str | None = Field(default=None, max_length=_FREE_TEXT)
    findings_text_en: str | None = Field(default=None, max_length=_FREE_TEXT)
    impression_text_en: str | None = Field(default=None, max_length=_FREE_TEXT)


class SignResult(BaseModel):
    study_uid: str
    status: StudyStatus
    revision: int
    signed_by: str
    signed_at: datetime
    delivery_ids: list[int]
    delivery_error: str | None = None


class DeliveryPublic(BaseModel):
    id: int
    node_id: int
    node_name: str | None
    ae_title: str | None
    revision: int
    state: str
    attempts: int
    last_error: str | None
    objects: list[Any]
    next_attempt_at: datetime
    created_at: datetime
    sent_at: datetime | None


class NodePublic(BaseModel):
    id: int
    name: str
    ae_title: str
    host: str | None
    port: int | None
    kind: NodeKind
    send: list[str]
    active: bool
    can_receive: bool


class NodeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    ae_title: str = Field(min_length=1, max_length=16)
    host: str | None = Field(default=None, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    kind: NodeKind = NodeKind.TOWNSHIP
    #: ALERT: consent to unreviewed urgent alerts before sign-off (dicom_node/alerts.py).
    send: list[Literal["SR", "SEG", "SC", "KOS", "RENDER", "ALERT"]] | None = None


class AuditPublic(BaseModel):
    id: int
    at: datetime
    username: str | None
    action: str
    study_uid: str | None
    detail: dict[str, Any]
    client: str | None


class AuditPage(BaseModel):
    items: list[AuditPublic]
    total: int
    offset: int
    limit: int


class Health(BaseModel):
    status: Literal["ok"]
    database: str


class SlicePublic(BaseModel):
    index: int
    sop_instance_uid: str
    frame: int | None = Field(description="frame number (0-based) inside a multi-frame")
    instance_number: int
    position: list[float] | None = Field(
        description="Image Position (Patient): LPS mm of the first pixel's centre")


class SeriesGeometry(BaseModel):
    """How the viewer shows a series, and how to place an LPS point on it."""

    series_uid: str
    study_uid: str
    modality: str | None
    kind: Literal["volume", "projection", "stack"] = Field(
        description="volume: sorted along the normal as the analysis sorts; projection: a "
        "radiograph (finding points are in-plane mm from the top-left pixel); stack: "
        "geometry refused, shown in Instance Number order")
    rows: int
    columns: int
    slice_count: int
    pixel_spacing: list[float] | None = Field(description="(row, column) spacing in mm")
    orientation: list[float] | None = Field(
        description="Image Orientation (Patient): row direction then column direction")
    affine: list[list[float]] | None = Field(
        description="4x4: (column, row, slice, 1) -> LPS mm (volume only)")
    windows: dict[str, list[float]] = Field(description="preset name -> [centre, width] HU")
    default_window: str
    slices: list[SlicePublic]
    notes: list[str]
