"""Every role x endpoint combination that must be refused is refused.

Roles: anonymous (401 everywhere but login), technologist (reads its own township's
studies only; 403 on review/sign/admin; another township's study is a 404 so UIDs cannot
be probed), radiologist (403 on admin pages), admin (403 on review and sign).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.main import create_app
from countyread.context import AppContext
from countyread.db import findings
from countyread.settings import load_settings
from tests.api import seed
from tests.api.conftest import make_people
from tests.api.test_viewer import store_ct_phantom

READERS = {"tech", "rad1", "admin"}
Endpoint = tuple[str, str, Any, set[str], bool]  # method, path, json, allowed, study-scoped


def _endpoints(study: str, finding: int, analysis: int, series: str = "1.2.3") -> list[Endpoint]:
    s = f"/api/studies/{study}"
    return [
        ("GET", "/api/auth/me", None, READERS, False),
        ("GET", "/api/worklist", None, READERS, False),
        ("GET", "/api/studies", None, READERS, False),
        ("GET", s, None, READERS, True),
        ("POST", f"{s}/claim", None, {"rad1"}, True),
        ("DELETE", f"{s}/claim", None, {"rad1", "admin"}, True),
        ("POST", f"{s}/findings", {"kind": "lung_nodule"}, {"rad1"}, True),
        ("POST", f"{s}/amend", None, {"rad1"}, True),
        ("PATCH", f"/api/findings/{finding}", {"verdict": "accepted"}, {"rad1"}, True),
        ("GET", f"/api/findings/{finding}/revisions", None, READERS, True),
        ("GET", f"/api/findings/{finding}/image", None, READERS, True),
        ("GET", f"/api/analyses/{analysis}/images/nodule_1", None, READERS, True),
        ("GET", f"{s}/report", None, READERS, True),
        ("PUT", f"{s}/report", {"findings_text": "x"}, {"rad1"}, True),
        ("POST", f"{s}/sign", None, {"rad1"}, True),
        ("GET", f"{s}/deliveries", None, READERS, True),
        ("POST", f"{s}/deliveries/1/resend", None, {"rad1", "admin"}, True),
        ("GET", "/api/nodes", None, {"admin"}, False),
        ("POST", "/api/nodes", {"name": "PACS", "ae_title": "PACS9"}, {"admin"}, False),
        ("GET", "/api/audit", None, {"admin"}, False),
        ("GET", "/api/users", None, {"admin"}, False),
        ("GET", "/api/system", None, {"admin"}, False),
        ("POST", "/api/users", {"username": "x1", "password": "password-1", "role": "admin"},
         {"admin"}, False),
        ("GET", "/api/events?max_s=1", None, READERS, False),
        ("GET", f"/api/series/{series}/geometry", None, READERS, True),
        ("GET", f"/api/series/{series}/slices/0.png?window=lung", None, READERS, True),
    ]


def _template(path: str) -> str:
    """``/api/studies/1.2.3/claim`` -> ``/api/studies/{}/claim`` (ids, UIDs: leading digit)."""
    return "/".join("{}" if p[:1].isdigit() else p for p in path.split("?")[0].split("/"))


def test_matrix_covers_every_api_route(shared: tuple[TestClient, Any]) -> None:
    app = shared[0].app
    routes = {
        (m, r.path.replace("{study_uid}", "{}").replace("{finding_id}", "{}")
         .replace("{analysis_id}", "{}").replace("{delivery_id}", "{}")
         .replace("{name}", "nodule_1").replace("{series_uid}", "{}")
         .replace("{index}.png", "{}"))
        for r in app.routes if isinstance(r, APIRoute) and r.path.startswith("/api/")
        for m in r.methods
    }
    covered = {(m, _template(p)) for m, p, *_ in _endpoints("1.2.3", 1, 1)}
    missing = routes - covered - {("POST", "/api/auth/token")}
    assert not missing, f"add these routes to the authorization matrix: {missing}"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    """One database for the whole matrix: the checks only look at 401/403/404."""
    ctx = AppContext.create(load_settings(data_dir=tmp_path_factory.mktemp("authz"),
                                          environment="test"))
    with TestClient(create_app(ctx)) as client:
        people = make_people(ctx, client)
        n1, n2 = int(people["_nodes"]["n1"]), int(people["_nodes"]["n2"])
        s1, (f1, _) = seed.ready_ct_study(ctx, node_id=n1)
        s2, (f2, _) = seed.ready_ct_study(ctx, node_id=n2)
        with ctx.db.begin() as conn:
            a1 = conn.execute(select(findings.c.analysis_id).where(findings.c.id == f1)).scalar()
            a2 = conn.execute(select(findings.c.analysis_id).where(findings.c.id == f2)).scalar()
        # stored images, so the viewer routes answer 200 where allowed (not a vacuous 404)
        v1, _ = store_ct_phantom(ctx, s1)
        v2, _ = store_ct_phantom(ctx, s2)
        yield client, (people, _endpoints(s1, f1, int(a1), v1), _endpoints(s2, f2, int(a2), v2))
    ctx.close()


@pytest.fixture
def client(shared: tuple[TestClient, Any]) -> TestClient:
    return shared[0]


@pytest.fixture
def people(shared: tuple[TestClient, Any]) -> dict[str, dict[str, str]]:
    return shared[1][0]  # type: ignore[no-any-return]


@pytest.fixture
def world(shared: tuple[TestClient, Any]) -> tuple[list[Endpoint], list[Endpoint]]:
    return shared[1][1], shared[1][2]


def _call(client: TestClient, method: str, path: str, body: Any,
          headers: dict[str, str]) -> int:
    return client.request(method, path, json=body, headers=headers).status_code


def test_anonymous_is_refused_everywhere(client: TestClient, world: Any) -> None:
    for method, path, body, *_ in world[0]:
        assert _call(client, method, path, body, {}) == 401, (method, path)


@pytest.mark.parametrize("role", ["tech", "rad1", "admin"])
def test_roles_are_refused_what_they_may_not_do(client: TestClient, world: Any,
                                                people: dict[str, dict[str, str]],
                                                role: str) -> None:
    for method, path, body, allowed, _scoped in world[0]:
        status = _call(client, method, path, body, people[role])
        if role in allowed:
            assert status not in (401, 403), (role, method, path, status)
        else:
            assert status == 403, (role, method, path, status)


def test_technologist_cannot_see_another_township(client: TestClient, world: Any,
                                                  people: dict[str, dict[str, str]]) -> None:
    own, other = world
    for method, path, body, allowed, scoped in other:
        if scoped and "tech" in allowed:
            assert _call(client, method, path, body, people["tech"]) == 404, (method, path)
    listed = client.get("/api/studies", headers=people["tech"]).json()["items"]
    worklist = client.get("/api/worklist", headers=people["tech"]).json()["items"]
    own_uid = own[3][1].rsplit("/", 1)[1]
    other_uid = other[3][1].rsplit("/", 1)[1]
    for items in (listed, worklist):
        uids = {s["study_uid"] for s in items}
        assert own_uid in uids and other_uid not in uids
    # The radiologist sees both townships.
    rad = {s["study_uid"] for s in client.get("/api/worklist", headers=people["rad1"]).json()[
        "items"]}
    assert {own_uid, other_uid} <= rad
