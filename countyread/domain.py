"""Domain types shared by every package: frozen, slotted, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt


class StudyStatus(enum.StrEnum):
    """Lifecycle of a study, as reported by ``GET /api/studies/{uid}``."""

    RECEIVED = "received"
    QUEUED = "queued"
    ANALYZING = "analyzing"
    READY = "ready"
    NOT_ANALYZABLE = "not_analyzable"
    FAILED = "failed"
    IN_REVIEW = "in_review"
    SIGNED = "signed"
    DELIVERED = "delivered"


class Urgency(enum.StrEnum):
    CRITICAL = "critical"
    URGENT = "urgent"
    ROUTINE = "routine"

    @property
    def rank(self) -> int:
        """Sort key: lower is more urgent."""
        return {"critical": 0, "urgent": 1, "routine": 2}[self.value]


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    NOT_ANALYZABLE = "not_analyzable"
    NO_PIPELINE = "no_pipeline"
    SUPERSEDED = "superseded"


class Verdict(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    EDITED = "edited"


class Role(enum.StrEnum):
    RADIOLOGIST = "radiologist"
    TECHNOLOGIST = "technologist"
    ADMIN = "admin"


class NodeKind(enum.StrEnum):
    TOWNSHIP = "township"
    PACS = "pacs"


@dataclass(frozen=True, slots=True)
class Volume:
    """A 3-D image with one 4x4 affine from voxel (k, j, i) indices to patient LPS mm.

    ``array`` is indexed ``[slice, row, column]``; the affine maps the homogeneous index
    vector ``(column, row, slice, 1)`` to LPS, as DICOM's Image Position / Orientation do
    (PS3.3 C.7.6.2.1.1). Spacing and direction are derived, never stored twice.
    """

    array: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]
    frame_of_reference_uid: str | None = None
    series_uid: str | None = None
    sop_instance_uids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"array must be 3-D, got shape {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.sop_instance_uids and len(self.sop_instance_uids) != self.array.shape[0]:
            raise ValueError("sop_instance_uids must name one instance per slice")

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.array.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Spacing in mm as (slice, row, column), matching the array axes."""
        col, row, sl = (float(np.linalg.norm(self.affine[:3, i])) for i in range(3))
        return (sl, row, col)

    @property
    def direction(self) -> npt.NDArray[np.float64]:
        """Unit direction cosines as columns (column axis, row axis, slice axis)."""
        m = self.affine[:3, :3]
        return np.asarray(m / np.linalg.norm(m, axis=0), dtype=np.float64)

    @property
    def origin(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.affine[:3, 3], dtype=np.float64)

    def index_to_lps(self, kji: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map (slice, row, column) indices (N x 3 or 3) to LPS mm."""
        idx = np.atleast_2d(np.asarray(kji, dtype=np.float64))
        ijk1 = np.c_[idx[:, 2], idx[:, 1], idx[:, 0], np.ones(len(idx))]
        out = (self.affine @ ijk1.T).T[:, :3]
        return out[0] if np.ndim(kji) == 1 else out

    def lps_to_index(self, lps: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map LPS mm points (N x 3 or 3) to fractional (slice, row, column) indices."""
        pts = np.atleast_2d(np.asarray(lps, dtype=np.float64))
        inv = np.linalg.inv(self.affine)
        ijk = (inv @ np.c_[pts, np.ones(len(pts))].T).T[:, :3]
        out = ijk[:, ::-1]
        return out[0] if np.ndim(lps) == 1 else out

    def with_array(self, array: npt.NDArray[Any]) -> Volume:
        """Same geometry, other voxels (e.g. a mask)."""
        return Volume(
            array,
            self.affine,
            self.frame_of_reference_uid,
            self.series_uid,
            self.sop_instance_uids,
        )


@dataclass(frozen=True, slots=True)
class Measurement:
    """A named value with its UCUM unit, e.g. ("mean_diameter", 7.4, "mm")."""

    name: str
    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Provenance of a model that produced a finding."""

    name: str
    version: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Finding:
    """One AI (or radiologist-added) finding in patient coordinates."""

    kind: str
    probability: float
    center_lps: tuple[float, float, float]
    series_uid: str
    sop_instance_uid: str | None
    measurements: tuple[Measurement, ...] = ()
    category: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    model: ModelRef | None = None
    key_image: str | None = None

    def measurement(self, name: str) -> float | None:
        for m in self.measurements:
            if m.name == name:
                return m.value
        return None

    def attribute(self, name: str) -> str | None:
        return dict(self.attributes).get(name)


@dataclass(frozen=True, slots=True)
class AnalysisResult:
    """What one pipeline concluded about one series."""

    pipeline: str
    series_uid: str
    study_uid: str
    findings: tuple[Finding, ...]
    urgency: Urgency
    category: str | None = None
    recommendation: str | None = None
    not_analyzable_reason: str | None = None
    notes: tuple[str, ...] = ()
    timings_ms: tuple[tuple[str, float], ...] = ()
    models: tuple[ModelRef, ...] = ()


@dataclass(frozen=True, slots=True)
class Review:
    """A radiologist's verdict on one finding, at one revision."""

    finding_id: int
    reviewer: str
    at: datetime
    verdict: Verdict
    edits: dict[str, Any] = field(default_factory=dict)
    comment: str | None = None
