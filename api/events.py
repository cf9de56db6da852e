"""Worklist change detection for server-sent events, by polling a cheap signature.

Several processes write studies (DICOM node, workers, API), so an in-process event bus
would miss changes; instead each stream polls a few index-only aggregates once a second
and emits an event when they change.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from api.worklist import WORKLIST_STATUSES
from countyread.db import analyses, finding_revisions, studies


def worklist_signature(conn: Connection) -> dict[str, Any]:
    """Counts per (status, urgency) on the worklist, plus the newest rows that move it."""
    counts = conn.execute(
        select(studies.c.status, studies.c.urgency, func.count())
        .where(studies.c.status.in_(WORKLIST_STATUSES))
        .group_by(studies.c.status, studies.c.urgency)
    ).all()
    claim = conn.execute(
        select(func.max(studies.c.claim_expires_at), func.count(studies.c.claimed_by))
        .where(studies.c.status == "in_review")
    ).one()
    return {
        "counts": {f"{s}:{u}": int(n) for s, u, n in sorted(counts, key=str)},
        "newest_arrival": str(conn.execute(
            select(func.max(studies.c.first_received_at))).scalar()),
        "last_analysis": conn.execute(select(func.max(analyses.c.id))).scalar(),
        "last_review": conn.execute(select(func.max(finding_revisions.c.id))).scalar(),
        "claims": [str(claim[0]), int(claim[1])],
    }


def critical_waiting(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(studies).where(
        studies.c.status.in_(("ready", "not_analyzable")), studies.c.urgency == "critical",
    )).scalar_one())
