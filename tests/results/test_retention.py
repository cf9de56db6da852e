"""Retention: only old, delivered studies lose their source images, and only with --apply."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.main import create_app
from countyread import retention
from countyread.context import AppContext
from countyread.db import (
    audit,
    deliveries,
    findings,
    instances,
    quarantine,
    reports,
    studies,
    utcnow,
)
from countyread.domain import Role
from tests.api import seed as api_seed
from tests.results.seed import seed_study


def _age(ctx: AppContext, study_uid: str, days: int, status: str = "delivered") -> None:
    with ctx.db.begin() as conn:
        conn.execute(update(studies).where(studies.c.study_uid == study_uid).values(
            status=status, last_received_at=utcnow() - timedelta(days=days)))


def _count(ctx: AppContext, table, **where: str) -> int:  # type: ignore[no-untyped-def]
    with ctx.db.begin() as conn:
        q = select(func.count()).select_from(table)
        for col, value in where.items():
            q = q.where(getattr(table.c, col) == value)
        return int(conn.execute(q).scalar_one())


def test_only_old_delivered_studies_are_pruned_and_history_stays(
    ctx: AppContext, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = seed_study(ctx, n_findings=2, tag="old")
    recent = seed_study(ctx, n_findings=1, tag="recent")
    unsent = seed_study(ctx, n_findings=1, tag="unsent")
    waiting = seed_study(ctx, n_findings=1, tag="pending")
    _age(ctx, old.study_uid, 200)
    _age(ctx, recent.study_uid, 10)
    _age(ctx, unsent.study_uid, 200, status="signed")  # results not yet delivered
    _age(ctx, waiting.study_uid, 200)
    with ctx.db.begin() as conn:  # an amendment's delivery still pending
        node = api_seed.add_node(ctx, "PACS9")
        conn.execute(deliveries.insert().values(study_uid=waiting.study_uid, node_id=node,
                                                revision=2, objects=[], state="pending"))
    store = ctx.store.root
    assert (store / old.study_uid).is_dir()

    # Dry run (the CLI default): reports, removes nothing.
    monkeypatch.setenv("COUNTYREAD_DATA_DIR", str(ctx.settings.data_dir))
    assert retention.main(["--older-than", "90"]) == 0
    out = capsys.readouterr().out
    assert "would remove: source images of 1 delivered studies (16 files" in out
    assert "将清理：1 个已回传检查的原始图像" in out
    assert (store / old.study_uid).is_dir()
    assert _count(ctx, instances, study_uid=old.study_uid) == 16

    done = retention.apply(ctx, retention.plan(ctx, 90))
    assert done.studies == [old.study_uid] and done.instance_files == 16
    assert not (store / old.study_uid).exists()
    assert _count(ctx, instances, study_uid=old.study_uid) == 0
    for other in (recent, unsent, waiting):
        assert (store / other.study_uid).is_dir()
        assert _count(ctx, instances, study_uid=other.study_uid) == 16
    # The worklist history, findings, report and audit trail stay.
    assert _count(ctx, findings, study_uid=old.study_uid) == 3
    assert _count(ctx, reports, study_uid=old.study_uid) == 1
    assert _count(ctx, audit, study_uid=old.study_uid, action="prune") == 1
    # A second pass finds nothing more to do.
    assert retention.plan(ctx, 90).studies == []


def test_a_pruned_study_cannot_be_amended_here(ctx: AppContext) -> None:
    study = seed_study(ctx, n_findings=1, tag="amend")
    _age(ctx, study.study_uid, 400)
    retention.apply(ctx, retention.plan(ctx, 365))
    api_seed.add_user(ctx, "rad", Role.RADIOLOGIST)
    with TestClient(create_app(ctx)) as client:
        token = client.post("/api/auth/token", data={"username": "rad",
                                                     "password": api_seed.PASSWORD}).json()
        r = client.post(f"/api/studies/{study.study_uid}/amend",
                        headers={"Authorization": f"Bearer {token['access_token']}"})
    assert r.status_code == 409 and "removed by retention" in r.json()["detail"]


def test_old_quarantine_files_go_recent_ones_stay(ctx: AppContext) -> None:
    qdir: Path = ctx.settings.quarantine_dir
    for name, days in (("old.dcm", 40), ("new.dcm", 2)):
        (qdir / name).write_bytes(b"DICM" * 100)
        with ctx.db.begin() as conn:
            conn.execute(quarantine.insert().values(
                path=name, reason="unreadable", status_code=0xC210,
                received_at=utcnow() - timedelta(days=days)))
    with ctx.db.begin() as conn:  # a row whose path tries to leave the directory
        conn.execute(quarantine.insert().values(
            path="../../etc/passwd", reason="x", status_code=0xC210,
            received_at=utcnow() - timedelta(days=90)))
    todo = retention.plan(ctx, None, quarantine_days=30)
    assert len(todo.quarantine_ids) == 2 and todo.studies == []
    retention.apply(ctx, todo)
    assert not (qdir / "old.dcm").exists() and (qdir / "new.dcm").exists()
    assert os.path.exists("/etc/passwd")
    assert _count(ctx, quarantine) == 1


def test_keeper_does_nothing_unless_configured(ctx: AppContext) -> None:
    study = seed_study(ctx, n_findings=1, tag="keep")
    _age(ctx, study.study_uid, 3000)
    keeper = retention.RetentionKeeper(ctx)
    assert not keeper.enabled and keeper.run_once() is None
    assert (ctx.store.root / study.study_uid).is_dir()
    ctx.settings.retention_days = 365
    done = retention.RetentionKeeper(ctx).run_once()
    assert done is not None and done.studies == [study.study_uid]
