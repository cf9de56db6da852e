"""The outbox on PostgreSQL: claims, parallel destinations, delivered status."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from countyread.context import AppContext
from countyread.db import deliveries, studies
from countyread.domain import NodeKind
from countyread.nodes import add_node
from countyread.settings import load_settings
from dicom_node.outbox import Outbox, schedule_delivery
from tests.peers.storage_scp import StorageSCP
from tests.results.seed import seed_study

pytestmark = pytest.mark.integration


@pytest.fixture()
def pg_ctx(pg_url: str, tmp_path: Path) -> Iterator[AppContext]:
    ctx = AppContext.create(
        load_settings(data_dir=tmp_path / "var", database_url=pg_url, environment="test")
    )
    yield ctx
    ctx.close()


def test_two_outboxes_racing_send_each_object_once(pg_ctx: AppContext) -> None:
    town_scp, pacs_scp = StorageSCP().start(), StorageSCP().start()
    try:
        town = add_node(
            pg_ctx.db,
            name="镇",
            ae_title="TOWN1",
            host="127.0.0.1",
            port=town_scp.port,
            kind=NodeKind.TOWNSHIP,
            send=("SC", "KOS"),
        )
        add_node(
            pg_ctx.db,
            name="PACS",
            ae_title="PACS1",
            host="127.0.0.1",
            port=pacs_scp.port,
            kind=NodeKind.PACS,
            send=("SR", "SEG"),
        )
        study = seed_study(pg_ctx, n_findings=2, source_node_id=town.id)
        ids = schedule_delivery(pg_ctx, study.study_uid)
        assert schedule_delivery(pg_ctx, study.study_uid) == ids
        counts: list[int] = []
        boxes = [Outbox(pg_ctx), Outbox(pg_ctx)]
        threads = [threading.Thread(target=lambda b=b: counts.append(b.tick())) for b in boxes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sum(counts) == 2  # each delivery claimed by exactly one outbox
        with pg_ctx.db.begin() as conn:
            states = conn.execute(
                select(deliveries.c.state).where(deliveries.c.id.in_(ids))
            ).scalars()
            assert set(states) == {"sent"}
            status = conn.execute(
                select(studies.c.status).where(studies.c.study_uid == study.study_uid)
            ).scalar_one()
        assert status == "delivered"
        assert set(town_scp.received.values()) == set(pacs_scp.received.values()) == {1}
        assert len(town_scp.received) == 3 and len(pacs_scp.received) == 2  # 2 SC + KOS; SR, SEG
    finally:
        town_scp.stop()
        pacs_scp.stop()
