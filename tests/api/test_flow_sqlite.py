"""The core flow on SQLite."""

from __future__ import annotations

from fastapi.testclient import TestClient

from countyread.context import AppContext
from tests.api.flow import run_core_flow


def test_core_flow_sqlite(ctx: AppContext, client: TestClient) -> None:
    run_core_flow(ctx, client)
