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

from sqlalchemy import ColumnElement, and_, func, or_, select, update
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
    so the per-urgency slices of :func:`worklist_page` never miss a study.
    """
    rows = conn.execute(
        select(studies.c.study_uid, studies.c.urgency, studies.c.first_received_at)
        .where(studies.c.status.in_(WORKLIST_STATUSES),
               or_(studies.c.deadline_at.is_(None), studies.c.urgency.is_(None)))
        .limit(limit)
    ).all()
    for uid, urgency, received in rows:
        conn.execute(update(studies).where(studies.c.study_uid == uid).values(
            urgency=urgency or Urgency.ROUTINE.value,
            deadline_at=deadline_for(settings, Urgency(urgency or "routine"), received)))
    return len(rows)


def worklist_page(
    conn: Connection, user: User, flt: StudyFilter, offset: int, limit: int,
) -> tuple[list[Mapping[Any, Any]], int]:
    """Rows of one worklist page and the total, in urgency-then-deadline order."""
    statuses = tuple(s for s in flt.statuses if s in WORKLIST_STATUSES) or WORKLIST_STATUSES
    base = [*StudyFilter(statuses, flt.modality, flt.node_id, None, flt.date_from,
                         flt.date_to).clauses(), visible_to(user)]
    urgencies: Sequence[Urgency] = (flt.urgency,) if flt.urgency else URGENCY_ORDER
    counts: dict[str | None, int] = dict(conn.execute(
        select(studies.c.urgency, func.count()).where(*base).group_by(studies.c.urgency)
    ).tuples().all())
    total = sum(int(counts.get(u.value, 0)) for u in urgencies)
    items: list[Mapping[Any, Any]] = []
    skip = offset
    for u in urgencies:
        n = int(counts.get(u.value, 0))
        if skip >= n:
            skip -= n
            continue
        want = limit - len(items)
        if want <= 0:
            break
        items += conn.execute(
            select(studies).where(and_(*base, studies.c.urgency == u.value))
            .order_by(studies.c.deadline_at, studies.c.first_received_at, studies.c.study_uid)
            .offset(skip).limit(want)
        ).mappings().all()
        skip = 0
    return items, total


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
