"""Administrator status page and Prometheus metrics: real counts, no patient data."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from countyread.context import AppContext
from countyread.db import studies, utcnow
from countyread.domain import Role
from tests.api import seed


def _login(client: TestClient, ctx: AppContext, name: str, role: Role) -> dict[str, str]:
    seed.add_user(ctx, name, role)
    r = client.post("/api/auth/token", data={"username": name, "password": seed.PASSWORD})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_status_counts_follow_the_database(ctx: AppContext, client: TestClient) -> None:
    admin = _login(client, ctx, "adm", Role.ADMIN)
    before = client.get("/api/system", headers=admin)
    assert before.status_code == 200, before.text
    body = before.json()
    assert body["database"] == "sqlite" and body["providers"][-1] == "CPUExecutionProvider"
    assert {m["name"] for m in body["models"]} >= {"ct_nodule", "cta_vessels", "dr_nodule"}
    assert all(len(m["sha256"]) == 64 for m in body["models"])
    assert body["studies"] == {} and body["overdue_studies"] == 0
    assert body["data_free_bytes"] > 0

    uid = seed.add_study(ctx, patient_name="张三", urgency="critical")
    ctx.queue.enqueue("analyze", f"k-{uid}", study_uid=uid, series_uid=uid,
                      pipeline="ct_nodule")
    with ctx.db.begin() as conn:
        conn.execute(update(studies).where(studies.c.study_uid == uid).values(
            deadline_at=utcnow() - timedelta(minutes=5)))
    body = client.get("/api/system", headers=admin).json()
    assert body["studies"] == {"ready": 1} and body["overdue_studies"] == 1
    assert body["jobs"] == {"queued": 1} and body["oldest_queued_job_s"] >= 0
    assert body["studies_received_24h"] == 1
    assert "张三" not in client.get("/api/system", headers=admin).text


def test_metrics_are_prometheus_text_without_patient_data(
    ctx: AppContext, client: TestClient
) -> None:
    seed.add_study(ctx, patient_name="李四", urgency="urgent")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'countyread_studies{status="ready"} 1' in text
    assert "# TYPE countyread_jobs gauge" in text
    assert 'countyread_model_info{name="ct_nodule"' in text
    assert "李四" not in text and "P001" not in text
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name_labels, value = line.rsplit(" ", 1)
            float(value)  # every sample parses as a number
            assert name_labels.startswith("countyread_")


def test_status_is_for_administrators(ctx: AppContext, client: TestClient) -> None:
    rad = _login(client, ctx, "rad", Role.RADIOLOGIST)
    assert client.get("/api/system", headers=rad).status_code == 403
    assert client.get("/api/system").status_code == 401
