"""The core flow and the worklist order on PostgreSQL (skips without it, fails under CI)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from countyread.context import AppContext
from countyread.db import utcnow
from countyread.domain import Role
from countyread.settings import load_settings
from tests.api import seed
from tests.api.flow import login, run_core_flow
from tests.api.test_worklist import check_page_extras

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_ctx(pg_url: str, tmp_path: Path) -> Iterator[AppContext]:
    ctx = AppContext.create(load_settings(data_dir=tmp_path, database_url=pg_url,
                                          environment="test"))
    yield ctx
    ctx.close()


def test_core_flow_postgres(pg_ctx: AppContext) -> None:
    with TestClient(create_app(pg_ctx)) as client:
        run_core_flow(pg_ctx, client)


def test_worklist_order_postgres(pg_ctx: AppContext) -> None:
    now = utcnow()
    routine = seed.add_study(pg_ctx, urgency="routine", received=now - timedelta(hours=30))
    urgent = seed.add_study(pg_ctx, urgency="urgent", received=now - timedelta(hours=1))
    crit = seed.add_study(pg_ctx, urgency="critical", received=now - timedelta(minutes=1))
    crit_null = seed.add_study(pg_ctx, urgency="critical", deadline=False,
                               received=now - timedelta(minutes=20))
    seed.add_study(pg_ctx, status="signed", urgency="critical")
    seed.add_user(pg_ctx, "pg_rad", Role.RADIOLOGIST)
    with TestClient(create_app(pg_ctx)) as client:
        h = login(client, "pg_rad")
        items = client.get("/api/worklist", headers=h).json()["items"]
        assert [s["study_uid"] for s in items] == [crit_null, crit, urgent, routine]
        page = client.get("/api/worklist?offset=1&limit=2&modality=CT", headers=h).json()
        assert [s["study_uid"] for s in page["items"]] == [crit, urgent]
        assert client.get("/healthz").json() == {"status": "ok", "database": "postgresql"}


def test_worklist_extras_postgres(pg_ctx: AppContext) -> None:
    """Long categories ("no significant stenosis") fit; the extras query runs on PG."""
    seed.add_user(pg_ctx, "pg_rad2", Role.RADIOLOGIST)
    with TestClient(create_app(pg_ctx)) as client:
        check_page_extras(pg_ctx, client, login(client, "pg_rad2"))

