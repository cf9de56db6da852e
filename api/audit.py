"""Audit trail: who did what to which study, when and from where (views included)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from countyread.db import audit, utcnow

#: Actions written by the API; kept as one list so the audit page can filter on them.
ACTIONS = (
    "login", "login_failed", "login_locked", "list", "view", "view_image", "claim",
    "release", "review",
    "add_finding", "report_edit", "report_view", "sign", "export", "amend", "resend",
    "deliveries_view", "node_add", "user_add", "audit_view", "prune",
)


def record(
    conn: Connection, *, username: str | None, action: str, client: str | None,
    study_uid: str | None = None, detail: dict[str, Any] | None = None,
) -> None:
    """Append one audit row inside the caller's transaction (so it commits with the act)."""
    assert action in ACTIONS, action
    conn.execute(audit.insert().values(
        at=utcnow(), username=username, action=action, study_uid=study_uid,
        detail=detail or {}, client=(client or "")[:64] or None,
    ))
