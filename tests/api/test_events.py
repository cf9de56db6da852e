"""Server-sent events: a new critical study shows up on an open stream without reload."""

from __future__ import annotations

import json
import threading
import time

from fastapi.testclient import TestClient

from countyread.context import AppContext
from tests.api import seed


def test_new_critical_study_is_announced(ctx: AppContext, client: TestClient,
                                         people: dict[str, dict[str, str]]) -> None:
    seed.add_study(ctx, urgency="routine")
    events: list[dict[str, object]] = []

    def arrive_later() -> None:
        time.sleep(1.5)
        seed.add_study(ctx, urgency="critical")

    t = threading.Thread(target=arrive_later)
    with client.stream("GET", "/api/events?max_s=5", headers=people["tech"]) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        t.start()
        started = time.monotonic()
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if len(events) == 2:
                    break
        elapsed = time.monotonic() - started
    t.join()
    assert events[0] == {"type": "worklist", "critical_waiting": 0, "first": True}
    assert events[1] == {"type": "worklist", "critical_waiting": 1, "first": False}
    assert elapsed < 4.5  # announced within about a second of the arrival


def test_stream_needs_login(client: TestClient) -> None:
    assert client.get("/api/events?max_s=1").status_code == 401
