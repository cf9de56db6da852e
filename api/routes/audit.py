"""The audit log, for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from api import audit as audit_log
from api.deps import AdminUser, ClientIP, CtxDep
from api.schemas import AuditPage, AuditPublic
from countyread.db import audit

router = APIRouter(prefix="/api/audit", tags=["audit"])


@router.get("", response_model=AuditPage)
def list_audit(
    ctx: CtxDep, admin: AdminUser, client: ClientIP,
    username: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
    study_uid: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """Newest first: who did what, to which study, when, from which address."""
    where = []
    if username:
        where.append(audit.c.username == username)
    if action:
        where.append(audit.c.action == action)
    if study_uid:
        where.append(audit.c.study_uid == study_uid)
    if since is not None:
        where.append(audit.c.at >= since)
    with ctx.db.begin() as conn:
        total = conn.execute(select(func.count()).select_from(audit).where(*where)).scalar_one()
        rows = conn.execute(select(audit).where(*where).order_by(audit.c.id.desc())
                            .offset(offset).limit(limit)).mappings().all()
        audit_log.record(conn, username=admin.username, action="audit_view", client=client)
    return AuditPage(items=[AuditPublic.model_validate(dict(r)) for r in rows],
                     total=int(total), offset=offset, limit=limit)
