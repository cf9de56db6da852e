"""Sign hands the study to the real results outbox; deliveries and resend through the API.

The destination is dcmtk's ``storescp`` (a PACS nobody on the team wrote), started on a
loopback port; the outbox is the real ``dicom_node.outbox`` driven with ``tick()``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from countyread.context import AppContext
from countyread.db import studies
from countyread.domain import NodeKind
from countyread.nodes import add_node
from tests.api import seed
from tests.conftest import require

outbox = pytest.importorskip("dicom_node.outbox", reason="results outbox not built yet")
H = dict[str, dict[str, str]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def storescp_dir(tmp_path: Path) -> Path:
    out = tmp_path / "pacs"
    out.mkdir()
    return out


def _start_storescp(port: int, out: Path) -> subprocess.Popen[bytes]:
    # /usr/bin first: pynetdicom installs a Python "storescp" that shadows dcmtk's on PATH.
    exe = "/usr/bin/storescp" if Path("/usr/bin/storescp").exists() else shutil.which("storescp")
    require(exe is not None, "dcmtk storescp not installed")
    assert exe is not None
    proc = subprocess.Popen(
        [exe, "-aet", "TESTPACS", "-od", str(out), "+xa", str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("storescp did not start")


@pytest.fixture
def stop_later() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.terminate()
        p.wait(10)


@pytest.mark.integration
def test_sign_schedules_delivery_then_resend_after_pacs_recovers(
        ctx: AppContext, client: TestClient, people: H, storescp_dir: Path,
        stop_later: list[subprocess.Popen[bytes]]) -> None:
    port = _free_port()
    pacs = add_node(ctx.db, name="PACS", ae_title="TESTPACS", host="127.0.0.1", port=port,
                    kind=NodeKind.PACS, send=("SR", "SC", "KOS"))
    uid, (f1, f2) = seed.stored_ct_study(ctx, node_id=int(people["_nodes"]["n1"]))
    rad1 = people["rad1"]
    assert client.post(f"/api/studies/{uid}/claim", headers=rad1).status_code == 200
    client.patch(f"/api/findings/{f1}", headers=rad1, json={"verdict": "accepted"})
    client.patch(f"/api/findings/{f2}", headers=rad1, json={"verdict": "rejected"})
    signed = client.post(f"/api/studies/{uid}/sign", headers=rad1)
    assert signed.status_code == 200, signed.text
    body = signed.json()
    assert body["delivery_error"] is None and len(body["delivery_ids"]) == 1
    delivery_id = body["delivery_ids"][0]

    # PACS down: the attempt fails and the delivery waits for a retry.
    outbox.Outbox(ctx).tick()
    rows = client.get(f"/api/studies/{uid}/deliveries", headers=rad1).json()
    assert [(r["id"], r["node_id"], r["state"]) for r in rows] == [
        (delivery_id, pacs.id, "pending")]
    assert rows[0]["attempts"] == 1 and rows[0]["last_error"]
    assert {o["family"] for o in rows[0]["objects"]} >= {"SR", "KOS"}

    # PACS back: resend makes it due now; the next tick delivers every object.
    stop_later.append(_start_storescp(port, storescp_dir))
    r = client.post(f"/api/studies/{uid}/deliveries/{delivery_id}/resend", headers=rad1)
    assert r.status_code == 200 and r.json()["attempts"] == 0
    outbox.Outbox(ctx).tick()
    rows = client.get(f"/api/studies/{uid}/deliveries", headers=rad1).json()
    assert rows[0]["state"] == "sent", rows[0]
    assert len(list(storescp_dir.iterdir())) == len(rows[0]["objects"])
    with ctx.db.begin() as conn:
        status = conn.execute(select(studies.c.status).where(
            studies.c.study_uid == uid)).scalar_one()
    assert status == "delivered"
    assert client.get(f"/api/studies/{uid}", headers=rad1).json()["status"] == "delivered"
    # Wrong study / unknown delivery ids are 404s.
    other, _ = seed.ready_ct_study(ctx)
    assert client.post(f"/api/studies/{other}/deliveries/{delivery_id}/resend",
                       headers=rad1).status_code == 404
