"""Fixtures: a real SQLite database in a temp dir, the app, and logged-in clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from countyread.context import AppContext
from countyread.domain import Role
from countyread.settings import load_settings
from tests.api import seed


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AppContext]:
    context = AppContext.create(load_settings(data_dir=tmp_path, environment="test"))
    yield context
    context.close()


@pytest.fixture
def client(ctx: AppContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def token_headers(client: TestClient, username: str,
                  password: str = seed.PASSWORD) -> dict[str, str]:
    r = client.post("/api/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def make_people(ctx: AppContext, client: TestClient) -> dict[str, dict[str, str]]:
    """Headers for: rad1, rad2 (radiologists), admin, tech (township 1), tech2 (township 2)."""
    n1 = seed.add_node(ctx, "TOWN1", "乡镇卫生院一")
    n2 = seed.add_node(ctx, "TOWN2", "乡镇卫生院二")
    seed.add_user(ctx, "rad1", Role.RADIOLOGIST)
    seed.add_user(ctx, "rad2", Role.RADIOLOGIST)
    seed.add_user(ctx, "admin", Role.ADMIN)
    seed.add_user(ctx, "tech", Role.TECHNOLOGIST, node_id=n1)
    seed.add_user(ctx, "tech2", Role.TECHNOLOGIST, node_id=n2)
    out = {name: token_headers(client, name) for name in ("rad1", "rad2", "admin", "tech",
                                                           "tech2")}
    out["_nodes"] = {"n1": str(n1), "n2": str(n2)}
    return out


@pytest.fixture
def people(ctx: AppContext, client: TestClient) -> dict[str, dict[str, str]]:
    return make_people(ctx, client)
