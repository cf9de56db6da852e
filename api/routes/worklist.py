"""The radiologist worklist: urgency, then deadline."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from api import audit
from api.deps import ClientIP, CtxDep, CurrentUser
from api.queries import study_summary
from api.routes.studies import Limit, Modality, Offset
from api.schemas import StudyPage
from api.worklist import StudyFilter, backfill_deadlines, page_extras, worklist_page
from countyread.domain import StudyStatus, Urgency

router = APIRouter(prefix="/api/worklist", tags=["worklist"])


@router.get("", response_model=StudyPage)
def get_worklist(
    ctx: CtxDep, user: CurrentUser, client: ClientIP,
    status_: Annotated[list[StudyStatus] | None, Query(
        alias="status", description="subset of ready, in_review, not_analyzable")] = None,
    modality: Modality = None,
    node_id: Annotated[int | None, Query(description="township node (source)")] = None,
    urgency: Urgency | None = None,
    date_from: Annotated[date | None, Query(description="arrival on or after (UTC)")] = None,
    date_to: Annotated[date | None, Query(description="arrival on or before (UTC)")] = None,
    offset: Offset = 0, limit: Limit = 50,
) -> StudyPage:
    """Studies waiting for a radiologist: critical, urgent, routine; earliest deadline first."""
    flt = StudyFilter(tuple(s.value for s in status_ or ()), modality, node_id, urgency,
                      date_from, date_to)
    with ctx.db.begin() as conn:
        backfill_deadlines(conn, ctx.settings)
    with ctx.db.begin() as conn:
        rows, total = worklist_page(conn, user, flt, offset, limit)
        audit.record(conn, username=user.username, action="list", client=client,
                     detail={"what": "worklist", "count": len(rows)})
        extras = page_extras(conn, rows)
    items = []
    for r in rows:
        e = extras[r["study_uid"]]
        items.append(study_summary(ctx.settings, r).model_copy(update={
            "source_node_name": e.node_name, "ai_category": e.ai_category,
            "finding_count": e.finding_count}))
    return StudyPage(items=items, total=total, offset=offset, limit=limit)
