"""Urgent alerts before sign-off (DESIGN.md section 4): only to nodes that opted in."""

from __future__ import annotations

from collections.abc import Iterator

import pydicom
import pytest
from sqlalchemy import select

from countyread.context import AppContext
from countyread.db import deliveries, studies
from countyread.domain import NodeKind, Urgency
from countyread.nodes import add_node
from dicom_node.alerts import ALERT_REVISION, due_alerts
from dicom_node.outbox import Outbox, schedule_delivery
from tests.peers.storage_scp import StorageSCP
from tests.results.conftest import dciodvfy_errors
from tests.results.seed import seed_study, sign


@pytest.fixture()
def scp() -> Iterator[StorageSCP]:
    peer = StorageSCP().start()
    yield peer
    peer.stop()


def _deliveries(ctx: AppContext, study_uid: str) -> list[dict[str, object]]:
    with ctx.db.begin() as conn:
        return [dict(r) for r in conn.execute(
            select(deliveries).where(deliveries.c.study_uid == study_uid)
            .order_by(deliveries.c.id)).mappings()]


def _status(ctx: AppContext, study_uid: str) -> str:
    with ctx.db.begin() as conn:
        return str(conn.execute(select(studies.c.status)
                                .where(studies.c.study_uid == study_uid)).scalar_one())


def _nodes(ctx: AppContext, scp: StorageSCP, town_send: tuple[str, ...]) -> tuple[int, int]:
    town = add_node(ctx.db, name="镇卫生院", ae_title="TOWN1", host="127.0.0.1",
                    port=scp.port, kind=NodeKind.TOWNSHIP, send=town_send)
    pacs = add_node(ctx.db, name="PACS", ae_title="PACS1", host="127.0.0.1",
                    port=scp.port, kind=NodeKind.PACS, send=("SR", "SEG"))
    return town.id, pacs.id


def test_nothing_leaves_before_signoff_without_consent(ctx: AppContext, scp: StorageSCP) -> None:
    town, _ = _nodes(ctx, scp, ("SC", "KOS"))
    study = seed_study(ctx, n_findings=2, source_node_id=town, reviewed=False,
                       urgency="critical")
    assert due_alerts(ctx) == []
    assert Outbox(ctx).tick() == 0
    assert _deliveries(ctx, study.study_uid) == [] and not scp.received


def test_critical_study_alerts_the_consenting_township_once_then_signed_follows(
    ctx: AppContext, scp: StorageSCP
) -> None:
    town, _pacs = _nodes(ctx, scp, ("SC", "KOS", "ALERT"))
    study = seed_study(ctx, n_findings=2, source_node_id=town, reviewed=False,
                       urgency="critical")
    outbox = Outbox(ctx)
    assert outbox.tick() == 1
    assert outbox.tick() == 0  # one alert per study, not one per tick
    (alert,) = _deliveries(ctx, study.study_uid)
    assert alert["node_id"] == town and alert["revision"] == ALERT_REVISION
    assert alert["state"] == "sent"
    objects = alert["objects"]
    assert isinstance(objects, list) and {o["family"] for o in objects} == {"SC"}
    assert len(objects) == 2  # the two pending AI findings; the rejected one is left out
    assert set(scp.received) == {o["sop_instance_uid"] for o in objects}
    assert _status(ctx, study.study_uid) == "ready"  # still waits for the radiologist

    # The objects say on their face that nobody verified them, and are valid DICOM.
    root = ctx.settings.results_dir
    for o in objects:
        sc = pydicom.dcmread(root / o["path"])
        assert "NOT REVIEWED" in sc.ImageComments and "未经医师审核" in sc.ImageComments
        assert sc.SeriesDescription.startswith("AI ALERT")
        assert dciodvfy_errors(root / o["path"]) == []
    sr_path = next((root / study.study_uid / "r0" / "SR").glob("*.dcm"))
    sr = pydicom.dcmread(sr_path)
    assert sr.VerificationFlag == "UNVERIFIED" and sr.PreliminaryFlag == "PRELIMINARY"
    assert "VerifyingObserverSequence" not in sr
    assert dciodvfy_errors(sr_path) == []

    # Sign-off: the signed revision goes to both nodes as usual, with its own UIDs.
    sign(ctx, study.study_uid)
    signed_ids = schedule_delivery(ctx, study.study_uid)
    assert len(signed_ids) == 2
    while outbox.tick():
        pass
    rows = _deliveries(ctx, study.study_uid)
    assert [r["revision"] for r in rows] == [0, 1, 1]
    assert all(r["state"] == "sent" for r in rows)
    signed_uids = {o["sop_instance_uid"] for r in rows[1:] for o in r["objects"]}  # type: ignore[attr-defined]
    assert not signed_uids & {o["sop_instance_uid"] for o in objects}
    assert _status(ctx, study.study_uid) == "delivered"
    assert set(scp.received.values()) == {1}


def test_only_urgency_at_or_above_the_setting_alerts(ctx: AppContext, scp: StorageSCP) -> None:
    town, _ = _nodes(ctx, scp, ("ALERT",))
    routine = seed_study(ctx, n_findings=1, source_node_id=town, reviewed=False,
                         urgency="routine", tag="r")
    urgent = seed_study(ctx, n_findings=1, source_node_id=town, reviewed=False,
                        urgency="urgent", tag="u")
    assert due_alerts(ctx) == []  # default: critical only
    ctx.settings.alert_min_urgency = Urgency.URGENT
    assert due_alerts(ctx) == [urgent.study_uid]
    Outbox(ctx).tick()
    (alert,) = _deliveries(ctx, urgent.study_uid)
    # A node that asked for ALERT alone gets the key images and the SR.
    assert {o["family"] for o in alert["objects"]} == {"SC", "SR"}  # type: ignore[attr-defined]
    assert _deliveries(ctx, routine.study_uid) == []


def test_a_study_signed_before_the_alert_gets_only_the_signed_result(
    ctx: AppContext, scp: StorageSCP
) -> None:
    town, _ = _nodes(ctx, scp, ("SC", "ALERT"))
    study = seed_study(ctx, n_findings=1, source_node_id=town, reviewed=False,
                       urgency="critical")
    sign(ctx, study.study_uid)
    assert due_alerts(ctx) == []
    schedule_delivery(ctx, study.study_uid)
    Outbox(ctx).tick()
    assert [r["revision"] for r in _deliveries(ctx, study.study_uid)] == [1]


def test_a_pacs_that_consents_gets_alerts_from_every_township(
    ctx: AppContext, scp: StorageSCP
) -> None:
    town = add_node(ctx.db, name="镇", ae_title="TOWN9", host="127.0.0.1", port=scp.port,
                    kind=NodeKind.TOWNSHIP, send=("SC",))
    pacs = add_node(ctx.db, name="PACS", ae_title="PACS9", host="127.0.0.1", port=scp.port,
                    kind=NodeKind.PACS, send=("SR", "ALERT"))
    study = seed_study(ctx, n_findings=1, source_node_id=town.id, reviewed=False,
                       urgency="critical")
    Outbox(ctx).tick()
    (alert,) = _deliveries(ctx, study.study_uid)
    assert alert["node_id"] == pacs.id
    assert {o["family"] for o in alert["objects"]} == {"SR"}  # type: ignore[attr-defined]
