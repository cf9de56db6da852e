"""Node administration over HTTP, including the urgent-alert consent."""

from __future__ import annotations

from fastapi.testclient import TestClient

from countyread.context import AppContext
from countyread.domain import Role
from countyread.nodes import list_nodes
from tests.api import seed


def test_admin_adds_a_township_that_consents_to_urgent_alerts(
    ctx: AppContext, client: TestClient
) -> None:
    seed.add_user(ctx, "adm", Role.ADMIN)
    token = client.post("/api/auth/token",
                        data={"username": "adm", "password": seed.PASSWORD}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    r = client.post("/api/nodes", headers=headers, json={
        "name": "城关镇卫生院", "ae_title": "TOWN7", "host": "10.0.0.7", "port": 104,
        "kind": "township", "send": ["SC", "KOS", "ALERT"]})
    assert r.status_code == 201, r.text
    assert r.json()["send"] == ["SC", "KOS", "ALERT"]
    (node,) = [n for n in list_nodes(ctx.db) if n.ae_title == "TOWN7"]
    assert "ALERT" in node.send
    bad = client.post("/api/nodes", headers=headers, json={
        "name": "x", "ae_title": "TOWN8", "send": ["SC", "PDF"]})
    assert bad.status_code == 422
