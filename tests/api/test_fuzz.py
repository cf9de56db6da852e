"""Property-based fuzzing of the OpenAPI schema (schemathesis): no request yields a 5xx.

Runs as an authenticated admin and as a radiologist holding a claim (so the review,
report and sign handlers are reached past their role checks), on a seeded database.
The event stream is left out: it is a long-lived response by design.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from api.main import create_app
from countyread.context import AppContext
from countyread.settings import load_settings
from tests.api import seed
from tests.api.conftest import make_people

_EXAMPLES = 12


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    ctx = AppContext.create(load_settings(data_dir=Path(tmp_path_factory.mktemp("fuzz")),
                                          environment="test"))
    app = create_app(ctx)
    with TestClient(app) as client:
        people = make_people(ctx, client)
        for _ in range(2):
            uid, _ = seed.ready_ct_study(ctx, node_id=int(people["_nodes"]["n1"]))
            client.post(f"/api/studies/{uid}/claim", headers=people["rad1"])
        yield {"app": app, "people": people}
    ctx.close()


def test_no_server_errors(fuzz_env: dict[str, Any]) -> None:
    """Every operation, a bounded number of generated requests each, as admin and radiologist.

    Each operation gets its own Hypothesis run from schemathesis's strategy for it (the
    pytest plugin's extra phases took minutes here; this keeps the whole test < 1 min).
    """
    api = schemathesis.openapi.from_asgi("/openapi.json", fuzz_env["app"]).exclude(
        path="/api/events")
    people = fuzz_env["people"]
    ran = []
    for result in api.get_all_operations():
        op = result.ok()

        @given(case=op.as_strategy())
        @settings(max_examples=_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            for who in ("admin", "rad1"):
                case.call_and_validate(headers=people[who], checks=[not_a_server_error])

        run()
        ran.append(op.label)
    assert len(ran) >= 20, ran
