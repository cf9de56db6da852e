"""The radiologist page in a real Chromium (Playwright): login, live worklist, review, sign."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.main import create_app
from countyread.context import AppContext
from countyread.db import findings
from countyread.domain import Role
from tests.api import seed
from tests.api.test_viewer import MARK, N_SLICES, STEP, store_ct_phantom
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


def _logged_in(pw: Any, server: str, username: str) -> tuple[Any, Any]:
    """A headless Chromium on the page, logged in as ``username``."""
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                 args=["--no-sandbox"])
    page = browser.new_page()
    page.goto(server + "/")
    page.fill("#username", username)
    page.fill("#password", seed.PASSWORD)
    page.click("#login-btn")
    return browser, page


def test_review_and_sign_in_the_browser(ctx: AppContext, server: str) -> None:
    require(CHROMIUM.exists(), "chromium not installed at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    seed.add_user(ctx, "rad1", Role.RADIOLOGIST)
    routine = seed.add_study(ctx, urgency="routine", patient_name="李四")
    uid, _ = seed.ready_ct_study(ctx)
    with sync_api.sync_playwright() as pw:
        browser, page = _logged_in(pw, server, "rad1")
        rows = page.locator("#worklist tbody tr")
        sync_api.expect(rows).to_have_count(2)
        assert rows.nth(0).get_attribute("data-uid") == uid
        assert rows.nth(1).get_attribute("data-uid") == routine
        sync_api.expect(page.locator("th").first).to_have_text("紧急度")
        sync_api.expect(rows.nth(0).locator("td.ai")).to_have_text("4B · 2 处发现")

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
        # what the pipelines emit (long_axis, mm3, part_solid) reads as a radiologist writes it
        sync_api.expect(cards.nth(0).locator("h4")).to_contain_text("肺结节")
        sync_api.expect(cards.nth(0).locator("li", has_text="长径")).to_have_text("长径: 18 mm")
        sync_api.expect(cards.nth(0).locator("li", has_text="体积")).to_have_text("体积: 2100 mm³")
        sync_api.expect(cards.nth(1).locator("li", has_text="类型")).to_have_text("类型: 部分实性")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#findings img')]"
            ".every(i => i.complete && i.naturalWidth > 0)")
        # keyboard: J selects the first finding, A accepts it and moves to the next pending
        page.keyboard.press("j")
        sync_api.expect(cards.nth(0)).to_have_attribute("aria-current", "true")
        page.keyboard.press("a")
        sync_api.expect(cards.nth(0)).to_have_class("finding verdict-accepted")
        sync_api.expect(cards.nth(1)).to_have_attribute("aria-current", "true")
        cards.nth(1).locator("button.accept").click()
        sync_api.expect(cards.nth(1)).to_have_class("finding verdict-accepted")
        sync_api.expect(page.locator("#r-findings")).to_have_value(
            re.compile("右肺上叶见实性结节"))
        page.click("#lang")
        sync_api.expect(page.locator("#sign")).to_have_text("Sign")
        sync_api.expect(cards.nth(1).locator("li", has_text="Type")).to_have_text(
            "Type: part-solid")
        page.click("#sign")
        sync_api.expect(page.locator("#study-view")).to_have_attribute("data-status", "signed")
        sync_api.expect(page.locator("#report-state")).to_have_text("Signed")
        browser.close()


def test_viewer_jumps_to_a_finding_and_draws_it(ctx: AppContext, server: str) -> None:
    require(CHROMIUM.exists(), "chromium not installed at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    seed.add_user(ctx, "rad1", Role.RADIOLOGIST)
    seed.add_study(ctx, status="not_analyzable", urgency="routine", patient_name="赵六",
                   reason="only 4 slices")
    uid = seed.add_study(ctx, urgency="urgent", patient_name="张三")
    series_uid, _ = store_ct_phantom(ctx, uid)
    fid = seed.add_finding(ctx, uid, series_uid, None, key_image=None,
                           measurements=seed.nodule_measurements(4.0, 3.0))
    # a CTA analysis of another series: renders, VR frames and one graded stenosis
    cta_series = seed.add_series(ctx, uid)
    cta = seed.add_analysis(ctx, uid, cta_series, pipeline="cta", images=(
        "mip_coronal", "scpr_ICA_L", "vr_000", "vr_001", "vr_002", "vr_003"))
    seed.add_finding(ctx, uid, cta_series, cta, kind="stenosis", category="severe",
                     key_image="scpr_ICA_L", attributes={
                         "vessel": "ICA_L", "grade": "severe", "method": "NASCET"},
                     measurements=[{"name": "stenosis_percent", "value": 72.0, "unit": "%"},
                                   {"name": "min_diameter", "value": 1.4, "unit": "mm"}])
    # the centre of the marked voxel (display slice MARK[0], row MARK[1], column MARK[2])
    with ctx.db.begin() as conn:
        conn.execute(findings.update().where(findings.c.id == fid).values(
            center_x=-40.0 + 0.7 * MARK[2], center_y=-30.0 + 0.8 * MARK[1],
            center_z=-100.0 + STEP * MARK[0]))
    with sync_api.sync_playwright() as pw:
        browser, page = _logged_in(pw, server, "rad1")
        rows = page.locator("#worklist tbody tr")
        sync_api.expect(rows).to_have_count(2)
        sync_api.expect(rows.nth(1).locator("td.status")).to_have_text("无法分析：only 4 slices")
        sync_api.expect(rows.nth(0).locator("td.deadline")).to_contain_text("剩余")
        page.select_option("#f-status", "not_analyzable")
        sync_api.expect(rows).to_have_count(1)
        sync_api.expect(rows.nth(0)).to_have_attribute("data-status", "not_analyzable")
        page.select_option("#f-status", "")
        sync_api.expect(rows).to_have_count(2)

        page.click(f"#worklist tr[data-uid='{uid}']")
        canvas = page.locator("#viewer-canvas")
        sync_api.expect(canvas).to_have_attribute("data-slice", str(MARK[0]))
        page.locator("#viewer-canvas").focus()
        page.keyboard.press("PageUp")
        sync_api.expect(page.locator("#slice-index")).to_have_text(f"1 / {N_SLICES}")
        sync_api.expect(canvas).to_have_attribute("data-slice", "0")
        assert json.loads(canvas.get_attribute("data-markers") or "") == []
        canvas.hover()
        page.mouse.wheel(0, 100)
        sync_api.expect(page.locator("#slice-index")).to_have_text(f"2 / {N_SLICES}")
        page.keyboard.press("ArrowUp")
        sync_api.expect(page.locator("#slice-index")).to_have_text(f"1 / {N_SLICES}")

        page.click(f"#findings .finding[data-id='{fid}'] h4")
        sync_api.expect(page.locator("#slice-index")).to_have_text(f"{MARK[0] + 1} / {N_SLICES}")
        sync_api.expect(canvas).to_have_attribute("data-slice", str(MARK[0]))
        markers = json.loads(canvas.get_attribute("data-markers") or "")
        assert [(m["id"], m["solid"]) for m in markers] == [(fid, True)]
        m = markers[0]
        pixel = ("([x, y]) => [...document.getElementById('viewer-canvas').getContext('2d')"
                 ".getImageData(x, y, 1, 1).data]")
        rgba = page.evaluate(pixel, [m["x"] + m["r"], m["y"]])
        centre = page.evaluate(pixel, [m["x"], m["y"]])
        assert rgba[0] > 200 and 80 < rgba[1] < 170 and rgba[2] < 60, rgba  # pending orange
        assert min(centre[:3]) > 200, centre  # the marked voxel, white in the lung window

        with page.expect_request(lambda r: f"/slices/{MARK[0]}.png" in r.url
                                 and "window=bone" in r.url):
            page.click(".wl-btn[data-window='bone']")
        sync_api.expect(page.locator(".wl-btn[data-window='bone']")).to_have_attribute(
            "aria-pressed", "true")
        # dragging right widens the window: the request carries an explicit centre/width
        box = canvas.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + 100, box["y"] + 100)
        page.mouse.down()
        with page.expect_request(lambda r: "ww=" in r.url and "window=" not in r.url):
            page.mouse.move(box["x"] + 160, box["y"] + 100)
        page.mouse.up()
        sync_api.expect(page.locator(".wl-btn[aria-pressed='true']")).to_have_count(0)
        sync_api.expect(page.locator("#window-values")).to_contain_text("W 2")
        page.keyboard.press("?")
        sync_api.expect(page.locator("#help")).to_be_visible()
        page.keyboard.press("Escape")
        sync_api.expect(page.locator("#help")).to_be_hidden()

        # renders: MIP and stretched CPR in the gallery, VR frames cycled by the player
        sync_api.expect(page.locator("#gallery figure.render")).to_have_count(2)
        sync_api.expect(page.locator("#vr-slider")).to_have_attribute("max", "3")
        page.click("#vr-play")
        sync_api.expect(page.locator("#vr-slider")).not_to_have_value("0")
        page.click("#vr-play")
        stenosis = page.locator("#stenosis-table tbody tr")
        sync_api.expect(stenosis).to_have_count(1)
        sync_api.expect(stenosis.locator("td").nth(1)).to_have_text("重度狭窄")
        sync_api.expect(stenosis.locator("td").nth(2)).to_have_text("72.0 %")

        sync_api.expect(page.locator(".wl-btn[data-window='bone']")).to_have_text("骨窗")
        page.click("#lang")
        sync_api.expect(page.locator(".wl-btn[data-window='bone']")).to_have_text("Bone")
        sync_api.expect(page.locator("#help h3")).to_have_text("Keyboard shortcuts")
        sync_api.expect(stenosis.locator("td").nth(1)).to_have_text("Severe")
        page.click("#back")
        sync_api.expect(rows.nth(1).locator("td.status")).to_have_text(
            "Not analyzable: only 4 slices")
        sync_api.expect(rows.nth(0).locator("td.deadline")).to_contain_text("due in")
        sync_api.expect(page.locator("label", has=page.locator("#f-modality"))).to_contain_text(
            "Modality")
        browser.close()
