"""Derive a study's status, urgency and deadline from its jobs and analyses."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from countyread.db import analyses, jobs, studies
from countyread.domain import JobState, StudyStatus, Urgency
from countyread.settings import Settings

#: Statuses owned by the review workflow; analysis never overrides them.
REVIEW_STATUSES = {StudyStatus.IN_REVIEW, StudyStatus.SIGNED, StudyStatus.DELIVERED}


def deadline_for(settings: Settings, urgency: Urgency, received: datetime) -> datetime:
    seconds = {
        Urgency.CRITICAL: settings.deadline_critical_s,
        Urgency.URGENT: settings.deadline_urgent_s,
        Urgency.ROUTINE: settings.deadline_routine_s,
    }[urgency]
    return received + timedelta(seconds=seconds)


def refresh_study_status(conn: Connection, settings: Settings, study_uid: str) -> StudyStatus:
    """Recompute status/urgency/deadline of one study inside the caller's transaction.

    Order of precedence: work still pending (queued/analyzing), then any ready analysis,
    then not-analyzable reasons, then failures. Review statuses are left alone.
    """
    study = conn.execute(select(studies).where(studies.c.study_uid == study_uid)).mappings().one()
    current = StudyStatus(study["status"])
    if current in REVIEW_STATUSES:
        return current
    job_states = {
        r[0] for r in conn.execute(select(jobs.c.state).where(jobs.c.study_uid == study_uid))
    }
    # Latest analysis per pipeline decides; older ones were superseded by re-analysis.
    latest: dict[str, dict[str, object]] = {}
    for row in conn.execute(
        select(analyses).where(analyses.c.study_uid == study_uid).order_by(analyses.c.id)
    ).mappings():
        latest[row["pipeline"]] = dict(row)

    values: dict[str, object] = {"reason": None}
    if JobState.RUNNING.value in job_states:
        status = StudyStatus.ANALYZING
    elif JobState.QUEUED.value in job_states:
        status = StudyStatus.QUEUED
    elif any(a["status"] == StudyStatus.READY.value for a in latest.values()):
        status = StudyStatus.READY
        ranks = [
            Urgency(str(a["urgency"]))
            for a in latest.values()
            if a["status"] == StudyStatus.READY.value and a["urgency"]
        ]
        urgency = min(ranks, key=lambda u: u.rank) if ranks else Urgency.ROUTINE
        values["urgency"] = urgency.value
        values["deadline_at"] = deadline_for(settings, urgency, study["first_received_at"])
    elif any(a["status"] == StudyStatus.NOT_ANALYZABLE.value for a in latest.values()):
        status = StudyStatus.NOT_ANALYZABLE
        values["reason"] = "; ".join(
            str(a["reason"])
            for a in latest.values()
            if a["status"] == StudyStatus.NOT_ANALYZABLE.value and a["reason"]
        )
    elif any(a["status"] == StudyStatus.FAILED.value for a in latest.values()):
        status = StudyStatus.FAILED
        values["reason"] = "; ".join(
            str(a["reason"])
            for a in latest.values()
            if a["status"] == StudyStatus.FAILED.value and a["reason"]
        )
    elif JobState.NO_PIPELINE.value in job_states:
        status = StudyStatus.NOT_ANALYZABLE
        values["reason"] = "no pipeline for this series"
    else:
        status = StudyStatus.RECEIVED
    if status in (StudyStatus.NOT_ANALYZABLE, StudyStatus.FAILED):
        # Unanalysed studies still need a radiologist: routine deadline, listed as such.
        values["urgency"] = Urgency.ROUTINE.value
        values["deadline_at"] = deadline_for(settings, Urgency.ROUTINE, study["first_received_at"])
    values["status"] = status.value
    conn.execute(update(studies).where(studies.c.study_uid == study_uid).values(**values))
    return status
