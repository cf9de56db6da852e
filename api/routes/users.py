"""User management for admins (the CLI does the same for the first admin)."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select

from api import audit
from api.deps import AdminUser, ClientIP, CtxDep
from api.schemas import UserCreate, UserPublic
from api.users_cli import create_user
from countyread.db import users

router = APIRouter(prefix="/api/users", tags=["users"])


@router.get("", response_model=list[UserPublic])
def list_users(ctx: CtxDep, _admin: AdminUser) -> list[UserPublic]:
    with ctx.db.begin() as conn:
        rows = conn.execute(select(users).order_by(users.c.id)).mappings().all()
    return [UserPublic.model_validate(dict(r)) for r in rows]


@router.post("", response_model=UserPublic, status_code=status.HTTP_201_CREATED)
def add_user(ctx: CtxDep, admin: AdminUser, body: UserCreate, client: ClientIP) -> UserPublic:
    user = create_user(ctx, body.username, body.role, body.password,
                       display_name=body.display_name, node_id=body.node_id)
    with ctx.db.begin() as conn:
        audit.record(conn, username=admin.username, action="user_add", client=client,
                     detail={"user": body.username, "role": body.role.value})
    return user
