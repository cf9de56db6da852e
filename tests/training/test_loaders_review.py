"""Review labels come only from signed reports, as signed: driven through the real API on a
real SQLite database (claim, verdicts, sign, amend, re-sign)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from countyread.context import AppContext
from countyread.domain import Role
from countyread.settings import load_settings
from tests.api import seed
from training.loaders.review import ReviewCase, load_review


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AppContext]:
    context = AppContext.create(load_settings(data_dir=tmp_path, environment="test"))
    yield context
    context.close()


@pytest.fixture
def client(ctx: AppContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def _login(client: TestClient, name: str) -> dict[str, str]:
    r = client.post("/api/auth/token", data={"username": name, "password": seed.PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _labels(case: ReviewCase) -> tuple[list[tuple[float, float, str]], list[float]]:
    pos = sorted((n.center_lps[0], n.diameter_mm, n.source) for n in case.positives)
    return pos, sorted(n.center_lps[0] for n in case.negatives)


def _only(ctx: AppContext, **kw: bool) -> ReviewCase:
    (case,) = list(load_review(ctx, **kw))
    return case


def test_labels_follow_the_signed_revision(ctx: AppContext, client: TestClient) -> None:
    seed.add_user(ctx, "rad1", Role.RADIOLOGIST)
    h = _login(client, "rad1")
    study_uid, (f1, f2) = seed.ready_ct_study(ctx)
    other_uid, (g1, _) = seed.ready_ct_study(ctx)  # reviewed, never signed

    def patch(fid: int, body: dict[str, object]) -> None:
        r = client.patch(f"/api/findings/{fid}", headers=h, json=body)
        assert r.status_code == 200, r.text

    for uid in (study_uid, other_uid):
        assert client.post(f"/api/studies/{uid}/claim", headers=h).status_code == 200
    patch(f1, {"verdict": "accepted"})
    patch(f2, {"verdict": "rejected"})
    patch(g1, {"verdict": "accepted"})
    assert list(load_review(ctx)) == []  # verdicts without a signature are not labels
    research = {c.study_uid: c for c in load_review(ctx, include_unsigned=True)}
    assert set(research) == {study_uid, other_uid}
    assert research[study_uid].revision is None

    assert client.post(f"/api/studies/{study_uid}/sign", headers=h).status_code == 200
    signed = _only(ctx)
    assert signed.study_uid == study_uid and signed.revision == 1
    # seed: both AI findings at x = -80.5; f1 has mean diameter 16.0 (18 x 14 mm)
    assert _labels(signed) == ([(-80.5, 16.0, "review:ai:accepted")], [-80.5])

    # Amendment in progress: edits are not labels until signed again.
    assert client.post(f"/api/studies/{study_uid}/amend", headers=h).status_code == 200
    patch(f1, {"verdict": "edited", "center_lps": [-70.0, 40.25, -120.0],
               "measurements": [{"name": "long_axis", "value": 10.0, "unit": "mm"},
                                {"name": "short_axis", "value": 8.0, "unit": "mm"}]})
    patch(f2, {"verdict": "accepted"})
    added = client.post(f"/api/studies/{study_uid}/findings", headers=h, json={
        "kind": "lung_nodule", "center_lps": [60.0, 20.0, -100.0],
        "measurements": [{"name": "long_axis", "value": 5.0, "unit": "mm"},
                         {"name": "short_axis", "value": 4.0, "unit": "mm"}]})
    assert added.status_code == 201, added.text
    in_amendment = _only(ctx)
    assert in_amendment.revision == 1 and _labels(in_amendment) == _labels(signed)
    current = {c.study_uid: c for c in load_review(ctx, include_unsigned=True)}[study_uid]
    assert len(current.positives) == 3 and current.negatives == ()

    assert client.post(f"/api/studies/{study_uid}/sign", headers=h).status_code == 200
    amended = _only(ctx)
    assert amended.revision == 2
    # f2 (9 x 7 mm, rejected at first) is now accepted; f1 was moved and re-measured.
    assert _labels(amended) == ([(-80.5, 8.0, "review:ai:accepted"),
                                 (-70.0, 9.0, "review:ai:edited"),
                                 (60.0, 4.5, "review:radiologist:accepted")], [])
