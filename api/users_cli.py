"""``countyread users``: create and list users (the first admin is made here)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.schemas import UserPublic
from api.security import hash_password
from countyread.context import AppContext
from countyread.db import nodes, users
from countyread.domain import Role
from countyread.errors import ConflictError, InvalidInputError

_MIN_PASSWORD = 8


def create_user(
    ctx: AppContext, username: str, role: Role, password: str, *,
    display_name: str | None = None, node_id: int | None = None,
) -> UserPublic:
    """Insert a user with an argon2id hash; technologists must name their township node."""
    if len(password) < _MIN_PASSWORD:
        raise InvalidInputError(f"password must have at least {_MIN_PASSWORD} characters")
    if role == Role.TECHNOLOGIST and node_id is None:
        raise InvalidInputError("a technologist belongs to a township node: give node_id")
    try:
        with ctx.db.begin() as conn:
            if node_id is not None and conn.execute(
                select(nodes.c.id).where(nodes.c.id == node_id)
            ).first() is None:
                raise InvalidInputError(f"node {node_id} does not exist")
            res = conn.execute(users.insert().values(
                username=username, display_name=display_name, role=role.value,
                node_id=node_id, password_hash=hash_password(password), active=True))
            pk = res.inserted_primary_key
            assert pk is not None
    except IntegrityError:
        raise ConflictError(f"user {username!r} exists") from None
    return UserPublic(id=int(pk[0]), username=username, display_name=display_name, role=role,
                      node_id=node_id, active=True)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="countyread users",
        description="Create and list users of the worklist API. Roles: radiologist (review "
        "and sign), technologist (sees its township's studies; needs --node), admin (nodes, "
        "users, audit, releasing claims).",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    create = sub.add_parser("create", help="create a user",
                            description="Create a user; the password is read from stdin "
                            "(first line) so it never appears in the shell history.")
    create.add_argument("name", help="login name (letters, digits, _ . @ -)")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--password-stdin", action="store_true", required=True,
                        help="read the password from the first line of stdin")
    create.add_argument("--display-name", default=None, help="name shown in the web page")
    create.add_argument("--node", type=int, default=None,
                        help="township node id (see `countyread nodes list`) for technologists")
    sub.add_parser("list", help="list users")
    args = parser.parse_args(list(argv))
    ctx = AppContext.create()
    try:
        if args.cmd == "create":
            password = sys.stdin.readline().rstrip("\r\n")
            user = create_user(ctx, args.name, Role(args.role), password,
                               display_name=args.display_name, node_id=args.node)
            print(f"created user {user.username} ({user.role.value}) id={user.id}")
            return 0
        with ctx.db.begin() as conn:
            rows = conn.execute(select(users).order_by(users.c.id)).mappings().all()
        print(f"{'id':>4}  {'username':20}  {'role':12}  {'node':>4}  active")
        for r in rows:
            node = "" if r["node_id"] is None else str(r["node_id"])
            print(f"{r['id']:>4}  {r['username']:20}  {r['role']:12}  {node:>4}  "
                  f"{'yes' if r['active'] else 'no'}")
        return 0
    finally:
        ctx.close()
