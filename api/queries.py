"""Reading studies for the API: visibility rules and row-to-schema conversion."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, false, select, true
from sqlalchemy.engine import Connection

from api.deps import User
from api.schemas import (
    AnalysisPublic,
    FindingPublic,
    JobPublic,
    Measurement,
    SeriesPublic,
    StudyDetail,
    StudySummary,
)
from countyread.db import analyses, findings, jobs, series, studies, utcnow
from countyread.domain import Urgency
from countyread.errors import NotFoundError
from countyread.settings import Settings
from countyread.status import deadline_for
from countyread.uids import validate_uid


def visible_to(user: User) -> ColumnElement[bool]:
    """Row filter: technologists see only their own township's studies."""
    if user.is_technologist:
        if user.node_id is None:
            return false()
        return studies.c.source_node_id == user.node_id
    return true()


def load_study(conn: Connection, user: User, study_uid: str) -> Mapping[Any, Any]:
    """The study row, or NotFoundError when it does not exist *or* is not visible.

    A technologist asking for another township's study gets the same 404 as for a
    missing one, so study UIDs of other townships cannot be probed.
    """
    validate_uid(study_uid, "study UID")
    row = conn.execute(
        select(studies).where(studies.c.study_uid == study_uid, visible_to(user))
    ).mappings().first()
    if row is None:
        raise NotFoundError(f"study {study_uid} not found")
    return row


def active_claimant(row: Mapping[Any, Any], now: datetime | None = None) -> str | None:
    expires = row["claim_expires_at"]
    if row["claimed_by"] and expires is not None and expires > (now or utcnow()):
        return str(row["claimed_by"])
    return None


def effective_deadline(settings: Settings, row: Mapping[Any, Any]) -> datetime | None:
    if row["deadline_at"] is not None:
        return row["deadline_at"]  # type: ignore[no-any-return]
    if row["status"] not in ("ready", "in_review", "not_analyzable"):
        return None
    urgency = Urgency(row["urgency"]) if row["urgency"] else Urgency.ROUTINE
    return deadline_for(settings, urgency, row["first_received_at"])


def study_summary(settings: Settings, row: Mapping[Any, Any]) -> StudySummary:
    now = utcnow()
    claimant = active_claimant(row, now)
    deadline = effective_deadline(settings, row)
    return StudySummary(
        study_uid=row["study_uid"], patient_name=row["patient_name"],
        patient_id=row["patient_id"], patient_sex=row["patient_sex"],
        patient_birth_date=row["patient_birth_date"],
        accession_number=row["accession_number"], study_date=row["study_date"],
        study_description=row["study_description"], modalities=row["modalities"] or "",
        source_ae=row["source_ae"], source_node_id=row["source_node_id"],
        status=row["status"], reason=row["reason"], urgency=row["urgency"],
        deadline_at=deadline,
        overdue=bool(deadline and deadline < now
                     and row["status"] in ("ready", "in_review", "not_analyzable")),
        first_received_at=row["first_received_at"], last_received_at=row["last_received_at"],
        claimed_by=claimant, claim_expires_at=row["claim_expires_at"] if claimant else None,
        revision=row["revision"],
    )


def finding_public(row: Mapping[Any, Any]) -> FindingPublic:
    center = None
    if row["center_x"] is not None:
        center = [row["center_x"], row["center_y"], row["center_z"]]
    return FindingPublic(
        id=row["id"], study_uid=row["study_uid"], analysis_id=row["analysis_id"],
        kind=row["kind"], source=row["source"], probability=row["probability"],
        center_lps=center, series_uid=row["series_uid"],
        sop_instance_uid=row["sop_instance_uid"],
        measurements=[Measurement(**m) for m in row["measurements"] or []],
        category=row["category"], attributes=dict(row["attributes"] or {}),
        model=row["model"], verdict=row["verdict"], revision=row["revision"],
        reviewed_by=row["reviewed_by"], reviewed_at=row["reviewed_at"],
        comment=row["comment"],
        key_image_url=f"/api/findings/{row['id']}/image" if row["key_image"] else None,
    )


def study_findings(conn: Connection, study_uid: str) -> list[Mapping[Any, Any]]:
    return list(conn.execute(
        select(findings).where(findings.c.study_uid == study_uid).order_by(findings.c.id)
    ).mappings())


def study_detail(conn: Connection, settings: Settings, row: Mapping[Any, Any]) -> StudyDetail:
    uid = row["study_uid"]
    ser = conn.execute(
        select(series).where(series.c.study_uid == uid)
        .order_by(series.c.series_number, series.c.series_uid)
    ).mappings()
    job_rows = conn.execute(select(jobs).where(jobs.c.study_uid == uid).order_by(jobs.c.id))
    ana = conn.execute(
        select(analyses).where(analyses.c.study_uid == uid).order_by(analyses.c.id)
    ).mappings()
    from api.images import analysis_image_names  # local: images imports nothing back

    return StudyDetail(
        **study_summary(settings, row).model_dump(),
        series=[SeriesPublic.model_validate(dict(s)) for s in ser],
        jobs=[JobPublic.model_validate(dict(j)) for j in job_rows.mappings()],
        analyses=[
            AnalysisPublic(
                **{k: a[k] for k in ("id", "series_uid", "pipeline", "status", "reason",
                                     "urgency", "category", "recommendation", "created_at")},
                models=list(a["models"] or []), notes=list(a["notes"] or []),
                timings_ms=dict(a["timings_ms"] or {}),
                image_urls=[f"/api/analyses/{a['id']}/images/{n}"
                            for n in analysis_image_names(a["artifacts_dir"])],
            )
            for a in ana
        ],
        findings=[finding_public(f) for f in study_findings(conn, uid)],
    )
