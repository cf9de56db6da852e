"""Login (OAuth2 password form) and who-am-I."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import select

from api import audit
from api.deps import ClientIP, CtxDep, CurrentUser
from api.lockout import check_not_locked
from api.schemas import Token, UserPublic
from api.security import create_token, verify_password
from countyread.db import users
from countyread.domain import Role
from countyread.errors import AuthenticationError, TooManyRequestsError

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/token", response_model=Token)
def login(
    ctx: CtxDep, form: Annotated[OAuth2PasswordRequestForm, Depends()], client: ClientIP,
) -> Token:
    """Exchange username and password for a bearer token (OAuth2 password flow)."""
    username = form.username[:64]
    # Checked before the (deliberately slow) argon2 verification, so a locked-out
    # guesser costs neither CPU nor a chance.
    locked: TooManyRequestsError | None = None
    with ctx.db.begin() as conn:
        try:
            check_not_locked(conn, ctx.settings, username, client)
        except TooManyRequestsError as exc:
            locked = exc
            audit.record(conn, username=username, action="login_locked", client=client)
    if locked is not None:
        logger.info("login locked out", extra={"client": client})
        raise locked
    with ctx.db.begin() as conn:
        row = conn.execute(
            select(users).where(users.c.username == form.username)
        ).mappings().first()
        ok = verify_password(form.password, row["password_hash"] if row else None)
        if not ok or row is None or not row["active"]:
            audit.record(conn, username=username, action="login_failed",
                         client=client)
        else:
            audit.record(conn, username=row["username"], action="login", client=client)
    if not ok or row is None or not row["active"]:
        logger.info("login refused", extra={"client": client})
        raise AuthenticationError("wrong username or password")
    token, expires = create_token(ctx.settings.secret_key, row["username"], Role(row["role"]),
                                  ctx.settings.token_ttl_s)
    return Token(access_token=token, expires_at=expires, username=row["username"],
                 role=Role(row["role"]))


@router.get("/me", response_model=UserPublic)
def me(user: CurrentUser) -> UserPublic:
    return UserPublic(id=user.id, username=user.username, display_name=user.display_name,
                      role=user.role, node_id=user.node_id, active=True)
