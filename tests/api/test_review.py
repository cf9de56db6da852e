"""Claims, review versioning, missed findings, sign freeze, amendment, audit, images."""

from __future__ import annotations

import os
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from countyread.context import AppContext
from countyread.db import audit, studies, utcnow
from tests.api import seed

H = dict[str, dict[str, str]]


def _claim(client: TestClient, uid: str, h: dict[str, str]) -> int:
    return client.post(f"/api/studies/{uid}/claim", headers=h).status_code


def test_claim_conflicts_expiry_and_release(ctx: AppContext, client: TestClient,
                                            people: H) -> None:
    uid, _ = seed.ready_ct_study(ctx)
    rad1, rad2, admin = people["rad1"], people["rad2"], people["admin"]
    r = client.post(f"/api/studies/{uid}/claim", headers=rad1)
    assert r.status_code == 200 and r.json()["claimed_by"] == "rad1"
    assert r.json()["status"] == "in_review"
    assert _claim(client, uid, rad1) == 200  # renewing your own claim is fine
    assert _claim(client, uid, rad2) == 409
    # The lock is visible to others in the worklist.
    item = client.get("/api/worklist", headers=rad2).json()["items"][0]
    assert item["claimed_by"] == "rad1" and item["status"] == "in_review"
    # Another radiologist cannot release it; an admin can.
    assert client.delete(f"/api/studies/{uid}/claim", headers=rad2).status_code == 409
    r = client.delete(f"/api/studies/{uid}/claim", headers=admin)
    assert r.status_code == 200 and r.json()["claimed_by"] is None
    assert r.json()["status"] == "ready"
    assert _claim(client, uid, rad2) == 200
    # An expired claim is free for the next radiologist.
    with ctx.db.begin() as conn:
        conn.execute(update(studies).where(studies.c.study_uid == uid)
                     .values(claim_expires_at=utcnow() - timedelta(seconds=1)))
    assert _claim(client, uid, rad1) == 200
    assert client.get(f"/api/studies/{uid}", headers=rad2).json()["claimed_by"] == "rad1"
    # Studies still being analysed cannot be claimed.
    busy = seed.add_study(ctx, status="analyzing", urgency=None)
    assert _claim(client, busy, rad1) == 409


def test_review_versioning(ctx: AppContext, client: TestClient, people: H) -> None:
    uid, (f1, _) = seed.ready_ct_study(ctx)
    rad1 = people["rad1"]
    assert client.patch(f"/api/findings/{f1}", headers=rad1,
                        json={"verdict": "accepted"}).status_code == 409  # no claim yet
    assert _claim(client, uid, rad1) == 200
    steps = [
        {"verdict": "accepted"},
        {"verdict": "edited", "category": "4X", "attributes": {"spiculated": True},
         "comment": "spiculated margin"},
        {"verdict": "edited", "measurements": [{"name": "long_axis", "value": 7.0, "unit": "mm"},
                                               {"name": "short_axis", "value": 6.0,
                                                "unit": "mm"}]},
        {"verdict": "rejected", "comment": "vessel"},
    ]
    for i, body in enumerate(steps, 1):
        r = client.patch(f"/api/findings/{f1}", headers=rad1, json=body)
        assert r.status_code == 200, r.text
        assert r.json()["revision"] == i and r.json()["verdict"] == body["verdict"]
    final = r.json()
    assert final["category"] == "3"  # re-derived from the edited 6.5 mm solid nodule
    assert final["attributes"]["spiculated"] is True and final["reviewed_by"] == "rad1"
    hist = client.get(f"/api/findings/{f1}/revisions", headers=rad1).json()
    assert [h["revision"] for h in hist] == [0, 1, 2, 3, 4]
    assert hist[0]["verdict"] == "pending" and hist[0]["snapshot"]["category"] == "4B"
    assert hist[2]["snapshot"]["category"] == "4X" and hist[2]["comment"] == "spiculated margin"
    assert all(h["changed_by"] == "rad1" for h in hist[1:])
    # Bad review bodies.
    for bad in ({"verdict": "edited"}, {"verdict": "accepted", "category": "2"},
                {"verdict": "maybe"}, {"verdict": "accepted", "unknown": 1}):
        assert client.patch(f"/api/findings/{f1}", headers=rad1, json=bad).status_code in (
            400, 422), bad
    assert client.patch("/api/findings/999999", headers=rad1,
                        json={"verdict": "accepted"}).status_code == 404


