"""The radiologist page in a real Chromium (Playwright): login, live worklist, review, sign."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.main import create_app
from countyread.context import AppContext
from countyread.domain import Role
from tests.api import seed
from tests.conftest import require

pytestmark = pytest.mark.browser
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def server(ctx: AppContext) -> Iterator[str]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def test_review_and_sign_in_the_browser(ctx: AppContext, server: str) -> None:
    require(CHROMIUM.exists(), "chromium not installed at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    seed.add_user(ctx, "rad1", Role.RADIOLOGIST)
    routine = seed.add_study(ctx, urgency="routine", patient_name="李四")
    uid, _ = seed.ready_ct_study(ctx)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(server + "/")
        page.fill("#username", "rad1")
        page.fill("#password", seed.PASSWORD)
        page.click("#login-btn")
        rows = page.locator("#worklist tbody tr")
        sync_api.expect(rows).to_have_count(2)
        assert rows.nth(0).get_attribute("data-uid") == uid
        assert rows.nth(1).get_attribute("data-uid") == routine
        sync_api.expect(page.locator("th").first).to_have_text("紧急度")

        # A critical study arrives: it appears on top without a reload, with a banner.
        critical = seed.add_study(ctx, urgency="critical", patient_name="王五")
        sync_api.expect(rows).to_have_count(3, timeout=8000)
        sync_api.expect(rows.nth(0)).to_have_attribute("data-uid", critical)
        sync_api.expect(rows.nth(0)).to_have_class("urgency-critical")
        sync_api.expect(page.locator("#banner")).to_be_visible()

        page.click(f"#worklist tr[data-uid='{uid}']")
        page.click("#claim")
        cards = page.locator("#findings .finding")
        sync_api.expect(cards).to_have_count(2)
        sync_api.expect(cards.nth(0).locator("button.accept")).to_be_visible()
        page.wait_for_function(
            "() => [...document.querySelectorAll('#findings img')]"
            ".every(i => i.complete && i.naturalWidth > 0)")
        for i in range(2):
            cards.nth(i).locator("button.accept").click()
            sync_api.expect(page.locator(f"#findings .finding >> nth={i}")).to_have_class(
                "finding verdict-accepted")
        sync_api.expect(page.locator("#r-findings")).to_have_value(
            re.compile("右肺上叶见实性结节"))
        page.click("#lang")
        sync_api.expect(page.locator("#sign")).to_have_text("Sign")
        page.click("#sign")
        sync_api.expect(page.locator("#study-view")).to_have_attribute("data-status", "signed")
        sync_api.expect(page.locator("#report-state")).to_have_text("Signed")
        browser.close()
