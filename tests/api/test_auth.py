"""Login, tokens, the users CLI and the api command's help."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.security import create_token
from countyread.context import AppContext
from countyread.db import audit, users
from countyread.domain import Role
from tests.api import seed

REPO = Path(__file__).resolve().parents[2]


def test_login_issues_a_bearer_token_that_opens_the_api(ctx: AppContext,
                                                        client: TestClient) -> None:
    seed.add_user(ctx, "rad", Role.RADIOLOGIST)
    r = client.post("/api/auth/token", data={"username": "rad", "password": seed.PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["role"] == "radiologist"
    me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200 and me.json()["username"] == "rad"


def test_healthz_needs_no_login(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": "sqlite"}


def test_wrong_password_unknown_user_and_missing_token_are_401(ctx: AppContext,
                                                               client: TestClient) -> None:
    seed.add_user(ctx, "rad", Role.RADIOLOGIST)
    for name, pw in (("rad", "wrong-password"), ("nobody", seed.PASSWORD)):
        r = client.post("/api/auth/token", data={"username": name, "password": pw})
        assert r.status_code == 401 and r.json() == {"detail": "wrong username or password"}
    r = client.get("/api/worklist")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = client.get("/api/worklist", headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401


def test_expired_forged_and_disabled_tokens_are_refused(ctx: AppContext,
                                                        client: TestClient) -> None:
    seed.add_user(ctx, "rad", Role.RADIOLOGIST)
    expired, _ = create_token(ctx.settings.secret_key, "rad", Role.RADIOLOGIST, -5)
    forged, _ = create_token("another-secret-key-of-enough-length!", "rad",
                             Role.RADIOLOGIST, 600)
    for token in (expired, forged):
        r = client.get("/api/worklist", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, token
    good, _ = create_token(ctx.settings.secret_key, "rad", Role.RADIOLOGIST, 600)
    headers = {"Authorization": f"Bearer {good}"}
    assert client.get("/api/worklist", headers=headers).status_code == 200
    with ctx.db.begin() as conn:
        conn.execute(update(users).where(users.c.username == "rad").values(active=False))
    assert client.get("/api/worklist", headers=headers).status_code == 401


def test_role_comes_from_the_database_not_the_token(ctx: AppContext, client: TestClient) -> None:
    seed.add_user(ctx, "demoted", Role.RADIOLOGIST)
    token, _ = create_token(ctx.settings.secret_key, "demoted", Role.ADMIN, 600)
    r = client.get("/api/audit", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403


def _cli(args: list[str], data_dir: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COUNTYREAD_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "countyread", *args], input=stdin,
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_users_cli_creates_a_user_who_can_log_in(tmp_path: Path) -> None:
    out = _cli(["users", "create", "wang", "--role", "radiologist", "--password-stdin"],
               tmp_path, "s3cret-password\n")
    assert out.returncode == 0, out.stderr
    again = _cli(["users", "create", "wang", "--role", "admin", "--password-stdin"],
                 tmp_path, "s3cret-password\n")
    assert again.returncode == 1 and "exists" in again.stderr
    short = _cli(["users", "create", "li", "--role", "admin", "--password-stdin"],
                 tmp_path, "short\n")
    assert short.returncode == 1 and "at least 8" in short.stderr
    listing = _cli(["users", "list"], tmp_path)
    assert "wang" in listing.stdout and "radiologist" in listing.stdout

    from api.main import create_app
    from countyread.settings import load_settings

    ctx = AppContext.create(load_settings(data_dir=tmp_path))
    try:
        with TestClient(create_app(ctx)) as client:
            r = client.post("/api/auth/token",
                            data={"username": "wang", "password": "s3cret-password"})
            assert r.status_code == 200
    finally:
        ctx.close()


def test_api_command_help(tmp_path: Path) -> None:
    out = _cli(["api", "--help"], tmp_path)
    assert out.returncode == 0
    assert "COUNTYREAD_API_PORT" in out.stdout and "--port" in out.stdout


def test_repeated_failed_logins_lock_the_user_then_expire(ctx: AppContext,
                                                          client: TestClient) -> None:
    seed.add_user(ctx, "rad", Role.RADIOLOGIST)
    limit = ctx.settings.login_max_failures
    for _ in range(limit):
        r = client.post("/api/auth/token", data={"username": "rad", "password": "guess"})
        assert r.status_code == 401
    # Locked: even the right password is refused, with a Retry-After, and audited.
    r = client.post("/api/auth/token", data={"username": "rad", "password": seed.PASSWORD})
    assert r.status_code == 429, r.text
    assert 0 < int(r.headers["retry-after"]) <= ctx.settings.login_lockout_s + 1
    assert "too many failed logins" in r.json()["detail"]
    with ctx.db.begin() as conn:
        actions = [a for (a,) in conn.execute(select(audit.c.action).order_by(audit.c.id))]
    assert actions.count("login_failed") == limit and actions[-1] == "login_locked"
    # Another user is not affected (the same client is still under its own, higher limit).
    seed.add_user(ctx, "rad2", Role.RADIOLOGIST)
    r = client.post("/api/auth/token", data={"username": "rad2", "password": seed.PASSWORD})
    assert r.status_code == 200
    # Once the window has passed (failures aged in the audit trail), login works again.
    with ctx.db.begin() as conn:
        age = timedelta(seconds=ctx.settings.login_lockout_s + 5)
        for row_id, at in conn.execute(select(audit.c.id, audit.c.at)).all():
            conn.execute(update(audit).where(audit.c.id == row_id).values(at=at - age))
    r = client.post("/api/auth/token", data={"username": "rad", "password": seed.PASSWORD})
    assert r.status_code == 200, r.text


def test_a_successful_login_resets_the_user_count(ctx: AppContext,
                                                  client: TestClient) -> None:
    seed.add_user(ctx, "rad", Role.RADIOLOGIST)
    limit = ctx.settings.login_max_failures
    for _ in range(limit - 1):
        client.post("/api/auth/token", data={"username": "rad", "password": "guess"})
    assert client.post("/api/auth/token", data={"username": "rad",
                                                 "password": seed.PASSWORD}).status_code == 200
    for _ in range(limit - 1):
        client.post("/api/auth/token", data={"username": "rad", "password": "guess"})
    assert client.post("/api/auth/token", data={"username": "rad",
                                                 "password": seed.PASSWORD}).status_code == 200


def test_one_client_spraying_many_usernames_is_locked(ctx: AppContext,
                                                      client: TestClient) -> None:
    seed.add_user(ctx, "rad", Role.RADIOLOGIST)
    per_client = ctx.settings.login_max_failures * 4
    for i in range(per_client):
        r = client.post("/api/auth/token", data={"username": f"u{i}", "password": "guess"})
        assert r.status_code == 401
    r = client.post("/api/auth/token", data={"username": "rad", "password": seed.PASSWORD})
    assert r.status_code == 429