def test_cta_stenosis_edit_regrades(ctx: AppContext, client: TestClient, people: H) -> None:
    uid = seed.add_study(ctx, urgency="critical", modality="CT")
    s = seed.add_series(ctx, uid)
    a = seed.add_analysis(ctx, uid, s, pipeline="cta", images=("cpr_left_ica",))
    f = seed.add_finding(ctx, uid, s, a, kind="stenosis", category=None,
                         measurements=[{"name": "stenosis_percent", "value": 75.0, "unit": "%"}],
                         attributes={"vessel": "left_ica", "grade": "severe"},
                         key_image="cpr_left_ica")
    rad1 = people["rad1"]
    assert _claim(client, uid, rad1) == 200
    r = client.patch(f"/api/findings/{f}", headers=rad1, json={
        "verdict": "edited",
        "measurements": [{"name": "stenosis_percent", "value": 55.0, "unit": "%"}]})
    assert r.json()["attributes"]["grade"] == "moderate"
    report = client.get(f"/api/studies/{uid}/report", headers=rad1).json()
    assert "左侧颈内动脉中度狭窄" in report["findings_text"] and "NASCET 约 55%" in \
        report["findings_text"]
    assert "Moderate stenosis of the left internal carotid artery (NASCET 55%)" in \
        report["findings_text_en"]


def test_report_draft_zh_en_edit_and_sign_freezes(ctx: AppContext, client: TestClient,
                                                  people: H) -> None:
    uid, (f1, f2) = seed.ready_ct_study(ctx)
    rad1 = people["rad1"]
    assert _claim(client, uid, rad1) == 200
    client.patch(f"/api/findings/{f1}", headers=rad1, json={"verdict": "accepted"})
    client.patch(f"/api/findings/{f2}", headers=rad1, json={"verdict": "accepted"})
    rep = client.get(f"/api/studies/{uid}/report", headers=rad1).json()
    zh, en = rep["findings_text"], rep["findings_text_en"]
    assert rep["language"] == "zh" and rep["state"] == "generated"
    assert "1. 右肺上叶见实性结节，大小约 18.0 × 14.0 mm，平均径 16.0 mm" in zh
    assert "Lung-RADS 4B 类" in zh and "左肺下叶见部分实性结节" in zh and "实性成分 4.0 mm" in zh
    assert "Solid nodule in the right upper lobe, 18.0 × 14.0 mm" in en
    assert "Part-solid nodule in the left lower lobe" in en
    assert "Lung-RADS 4B" in rep["impression_text"] and "Fleischner" in rep["impression_text"]
    assert "3个月CT复查、PET/CT或组织活检" in rep["impression_text"]
    assert "category 4B" in rep["impression_text_en"]
    assert "CT at 3 months, PET/CT or tissue sampling" in rep["impression_text_en"]
    # Rejecting the 4B nodule drops it from the draft and lowers the study category.
    client.patch(f"/api/findings/{f1}", headers=rad1, json={"verdict": "rejected"})
    rep = client.get(f"/api/studies/{uid}/report", headers=rad1).json()
    assert rep["lung_rads"] == "3" and "右肺上叶" not in rep["findings_text"]
    assert "3–6个月CT复查" in rep["impression_text"]
    # Edit, then read back the saved draft.
    put = client.put(f"/api/studies/{uid}/report", headers=rad1,
                     json={"impression_text": "左肺下叶部分实性结节，建议3个月复查。"})
    assert put.status_code == 200 and put.json()["state"] == "draft"
    got = client.get(f"/api/studies/{uid}/report", headers=rad1).json()
    assert got["impression_text"] == "左肺下叶部分实性结节，建议3个月复查。"
    assert got["findings_text"] == rep["findings_text"]
    assert client.get(f"/api/studies/{uid}/report?regenerate=true",
                      headers=rad1).json()["state"] == "generated"

    signed = client.post(f"/api/studies/{uid}/sign", headers=rad1)
    assert signed.status_code == 200, signed.text
    final = client.get(f"/api/studies/{uid}/report", headers=rad1).json()
    assert final["state"] == "signed" and final["signed_by"] == "rad1"
    assert final["impression_text"] == "左肺下叶部分实性结节，建议3个月复查。"
    for method, path, body in (
        ("PATCH", f"/api/findings/{f2}", {"verdict": "rejected"}),
        ("POST", f"/api/studies/{uid}/findings", {"kind": "lung_nodule"}),
        ("PUT", f"/api/studies/{uid}/report", {"impression_text": "x"}),
        ("POST", f"/api/studies/{uid}/sign", None),
        ("POST", f"/api/studies/{uid}/claim", None),
    ):
        r = client.request(method, path, headers=rad1, json=body)
        assert r.status_code == 409, (method, path, r.text)
    assert client.get(f"/api/findings/{f2}/revisions",
                      headers=rad1).json()[-1]["verdict"] == "accepted"


