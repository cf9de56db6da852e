"""Shared fixtures: real service databases, and the rule for absent services.

A test that needs a service (PostgreSQL, Redis, dcmtk, Orthanc) skips with a printed
reason when the service is absent on a developer machine, and fails under ``CI=true``,
where the CI script installs or provides every one of them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BASE_URL = os.environ.get(
    "COUNTYREAD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REALDATA = SHARED / "realdata"


def require(condition: bool, reason: str) -> None:
    """Skip (or fail under CI=true) when a needed service or tool is missing."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    try:
        import psycopg
    except ImportError:
        require(False, "psycopg is not installed")
        raise
    raw = PG_BASE_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        admin = psycopg.connect(raw, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        require(False, f"PostgreSQL not reachable at {raw}: {exc}")
        raise
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_BASE_URL}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()
