"""Outbox against a real Storage SCP on loopback: routing, retries, resend, idempotence."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from countyread.context import AppContext
from countyread.db import deliveries, studies, utcnow
from countyread.domain import NodeKind
from countyread.nodes import add_node, set_active
from countyread.settings import load_settings
from dicom_node import outbox
from dicom_node.outbox import Outbox, backoff_s, resend, schedule_delivery
from tests.peers.storage_scp import StorageSCP
from tests.results.seed import pacs_node, seed_study, sign


@pytest.fixture()
def scp() -> Iterator[StorageSCP]:
    peer = StorageSCP().start()
    yield peer
    peer.stop()


def _row(ctx: AppContext, delivery_id: int) -> dict[str, object]:
    with ctx.db.begin() as conn:
        return dict(
            conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).mappings().one()
        )


def _study_status(ctx: AppContext, study_uid: str) -> str:
    with ctx.db.begin() as conn:
        return str(
            conn.execute(
                select(studies.c.status).where(studies.c.study_uid == study_uid)
            ).scalar_one()
        )


def _make_due(ctx: AppContext) -> None:
    # Fast-forward the backoff instead of sleeping through it.
    with ctx.db.begin() as conn:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.state == "pending")
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


def test_routing_follows_node_choices_and_is_idempotent(ctx: AppContext, scp: StorageSCP) -> None:
    town = add_node(
        ctx.db,
        name="镇卫生院",
        ae_title="TOWN1",
        host="127.0.0.1",
        port=scp.port,
        kind=NodeKind.TOWNSHIP,
        send=("SC", "KOS"),
    )
    pacs = pacs_node(ctx, scp.port, ("SR", "SEG"))
    add_node(ctx.db, name="console only", ae_title="NORECV", kind=NodeKind.PACS)
    off = add_node(
        ctx.db,
        name="old PACS",
        ae_title="OLDPACS",
        host="127.0.0.1",
        port=scp.port,
        kind=NodeKind.PACS,
    )
    set_active(ctx.db, off.id, False)
    study = seed_study(ctx, n_findings=2, source_node_id=town.id)
    ids = schedule_delivery(ctx, study.study_uid)
    assert len(ids) == 2
    assert schedule_delivery(ctx, study.study_uid) == ids  # a retried sign: same rows
    by_node = {_row(ctx, i)["node_id"]: _row(ctx, i) for i in ids}
    assert {o["family"] for o in by_node[town.id]["objects"]} == {"SC", "KOS"}  # type: ignore[attr-defined]
    assert {o["family"] for o in by_node[pacs]["objects"]} == {"SR", "SEG"}  # type: ignore[attr-defined]


def test_township_without_host_gets_nothing(ctx: AppContext, scp: StorageSCP) -> None:
    town = add_node(ctx.db, name="镇", ae_title="TOWN2", kind=NodeKind.TOWNSHIP)
    study = seed_study(ctx, n_findings=1, source_node_id=town.id)
    assert schedule_delivery(ctx, study.study_uid) == []


def test_tick_sends_every_object_once_and_marks_delivered(ctx: AppContext, scp: StorageSCP) -> None:
    pacs = pacs_node(ctx, scp.port)
    study = seed_study(ctx, n_findings=3)
    (delivery_id,) = schedule_delivery(ctx, study.study_uid)
    assert _study_status(ctx, study.study_uid) == "signed"
    assert Outbox(ctx).tick() == 1
    row = _row(ctx, delivery_id)
    assert row["state"] == "sent" and row["attempts"] == 1 and row["last_error"] is None
    objects = row["objects"]
    assert isinstance(objects, list) and all(o["dimse_status"] == 0 for o in objects)
    assert set(scp.received) == {o["sop_instance_uid"] for o in objects}
    assert set(scp.received.values()) == {1}
    assert _study_status(ctx, study.study_uid) == "delivered"
    assert Outbox(ctx).tick() == 0  # nothing due: nothing sent twice
    assert set(scp.received.values()) == {1}
    assert pacs == row["node_id"]


@pytest.fixture()
def backoff_ctx(tmp_path: Path) -> Iterator[AppContext]:
    """Backoff of 2 s doubling: long enough that "not due yet" holds on a loaded machine."""
    context = AppContext.create(
        load_settings(
            data_dir=tmp_path / "var",
            environment="test",
            export_retry_base_s=2.0,
            export_retry_max_s=60.0,
        )
    )
    yield context
    context.close()


def _delay_bounds(row: dict[str, object], before: datetime, after: datetime) -> tuple[float, float]:
    # The backoff starts at some moment inside the attempt: next - after <= delay <= next - before.
    due = row["next_attempt_at"]
    assert isinstance(due, datetime)
    return (due - after).total_seconds(), (due - before).total_seconds()


def test_peer_down_then_up_retries_with_backoff(backoff_ctx: AppContext) -> None:
    ctx = backoff_ctx
    peer = StorageSCP()  # its port is free: nobody listens yet
    pacs_node(ctx, peer.port)
    study = seed_study(ctx, n_findings=2)
    (delivery_id,) = schedule_delivery(ctx, study.study_uid)
    box = Outbox(ctx)
    for attempt, delay in ((1, 2.0), (2, 4.0), (3, 8.0)):
        before = utcnow()
        assert box.tick() == 1
        after = utcnow()
        row = _row(ctx, delivery_id)
        assert row["state"] == "pending" and row["attempts"] == attempt
        assert "association" in str(row["last_error"])
        low, high = _delay_bounds(row, before, after)
        assert low - 0.01 <= delay <= high + 0.01
        assert box.tick() == 0  # not due yet
        _make_due(ctx)
    peer.start()
    try:
        _make_due(ctx)
        assert box.tick() == 1
        row = _row(ctx, delivery_id)
        assert row["state"] == "sent" and row["attempts"] == 4
        assert len(peer.received) == len(row["objects"])  # type: ignore[arg-type]
        assert set(peer.received.values()) == {1}
    finally:
        peer.stop()
    assert _study_status(ctx, study.study_uid) == "delivered"


def test_refused_object_fails_delivery_and_resend_requeues(ctx: AppContext) -> None:
    from pynetdicom.sop_class import SegmentationStorage  # type: ignore[attr-defined]

    peer = StorageSCP(refuse={SegmentationStorage: 0xA900}).start()
    try:
        pacs_node(ctx, peer.port, ("SR", "SEG"))
        study = seed_study(ctx, n_findings=2)
        (delivery_id,) = schedule_delivery(ctx, study.study_uid)
        Outbox(ctx).tick()
        row = _row(ctx, delivery_id)
        assert row["state"] == "failed"  # refused for good: no automatic retry
        assert "0xA900" in str(row["last_error"])
        by_family = {o["family"]: o for o in row["objects"]}  # type: ignore[attr-defined]
        assert by_family["SEG"]["status"] == "refused"
        assert by_family["SR"]["status"] == "sent"
        assert _study_status(ctx, study.study_uid) == "signed"
        peer.refuse.clear()  # the PACS admin fixes the configuration
        resend(ctx, delivery_id)
        assert _row(ctx, delivery_id)["state"] == "pending"
        Outbox(ctx).tick()
        row = _row(ctx, delivery_id)
        assert row["state"] == "sent"
        assert _study_status(ctx, study.study_uid) == "delivered"
    finally:
        peer.stop()


def test_out_of_resources_is_retried_for_that_object_only(ctx: AppContext) -> None:
    peer = StorageSCP(fail_first=(1, 0xA700)).start()
    try:
        pacs_node(ctx, peer.port)
        study = seed_study(ctx, n_findings=1)
        (delivery_id,) = schedule_delivery(ctx, study.study_uid)
        Outbox(ctx).tick()
        row = _row(ctx, delivery_id)
        assert row["state"] == "pending"
        pending = [o for o in row["objects"] if o["status"] == "pending"]  # type: ignore[attr-defined]
        assert len(pending) == 1 and pending[0]["dimse_status"] == 0xA700
        _make_due(ctx)
        Outbox(ctx).tick()
        assert _row(ctx, delivery_id)["state"] == "sent"
        assert set(peer.received.values()) == {1}
    finally:
        peer.stop()


def test_amendment_supersedes_undelivered_revision(ctx: AppContext) -> None:
    peer = StorageSCP()  # down
    pacs_node(ctx, peer.port, ("SR",))
    study = seed_study(ctx, n_findings=1)
    (first,) = schedule_delivery(ctx, study.study_uid)
    sign(ctx, study.study_uid)
    (second,) = schedule_delivery(ctx, study.study_uid)
    assert first != second
    old = _row(ctx, first)
    assert old["state"] == "failed" and "superseded" in str(old["last_error"])
    assert _row(ctx, second)["revision"] == old["revision"] + 1  # type: ignore[operator]


def test_background_thread_delivers_after_schedule(
    ctx: AppContext, scp: StorageSCP, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="dicom_node")
    pacs_node(ctx, scp.port)
    study = seed_study(ctx, n_findings=1)
    box = Outbox(ctx, poll_s=60.0)
    box.start()
    try:
        started = time.monotonic()
        (delivery_id,) = schedule_delivery(ctx, study.study_uid)  # wakes the thread at once
        while _study_status(ctx, study.study_uid) != "delivered":
            row = _row(ctx, delivery_id)
            assert time.monotonic() - started < 30.0, (
                f"not delivered: {row['state']} after {row['attempts']} attempt(s), "
                f"last error {row['last_error']!r}"
            )
            time.sleep(0.05)
    finally:
        box.stop()
    assert set(scp.received.values()) == {1}


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(5, 600, n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff_s(5, 600, 30) == 600
    assert outbox.MAX_ATTEMPTS > 1


def test_missing_result_file_is_refused_not_retried(ctx: AppContext, scp: StorageSCP) -> None:
    pacs_node(ctx, scp.port, ("SR", "KOS"))
    study = seed_study(ctx, n_findings=1)
    (delivery_id,) = schedule_delivery(ctx, study.study_uid)
    kos = next(
        o
        for o in _row(ctx, delivery_id)["objects"]  # type: ignore[attr-defined]
        if o["family"] == "KOS"
    )
    (ctx.settings.results_dir / kos["path"]).unlink()
    Outbox(ctx).tick()
    row = _row(ctx, delivery_id)
    assert row["state"] == "failed"
    assert "result file missing" in str(row["last_error"]) and "1 of 2" in str(row["last_error"])
    assert len(scp.received) == 1  # the SR went


def test_slow_township_does_not_hold_up_pacs(ctx: AppContext, scp: StorageSCP) -> None:
    slow = StorageSCP(delay_s=1.0).start()
    try:
        town = add_node(
            ctx.db,
            name="镇卫生院",
            ae_title="TOWN1",
            host="127.0.0.1",
            port=slow.port,
            kind=NodeKind.TOWNSHIP,
            send=("SC", "KOS"),
        )
        pacs_node(ctx, scp.port, ("SR", "SEG"))
        study = seed_study(ctx, n_findings=1, source_node_id=town.id)
        town_id, pacs_id = schedule_delivery(ctx, study.study_uid)  # township is due first
        started = utcnow()
        assert Outbox(ctx).tick() == 2
        pacs_row, town_row = _row(ctx, pacs_id), _row(ctx, town_id)
        assert pacs_row["state"] == town_row["state"] == "sent"
        pacs_s = (pacs_row["sent_at"] - started).total_seconds()  # type: ignore[operator]
        town_s = (town_row["sent_at"] - started).total_seconds()  # type: ignore[operator]
        assert town_s >= 2.0  # two objects, one second each
        assert pacs_s < town_s - 1.0  # sent in parallel, not after the township
        assert _study_status(ctx, study.study_uid) == "delivered"
    finally:
        slow.stop()