def test_report_for_radiograph_and_empty_ct(ctx: AppContext, client: TestClient,
                                            people: H) -> None:
    dx = seed.add_study(ctx, modality="DX")
    s = seed.add_series(ctx, dx, modality="DX", count=1)
    seed.add_finding(ctx, dx, s, None, kind="dr_nodule", category=None, key_image=None,
                     measurements=[{"name": "diameter", "value": 12.0, "unit": "mm"}],
                     attributes={"side": "right"})
    rad1 = people["rad1"]
    assert _claim(client, dx, rad1) == 200
    fid = client.get(f"/api/studies/{dx}", headers=rad1).json()["findings"][0]["id"]
    client.patch(f"/api/findings/{fid}", headers=rad1, json={"verdict": "accepted"})
    rep = client.get(f"/api/studies/{dx}/report", headers=rad1).json()
    assert "右肺见结节影，直径约 12.0 mm" in rep["findings_text"]
    assert "建议胸部CT" in rep["impression_text"] and "chest CT" in rep["impression_text_en"]
    empty = seed.add_study(ctx, modality="CT")
    rep = client.get(f"/api/studies/{empty}/report", headers=rad1).json()
    assert rep["findings_text"] == "双肺未见明确结节。" and rep["lung_rads"] == "1"


def test_audit_records_who_what_when_where(ctx: AppContext, client: TestClient,
                                           people: H) -> None:
    uid, (f1, f2) = seed.ready_ct_study(ctx)
    rad1 = people["rad1"]
    client.get(f"/api/studies/{uid}", headers=rad1)
    _claim(client, uid, rad1)
    client.patch(f"/api/findings/{f1}", headers=rad1, json={"verdict": "accepted"})
    client.patch(f"/api/findings/{f2}", headers=rad1, json={"verdict": "rejected"})
    client.post(f"/api/studies/{uid}/sign", headers=rad1)
    page = client.get(f"/api/audit?study_uid={uid}&limit=50", headers=people["admin"]).json()
    actions = [e["action"] for e in reversed(page["items"])]
    assert actions[:5] == ["view", "claim", "review", "review", "sign"]
    assert all(e["username"] == "rad1" and e["client"] == "testclient" for e in page["items"])
    with ctx.db.begin() as conn:
        logins = conn.execute(select(audit.c.username).where(audit.c.action == "login")).all()
    assert len(logins) == 5


def test_image_paths_cannot_escape(ctx: AppContext, client: TestClient, people: H,
                                   tmp_path: os.PathLike[str]) -> None:
    uid, _ = seed.ready_ct_study(ctx)
    d = client.get(f"/api/studies/{uid}", headers=people["rad1"]).json()
    a = d["analyses"][0]["id"]
    secret = seed.artifacts_dir(ctx, uid).parent / "secret.png"
    secret.write_bytes(b"\x89PNG not yours")
    art = seed.artifacts_dir(ctx, uid) / f"analysis-{a}"
    os.symlink(secret, art / "link.png")
    for name in ("..%2Fsecret.png", "..%2F..%2Fsecret", "link", "link.png", "nodule_1%00",
                 "%2Fetc%2Fpasswd", "missing"):
        r = client.get(f"/api/analyses/{a}/images/{name}", headers=people["rad1"])
        assert r.status_code == 404, (name, r.status_code)
    ok = client.get(f"/api/analyses/{a}/images/overview", headers=people["rad1"])
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"
