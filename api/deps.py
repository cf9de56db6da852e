"""Annotated FastAPI dependencies: the app context, the current user and role checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import select

from api.security import decode_token
from countyread.context import AppContext
from countyread.db import users
from countyread.domain import Role
from countyread.errors import AuthenticationError, PermissionDeniedError

_oauth2 = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


CtxDep = Annotated[AppContext, Depends(get_ctx)]


@dataclass(frozen=True, slots=True)
class User:
    """The authenticated caller, re-read from the database on every request."""

    id: int
    username: str
    role: Role
    node_id: int | None
    display_name: str | None

    @property
    def is_technologist(self) -> bool:
        return self.role == Role.TECHNOLOGIST


def get_current_user(ctx: CtxDep, token: Annotated[str | None, Depends(_oauth2)]) -> User:
    if not token:
        raise AuthenticationError("not authenticated")
    claims = decode_token(ctx.settings.secret_key, token)
    with ctx.db.begin() as conn:
        row = conn.execute(
            select(users).where(users.c.username == claims.username)
        ).mappings().first()
    # The role is read from the database, not the token, so a demotion or deactivation
    # takes effect at once instead of when the token expires.
    if row is None or not row["active"]:
        raise AuthenticationError("user unknown or disabled")
    return User(id=row["id"], username=row["username"], role=Role(row["role"]),
                node_id=row["node_id"], display_name=row["display_name"])


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_roles(*roles: Role) -> Callable[[User], User]:
    allowed = frozenset(roles)

    def check(user: CurrentUser) -> User:
        if user.role not in allowed:
            names = " or ".join(sorted(r.value for r in allowed))
            raise PermissionDeniedError(f"this action needs the role {names}")
        return user

    return check


RadiologistUser = Annotated[User, Depends(require_roles(Role.RADIOLOGIST))]
AdminUser = Annotated[User, Depends(require_roles(Role.ADMIN))]
StaffUser = Annotated[User, Depends(require_roles(Role.RADIOLOGIST, Role.ADMIN))]


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


ClientIP = Annotated[str | None, Depends(client_address)]
