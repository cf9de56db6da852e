"""The worklist query: urgency rank, then deadline, fast on 100,000 studies.

One ``ORDER BY CASE urgency ...`` over the whole table makes the database sort every
worklist row on each request. Instead the page is cut out of per-urgency slices, each
read in deadline order from the ``(status, urgency, deadline_at)`` index, after counting
the slices (an index-only count); a page touches at most ``offset + limit`` rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, literal, or_, select, union_all, update
from sqlalchemy.engine import Connection

from api.deps import User
from api.queries import visible_to
from countyread.db import studies
from countyread.domain import StudyStatus, Urgency
from countyread.settings import Settings
from countyread.status import deadline_for

WORKLIST_STATUSES = (StudyStatus.READY.value, StudyStatus.IN_REVIEW.value,
                     StudyStatus.NOT_ANALYZABLE.value)
URGENCY_ORDER = (Urgency.CRITICAL, Urgency.URGENT, Urgency.ROUTINE)


@dataclass(frozen=True, slots=True)
class StudyFilter:
    statuses: tuple[str, ...] = ()
    modality: str | None = None
    node_id: int | None = None
    urgency: Urgency | None = None
    date_from: date | None = None
    date_to: date | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.statuses:
            out.append(studies.c.status.in_(self.statuses))
        if self.modality:
            # modalities is a backslash-joined list such as "CT\SR" (PS3.5 6.4 VM > 1).
            m = self.modality.upper()
            out.append(or_(studies.c.modalities == m,
                           studies.c.modalities.like(f"{m}\\%", escape="!"),
                           studies.c.modalities.like(f"%\\{m}", escape="!"),
                           studies.c.modalities.like(f"%\\{m}\\%", escape="!")))
        if self.node_id is not None:
            out.append(studies.c.source_node_id == self.node_id)
        if self.urgency is not None:
            out.append(studies.c.urgency == self.urgency.value)
        # Dates filter on arrival (first_received_at, UTC): StudyDate is often missing or
        # wrong on township consoles, the arrival time never is.
        if self.date_from is not None:
            out.append(studies.c.first_received_at >= _utc_midnight(self.date_from))
        if self.date_to is not None:
            out.append(studies.c.first_received_at
                       < _utc_midnight(self.date_to) + timedelta(days=1))
        return out


def _utc_midnight(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=UTC)


def backfill_deadlines(conn: Connection, settings: Settings, limit: int = 500) -> int:
    """Give worklist studies without urgency/deadline a deadline counted from arrival.

    The analysis worker sets both; this covers rows written by older versions or by hand,
    so the per-urgency slices of :func:`worklist_page` never miss a study. Both lookups
    are prefix ranges of the ``(status, urgency, deadline_at)`` index (an ``OR`` of the
    two conditions would scan every waiting study on each request).
    """
    cols = (studies.c.study_uid, studies.c.urgency, studies.c.first_received_at)
    waiting = studies.c.status.in_(WORKLIST_STATUSES)
    rows = list(conn.execute(select(*cols).where(waiting, studies.c.urgency.is_(None))
                             .limit(limit)).all())
    rows += conn.execute(select(*cols).where(
        waiting, studies.c.urgency.in_([u.value for u in URGENCY_ORDER]),
        studies.c.deadline_at.is_(None)).limit(limit)).all()
    for uid, urgency, received in rows:
        conn.execute(update(studies).where(studies.c.study_uid == uid).values(
            urgency=urgency or Urgency.ROUTINE.value,
            deadline_at=deadline_for(settings, Urgency(urgency or "routine"), received)))
    return len(rows)


def worklist_page(
    conn: Connection, user: User, flt: StudyFilter, offset: int, limit: int,
) -> tuple[list[Mapping[Any, Any]], int]:
    """Rows of one worklist page and the total, in urgency-then-deadline order.

    Each (status, urgency) pair is one range of the ``(status, urgency, deadline_at)``
    index, already in deadline order; the page is the merge of the first
    ``offset + limit`` rows of every range, so neither database sorts the whole list.
    """
    statuses = tuple(s for s in flt.statuses if s in WORKLIST_STATUSES) or WORKLIST_STATUSES
    urgencies: Sequence[Urgency] = (flt.urgency,) if flt.urgency else URGENCY_ORDER
    extra = [*StudyFilter((), flt.modality, flt.node_id, None, flt.date_from,
                          flt.date_to).clauses(), visible_to(user)]
    total = conn.execute(select(func.count()).select_from(studies).where(
        studies.c.status.in_(statuses), studies.c.urgency.in_([u.value for u in urgencies]),
        *extra)).scalar_one()
    if offset >= total:
        return [], int(total)
    parts = []
    for u in urgencies:
        for s in statuses:
            part = (select(studies.c.study_uid, studies.c.deadline_at,
                           literal(u.rank).label("rank"))
                    .where(studies.c.status == s, studies.c.urgency == u.value, *extra)
                    .order_by(studies.c.deadline_at).limit(offset + limit).subquery())
            parts.append(select(part.c.study_uid, part.c.deadline_at, part.c.rank))
    merged = union_all(*parts).subquery()
    uids = conn.execute(
        select(merged.c.study_uid)
        .order_by(merged.c.rank, merged.c.deadline_at, merged.c.study_uid)
        .offset(offset).limit(limit)
    ).scalars().all()
    by_uid = {r["study_uid"]: r for r in conn.execute(
        select(studies).where(studies.c.study_uid.in_(uids))).mappings()}
    return [by_uid[u] for u in uids if u in by_uid], int(total)


def study_page(
    conn: Connection, user: User, flt: StudyFilter, offset: int, limit: int,
) -> tuple[list[Mapping[Any, Any]], int]:
    """All studies (any status), newest arrival first."""
    where = [*flt.clauses(), visible_to(user)]
    total = conn.execute(select(func.count()).select_from(studies).where(*where)).scalar_one()
    rows = conn.execute(
        select(studies).where(*where)
        .order_by(studies.c.first_received_at.desc(), studies.c.study_uid)
        .offset(offset).limit(limit)
    ).mappings().all()
    return list(rows), int(total)
