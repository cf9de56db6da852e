"""The core review flow, shared by the SQLite and PostgreSQL tests."""

from __future__ import annotations

from fastapi.testclient import TestClient

from countyread.context import AppContext
from countyread.domain import Role
from tests.api import seed


def login(client: TestClient, name: str) -> dict[str, str]:
    r = client.post("/api/auth/token", data={"username": name, "password": seed.PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def run_core_flow(ctx: AppContext, client: TestClient) -> str:
    """Login, worklist, claim (with a conflict), review, add, report, sign, amend, re-sign."""
    node = seed.add_node(ctx, "FLOW1")
    seed.add_user(ctx, "flow_rad1", Role.RADIOLOGIST)
    seed.add_user(ctx, "flow_rad2", Role.RADIOLOGIST)
    study_uid, (f1, f2) = seed.ready_ct_study(ctx, node_id=node)
    r1, r2 = login(client, "flow_rad1"), login(client, "flow_rad2")

    wl = client.get("/api/worklist", headers=r1).json()
    assert study_uid in [s["study_uid"] for s in wl["items"]]

    assert client.post(f"/api/studies/{study_uid}/claim", headers=r1).status_code == 200
    conflict = client.post(f"/api/studies/{study_uid}/claim", headers=r2)
    assert conflict.status_code == 409 and "flow_rad1" in conflict.json()["detail"]
    assert client.patch(f"/api/findings/{f1}", headers=r2,
                        json={"verdict": "accepted"}).status_code == 409

    early = client.post(f"/api/studies/{study_uid}/sign", headers=r1)
    assert early.status_code == 409 and "verdict" in early.json()["detail"]

    ok = client.patch(f"/api/findings/{f1}", headers=r1, json={"verdict": "accepted"})
    assert ok.status_code == 200 and ok.json()["revision"] == 1
    edited = client.patch(f"/api/findings/{f2}", headers=r1, json={
        "verdict": "edited", "comment": "re-measured",
        "measurements": [{"name": "long_axis", "value": 10.0, "unit": "mm"},
                         {"name": "short_axis", "value": 8.0, "unit": "mm"},
                         {"name": "solid_part_diameter", "value": 7.0, "unit": "mm"}]})
    assert edited.status_code == 200, edited.text
    assert edited.json()["category"] == "4A"  # part-solid, solid part 6 to < 8 mm
    history = client.get(f"/api/findings/{f2}/revisions", headers=r1).json()
    assert [h["revision"] for h in history] == [0, 1]
    assert history[0]["snapshot"]["category"] == "3" and history[1]["changed_by"] == "flow_rad1"

    added = client.post(f"/api/studies/{study_uid}/findings", headers=r1, json={
        "kind": "lung_nodule", "center_lps": [60.0, 20.0, -100.0],
        "measurements": [{"name": "long_axis", "value": 5.0, "unit": "mm"},
                         {"name": "short_axis", "value": 4.0, "unit": "mm"}],
        "attributes": {"type": "solid", "lobe": "RML"}})
    assert added.status_code == 201 and added.json()["source"] == "radiologist"

    report = client.get(f"/api/studies/{study_uid}/report", headers=r1).json()
    assert report["state"] == "generated" and report["lung_rads"] == "4B"
    assert "右肺上叶" in report["findings_text"] and "Lung-RADS 4B" in report["findings_text"]
    assert "right upper lobe" in report["findings_text_en"]

    signed = client.post(f"/api/studies/{study_uid}/sign", headers=r1)
    assert signed.status_code == 200, signed.text
    assert signed.json()["revision"] == 1
    detail = client.get(f"/api/studies/{study_uid}", headers=r1).json()
    assert detail["status"] == "signed" and detail["revision"] == 1
    frozen = client.patch(f"/api/findings/{f1}", headers=r1, json={"verdict": "rejected"})
    assert frozen.status_code == 409

    assert client.post(f"/api/studies/{study_uid}/amend", headers=r2).status_code == 200
    assert client.patch(f"/api/findings/{f1}", headers=r2,
                        json={"verdict": "rejected", "comment": "vessel"}).status_code == 200
    resigned = client.post(f"/api/studies/{study_uid}/sign", headers=r2)
    assert resigned.status_code == 200 and resigned.json()["revision"] == 2
    return study_uid
