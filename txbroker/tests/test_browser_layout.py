"""The operator's lists and dashboard at 1,280 x 800, in a real browser (Debian's chromium
through Playwright; fixtures from test_browser): the columns an operator reads first, their
headers and the first rows' cells, lie inside the viewport with the navigation sidebar open,
nothing scrolls sideways, long ids are cut with the whole on hover and on the clipboard, and
the dashboard refreshes itself and lists the live worker. Screenshots go to ``test-output/``.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connections

from txbroker.tests import operator_data
from txbroker.tests.processes import ROOT
from txbroker.tests.test_browser import admin_login, browser, chromium, site  # noqa: F401 (fixtures)

plain_http = operator_data.plain_http
world = operator_data.world

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VIEWPORT = {"width": 1280, "height": 800}
OUTPUT = ROOT / "test-output"
PASSWORD = "a-long-layout-password"
LONG_KEY = "DEMO-3945A09B-00006"

MESSAGE_COLUMNS = ("msg_id_link", "state_badge", "age", "topic_tag", "keys_short", "delivery_summary")
DEAD_LETTER_COLUMNS = ("message_link", "group", "topic", "keys", "attempts", "died_at", "error")


def assert_inside(page, selector: str) -> None:
    """Every element ``selector`` matches (at least one) lies wholly inside the viewport."""
    boxes = [box for box in (el.bounding_box() for el in page.query_selector_all(selector)) if box]
    assert boxes, f"nothing matches {selector}"
    for box in boxes:
        assert box["x"] >= 0 and box["x"] + box["width"] <= VIEWPORT["width"] + 0.5, (selector, box)
        assert box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"] + 0.5, (selector, box)


def assert_no_sideways_scroll(page) -> None:
    """Neither the page nor the admin's scrolling box around a list scrolls sideways."""
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide in a {widths[1]} px window"
    for scroller in page.query_selector_all("#changelist .results"):
        inner, shown = scroller.evaluate("el => [el.scrollWidth, el.clientWidth]")
        assert inner <= shown, f"the list is {inner} px wide in a {shown} px box"


def test_lists_and_dashboard_fit_1280_px(world, site, browser, settings, worker, capsys):  # noqa: F811 (fixtures)
    from playwright.sync_api import expect

    settings.TXBROKER_DASHBOARD_REFRESH = "1"
    page = None
    try:
        operator_data.make_committed(LONG_KEY)  # the worker is running: it may deliver it too
        get_user_model().objects.create_superuser("layout", "layout@example.com", PASSWORD)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(20_000)
        admin_login(page, site, "layout", PASSWORD)
        OUTPUT.mkdir(exist_ok=True)

        # The message list, the navigation sidebar open (Django's default).
        page.goto(f"{site}/admin/txbroker/message/")
        expect(page.locator("#nav-sidebar")).to_be_visible()
        page.screenshot(path=str(OUTPUT / "message-list-1280.png"))
        for column in MESSAGE_COLUMNS:
            assert_inside(page, f"#result_list thead th.column-{column}")
            assert_inside(page, f"#result_list tbody tr:first-child .field-{column}")
        assert_no_sideways_scroll(page)
        key = page.locator(f'.txb-key[title="{LONG_KEY}"]')
        expect(key).to_have_attribute("data-full", LONG_KEY)
        assert key.bounding_box()["height"] < 24, "the key wraps"
        age = page.locator(".txb-ago").first
        expect(age).to_contain_text(" ago")
        expect(age).not_to_have_text(age.inner_text(), timeout=5_000)  # kept current by admin.js
        dead_link = page.locator(f'a.txb-msg-link[data-full="{world.dead}"]')
        expect(dead_link).to_have_attribute("title", world.dead)
        expect(dead_link).to_have_text(f"{world.dead[:6]}…{world.dead[-4:]}")
        copy = page.locator(f'.txb-copy[data-copy="{world.dead}"]')
        copy.click()
        expect(copy).to_have_class("txb-copy txb-copied")

        # The dead-letter list: attempts, when it died and the last error all in view.
        page.goto(f"{site}/admin/txbroker/deadletter/")
        page.screenshot(path=str(OUTPUT / "dead-letters-1280.png"))
        for column in DEAD_LETTER_COLUMNS:
            assert_inside(page, f"#result_list thead th.column-{column}")
            assert_inside(page, f"#result_list tbody tr:first-child .field-{column}")
        assert_no_sideways_scroll(page)
        error = page.locator("#result_list tbody tr:first-child details.txb-error")
        expect(error.locator("summary")).to_contain_text("planned failure")
        expect(error.locator("pre")).not_to_be_visible()
        error.locator("summary").click()
        expect(error.locator("pre")).to_contain_text("Traceback")
        assert_inside(page, "#result_list tbody tr:first-child .txb-traceback")
        assert_no_sideways_scroll(page)  # it opens over the list, which stays as wide
        box = error.locator("pre").bounding_box()
        results = page.locator("#changelist .results").bounding_box()
        assert box["x"] >= results["x"], "the traceback's start is cut off"
        page.screenshot(path=str(OUTPUT / "dead-letters-1280-unfolded.png"))

        # The message's page: no next attempt for a done delivery, times with seconds.
        page.goto(f"{site}/admin/txbroker/message/{world.dead}/change/")
        next_attempts = page.locator(".inline-group td.field-next_attempt")
        expect(next_attempts).to_have_count(3)
        for i in range(3):
            expect(next_attempts.nth(i)).to_have_text("-")

        # The dashboard: it refreshes itself, its groups and workers in view.
        page.goto(f"{site}/admin/txbroker/dashboard/")
        expect(page.locator("#txb-refresh-status")).to_contain_text("updated", timeout=15_000)
        for selector in ("#txb-groups-table thead th", "#txb-groups-table tbody tr:first-child td"):
            assert_inside(page, selector)
        workers = page.locator("#txb-workers-table tbody tr")
        expect(workers.first).to_contain_text("@")
        assert_inside(page, "#txb-workers-table thead th")
        assert_inside(page, "#txb-workers-table tbody tr:first-child td")
        ages = page.locator("#txb-groups-table td.txb-age").all_inner_texts()
        chart_ages = page.locator("#txb-age svg text").evaluate_all("els => els.map(e => e.textContent)")
        assert "-" not in chart_ages
        for age in ages:
            assert age in chart_ages, (age, chart_ages)
        assert_no_sideways_scroll(page)
        shot = OUTPUT / "dashboard-1280.png"
        page.screenshot(path=str(shot), full_page=True)
        with capsys.disabled():
            print(f"\nscreenshots at 1,280 x 800: {OUTPUT}")
    finally:
        if page is not None:
            page.close()
        # Database work done while Playwright's loop runs uses connections of their own
        # context; close them, or they outlive the test database.
        connections.close_all()
