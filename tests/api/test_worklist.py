"""Worklist order (urgency rank, then deadline), deadlines, filters and paging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from countyread.context import AppContext
from countyread.db import findings, studies, utcnow
from tests.api import seed


def _uids(client: TestClient, headers: dict[str, str], query: str = "") -> list[str]:
    r = client.get(f"/api/worklist{query}", headers=headers)
    assert r.status_code == 200, r.text
    return [s["study_uid"] for s in r.json()["items"]]


def test_critical_before_urgent_before_routine_then_deadline(
        ctx: AppContext, client: TestClient, people: dict[str, dict[str, str]]) -> None:
    now = utcnow()
    # Arrival order is deliberately the reverse of the expected worklist order.
    routine_old = seed.add_study(ctx, urgency="routine", received=now - timedelta(hours=30))
    routine_new = seed.add_study(ctx, urgency="routine", received=now - timedelta(hours=1))
    not_analyzable = seed.add_study(ctx, status="not_analyzable", urgency="routine",
                                    received=now - timedelta(hours=2), reason="slice > 5 mm")
    urgent = seed.add_study(ctx, urgency="urgent", received=now - timedelta(hours=3))
    urgent_review = seed.add_study(ctx, status="in_review", urgency="urgent",
                                   received=now - timedelta(hours=5))
    critical_late = seed.add_study(ctx, urgency="critical", received=now - timedelta(minutes=2))
    critical_early = seed.add_study(ctx, urgency="critical", received=now - timedelta(minutes=40))
    # Not on the worklist: waiting for analysis, signed, failed.
    for status in ("received", "queued", "analyzing", "signed", "delivered", "failed"):
        seed.add_study(ctx, status=status, urgency="critical")

    order = _uids(client, people["rad1"])
    assert order == [critical_early, critical_late, urgent_review, urgent, routine_old,
                     not_analyzable, routine_new]
    first = client.get("/api/worklist", headers=people["rad1"]).json()["items"][0]
    assert first["overdue"] is True  # 40 min > 30 min critical deadline
    assert first["urgency"] == "critical"

    # Paging cuts across urgency slices without losing or repeating a study.
    paged = []
    for offset in range(0, 7, 3):
        paged += _uids(client, people["rad1"], f"?offset={offset}&limit=3")
    assert paged == order
    page = client.get("/api/worklist?offset=2&limit=2", headers=people["rad1"]).json()
    assert page["total"] == 7 and [s["study_uid"] for s in page["items"]] == order[2:4]


def test_missing_deadline_is_computed_from_arrival(ctx: AppContext, client: TestClient,
                                                   people: dict[str, dict[str, str]]) -> None:
    received = utcnow() - timedelta(minutes=10)
    no_deadline = seed.add_study(ctx, urgency="critical", received=received, deadline=False)
    no_urgency = seed.add_study(ctx, status="not_analyzable", urgency=None,
                                received=received, deadline=False)
    routine = seed.add_study(ctx, urgency="routine", received=utcnow() - timedelta(days=3))
    items = client.get("/api/worklist", headers=people["rad1"]).json()["items"]
    assert [s["study_uid"] for s in items] == [no_deadline, routine, no_urgency]
    got = datetime.fromisoformat(items[0]["deadline_at"])
    assert abs((got - (received + timedelta(seconds=ctx.settings.deadline_critical_s)))
               .total_seconds()) < 1
    assert items[2]["urgency"] == "routine"
    with ctx.db.begin() as conn:
        stored = conn.execute(select(studies.c.deadline_at).where(
            studies.c.study_uid == no_deadline)).scalar_one()
    assert stored is not None


def test_filters(ctx: AppContext, client: TestClient, people: dict[str, dict[str, str]]) -> None:
    n1 = int(people["_nodes"]["n1"])
    ct = seed.add_study(ctx, urgency="urgent", node_id=n1, modality="CT\\SR")
    dx = seed.add_study(ctx, urgency="routine", modality="DX")
    cr = seed.add_study(ctx, urgency="routine", modality="CR", status="not_analyzable",
                        received=datetime(2026, 1, 2, 8, tzinfo=UTC))
    h = people["rad1"]
    assert _uids(client, h, "?modality=CT") == [ct]
    assert _uids(client, h, "?modality=SR") == [ct]
    assert _uids(client, h, "?modality=C") == []
    assert _uids(client, h, f"?node_id={n1}") == [ct]
    assert _uids(client, h, "?urgency=routine") == [cr, dx]  # cr arrived (and is due) first
    assert _uids(client, h, "?status=not_analyzable") == [cr]
    assert _uids(client, h, "?date_from=2026-01-02&date_to=2026-01-02") == [cr]
    assert set(_uids(client, h, "?date_from=2026-01-03")) == {ct, dx}
    # /api/studies takes the same filters over every status.
    seed.add_study(ctx, status="received", urgency=None, modality="CT")
    r = client.get("/api/studies?modality=CT&status=received", headers=h).json()
    assert r["total"] == 1 and r["items"][0]["status"] == "received"
    assert client.get("/api/worklist?modality=C%25", headers=h).status_code == 422
    assert client.get("/api/worklist?limit=0", headers=h).status_code == 422


def test_study_detail_shape(ctx: AppContext, client: TestClient,
                            people: dict[str, dict[str, str]]) -> None:
    uid, (f1, _) = seed.ready_ct_study(ctx)
    d = client.get(f"/api/studies/{uid}", headers=people["rad1"]).json()
    assert d["status"] == "ready" and d["urgency"] == "urgent"
    assert d["patient_name"] == "张三"
    assert d["series"][0]["instance_count"] == 120
    assert d["analyses"][0]["image_urls"][0].startswith(f"/api/analyses/{d['analyses'][0]['id']}")
    f = next(x for x in d["findings"] if x["id"] == f1)
    assert f["center_lps"] == [-80.5, 40.25, -120.0]
    assert f["category"] == "4B" and f["verdict"] == "pending" and f["revision"] == 0
    assert {"name": "long_axis", "value": 18.0, "unit": "mm"} in f["measurements"]
    assert f["key_image_url"] == f"/api/findings/{f1}/image"
    png = client.get(f["key_image_url"], headers=people["rad1"])
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/api/studies/1.2.x", headers=people["rad1"]).status_code == 400
    assert client.get("/api/studies/1.2.999", headers=people["rad1"]).status_code == 404


def check_page_extras(ctx: AppContext, client: TestClient, headers: dict[str, str]) -> None:
    """Township name, latest AI category and count of findings not rejected, per row."""
    node = seed.add_node(ctx, "TOWNX", name="城关镇卫生院")
    ct_uid, finding_ids = seed.ready_ct_study(ctx, node_id=node)
    with ctx.db.begin() as conn:  # one AI finding rejected: not counted
        conn.execute(findings.update().where(findings.c.id == finding_ids[1])
                     .values(verdict="rejected"))
    cta_uid = seed.add_study(ctx, urgency="routine")
    s = seed.add_series(ctx, cta_uid)
    seed.add_analysis(ctx, cta_uid, s, pipeline="cta", category="no significant stenosis")
    bare = seed.add_study(ctx, urgency="routine")
    r = client.get("/api/worklist", headers=headers)
    assert r.status_code == 200, r.text
    items = {i["study_uid"]: i for i in r.json()["items"]}
    assert (items[ct_uid]["source_node_name"], items[ct_uid]["ai_category"],
            items[ct_uid]["finding_count"]) == ("城关镇卫生院", "4B", 1)
    assert (items[cta_uid]["source_node_name"], items[cta_uid]["ai_category"],
            items[cta_uid]["finding_count"]) == (None, "no significant stenosis", 0)
    assert (items[bare]["ai_category"], items[bare]["finding_count"]) == (None, 0)


def test_worklist_rows_carry_township_ai_category_and_finding_count(
        ctx: AppContext, client: TestClient, people: dict[str, dict[str, str]]) -> None:
    check_page_extras(ctx, client, people["rad1"])
