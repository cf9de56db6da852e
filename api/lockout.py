"""Failed-login lockout, counted from the audit trail.

The audit table already records every failed login with its time, username and client
address, so the count lives in the database: it holds across API processes and restarts
(PostgreSQL scale-out) without a second store. A user is locked after
``login_max_failures`` failures since their last successful login within the window; one
client address after four times that (password spraying across many usernames).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from countyread.db import audit, utcnow
from countyread.errors import TooManyRequestsError
from countyread.settings import Settings

#: How many more failures one client address may make than one username.
CLIENT_FACTOR = 4


def check_not_locked(conn: Connection, settings: Settings, username: str,
                     client: str | None) -> None:
    """Raise :class:`TooManyRequestsError` when this user or client must wait."""
    now = utcnow()
    since = now - timedelta(seconds=settings.login_lockout_s)
    # Every query is bounded below by the window so it walks ix_audit_at, not the table.
    last_ok = conn.execute(
        select(func.max(audit.c.at)).where(
            and_(audit.c.action == "login", audit.c.username == username,
                 audit.c.at > since))
    ).scalar()
    user_since = max(since, last_ok) if last_ok is not None else since
    checks = [(audit.c.username == username, user_since, settings.login_max_failures)]
    if client:
        checks.append((audit.c.client == client[:64], since,
                       settings.login_max_failures * CLIENT_FACTOR))
    for who, start, limit in checks:
        row = conn.execute(
            select(func.count(), func.min(audit.c.at)).where(
                and_(audit.c.action == "login_failed", who, audit.c.at > start))
        ).one()
        failures, first = int(row[0]), row[1]
        if failures >= limit and first is not None:
            wait = first + timedelta(seconds=settings.login_lockout_s) - now
            raise TooManyRequestsError(
                "too many failed logins; try again later / 登录失败次数过多，请稍后再试",
                retry_after_s=max(1, int(wait.total_seconds()) + 1),
            )
