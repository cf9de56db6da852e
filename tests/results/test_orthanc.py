"""Results reach a real Orthanc exactly once, also when it is down during export."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select, update

from countyread.context import AppContext
from countyread.db import deliveries, studies, utcnow
from countyread.domain import NodeKind
from countyread.nodes import add_node
from dicom_node.outbox import Outbox, schedule_delivery
from tests.conftest import require
from tests.peers.orthanc import ORTHANC, OrthancPeer, orthanc_peer
from tests.results.conftest import dciodvfy_errors
from tests.results.seed import PATIENT_NAME, seed_study

pytestmark = pytest.mark.integration

ALL = ("SR", "SEG", "SC", "KOS")


def _pacs(ctx: AppContext, orthanc: OrthancPeer) -> None:
    add_node(
        ctx.db,
        name="Orthanc",
        ae_title=orthanc.ae_title,
        host=orthanc.address,
        port=orthanc.dicom_port,
        kind=NodeKind.PACS,
        send=ALL,
    )


def _delivery(ctx: AppContext, delivery_id: int) -> dict[str, object]:
    with ctx.db.begin() as conn:
        return dict(
            conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).mappings().one()
        )


def _status(ctx: AppContext, study_uid: str) -> str:
    with ctx.db.begin() as conn:
        return str(
            conn.execute(
                select(studies.c.status).where(studies.c.study_uid == study_uid)
            ).scalar_one()
        )


def _make_due(ctx: AppContext) -> None:
    with ctx.db.begin() as conn:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.state == "pending")
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


def test_every_object_arrives_exactly_once(
    ctx: AppContext, orthanc: OrthancPeer, tmp_path: Path
) -> None:
    _pacs(ctx, orthanc)
    study = seed_study(ctx, n_findings=3)
    (delivery_id,) = schedule_delivery(ctx, study.study_uid)
    box = Outbox(ctx)
    assert box.tick() == 1
    row = _delivery(ctx, delivery_id)
    assert row["state"] == "sent", row["last_error"]
    sent = {o["sop_instance_uid"] for o in row["objects"]}  # type: ignore[attr-defined]
    assert len(sent) == 6  # SEG, 3 SC, SR, KOS
    assert sorted(orthanc.sop_instance_uids()) == sorted(sent)
    # A second tick and a repeated sign schedule send nothing more.
    assert schedule_delivery(ctx, study.study_uid) == [delivery_id]
    assert box.tick() == 0
    assert orthanc.receptions() == {uid: 1 for uid in sent}
    assert _status(ctx, study.study_uid) == "delivered"
    # What the PACS keeps is still valid DICOM with our Chinese names intact.
    for n, instance_id in enumerate(orthanc.instance_ids()):
        path = tmp_path / f"from-orthanc-{n}.dcm"
        path.write_bytes(orthanc.file(instance_id))
        assert dciodvfy_errors(path) == []
        assert str(pydicom.dcmread(path, stop_before_pixels=True).PatientName) == PATIENT_NAME


def test_orthanc_down_during_export_then_up(ctx: AppContext, orthanc: OrthancPeer) -> None:
    _pacs(ctx, orthanc)
    orthanc.stop()
    study = seed_study(ctx, n_findings=2)
    (delivery_id,) = schedule_delivery(ctx, study.study_uid)
    box = Outbox(ctx)
    for attempt in (1, 2):
        assert box.tick() == 1
        row = _delivery(ctx, delivery_id)
        assert row["state"] == "pending" and row["attempts"] == attempt
        assert row["last_error"]
        _make_due(ctx)
    assert _status(ctx, study.study_uid) == "signed"
    orthanc.start()
    assert box.tick() == 1
    row = _delivery(ctx, delivery_id)
    assert row["state"] == "sent" and row["attempts"] == 3, row["last_error"]
    sent = {o["sop_instance_uid"] for o in row["objects"]}  # type: ignore[attr-defined]
    assert orthanc.receptions() == {uid: 1 for uid in sent}
    assert sorted(orthanc.sop_instance_uids()) == sorted(sent)
    assert _status(ctx, study.study_uid) == "delivered"


def test_fallback_peer_on_the_host_without_http(ctx: AppContext, tmp_path: Path) -> None:
    """The fixture's fallback (no namespaces allowed) still proves arrival, exactly once."""
    require(ORTHANC is not None, "Orthanc is not installed (apt-get install orthanc)")
    with orthanc_peer(tmp_path, namespace=False) as orthanc:
        assert not orthanc.has_http
        _pacs(ctx, orthanc)
        study = seed_study(ctx, n_findings=1)
        (delivery_id,) = schedule_delivery(ctx, study.study_uid)
        assert Outbox(ctx).tick() == 1
        row = _delivery(ctx, delivery_id)
        assert row["state"] == "sent", row["last_error"]
        sent = {o["sop_instance_uid"] for o in row["objects"]}  # type: ignore[attr-defined]
        assert orthanc.receptions() == dict.fromkeys(sent, 1)
