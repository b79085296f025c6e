"""The operator's admin in a real browser: Playwright driving Debian's chromium against the
live server, with a real Celery worker on the same test database.

Log in, find the message of an order by its key, open it, read its trace, replay its dead
deliveries and watch them succeed, resume a DISCARDED message, and save a screenshot of the
dashboard under ``test-output/``.

Chromium comes from Debian's package (installed here when missing), never from
``playwright install``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import connections

from txbroker.models import Message, TraceEvent
from txbroker.tests import operator_data
from txbroker.tests.helpers import deliveries, send
from txbroker.tests.processes import ROOT, wait_for
from txbroker.tests.support.models import Plan

plain_http = operator_data.plain_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OUTPUT = ROOT / "test-output"
PASSWORD = "a-long-operator-password"


def admin_login(page, site: str, username: str, password: str) -> None:
    """Log ``username`` in through the admin's login form and wait for the admin's header."""
    from playwright.sync_api import expect

    page.goto(f"{site}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, installed with apt when missing (CI starts from a clean machine)."""
    if not CHROMIUM.exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        apt = shutil.which("apt-get")
        assert apt, "no apt-get: install Debian's chromium package by hand"
        install = [apt, "install", "-y", "-qq", "chromium"]
        if subprocess.run(install, env=env, capture_output=True, timeout=1200).returncode != 0:
            # A fresh machine may have no package lists yet.
            subprocess.run([apt, "update", "-qq"], env=env, check=True, capture_output=True, timeout=600)
            subprocess.run(install, env=env, check=True, capture_output=True, timeout=1200)
    assert CHROMIUM.exists(), f"{CHROMIUM} is still missing after apt-get install chromium"
    return CHROMIUM


@pytest.fixture
def browser(chromium, monkeypatch) -> Iterator:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # between browser steps are plain synchronous code all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def site(live_server, plain_http) -> str:
    """The live server's URL, its middleware loaded with this test's plain-HTTP settings
    (the session's live server may have started before them, redirecting to HTTPS)."""
    # Each handler of the chain (static files, media files, the app) runs middleware.
    handler = live_server.thread.httpd.get_app()
    while handler is not None:
        handler.load_middleware()
        handler = getattr(handler, "application", None)
    return live_server.url


@pytest.fixture
def dies_at_once(broker_setting) -> None:
    """Before the worker starts: a failed delivery is dead at once (no retries), except in
    test_refund_group, whose own limit is 2 retries."""
    broker_setting("TXBROKER_MAX_RECONSUME_TIMES", "0")


@pytest.fixture
def discarded(transactional_db, broker_env, broker_setting) -> str:
    """Order 1002's message, DISCARDED before any worker runs: its checker never knew."""
    return operator_data.make_discarded("order-1002", broker_setting)


def test_operator_finds_traces_replays_and_resumes_in_a_real_browser(
    dies_at_once, discarded, site, worker, beat, browser, capsys
):
    from playwright.sync_api import expect

    try:
        get_user_model().objects.create_superuser("ops", "ops@example.com", PASSWORD)

        # Order 1001's payment message: every consumer group fails until it is DEAD (the
        # worker runs the attempts, beat's sweep the retries).
        Plan.objects.create(key="order-1001", fail_times=99)
        dead = send("order-1001").msg_id
        wait_for(lambda: set(deliveries(dead).values()) == {"DEAD"}, timeout=60, what="all deliveries DEAD")

        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(20_000)

        # Log in.
        admin_login(page, site, "ops", PASSWORD)

        # Find the message of order 1001 by its key, and open it.
        page.goto(f"{site}/admin/txbroker/message/")
        page.fill("#searchbar", "order-1001")
        page.press("#searchbar", "Enter")
        links = page.locator("a.txb-msg-link")
        expect(links).to_have_count(1)
        links.first.click()
        expect(page.locator("h1")).to_contain_text("View message")
        timeline = page.locator("ol.txb-timeline")
        for event in ("HALF_STORED", "COMMITTED", "DELIVERY_ATTEMPT", "DEAD"):
            expect(timeline).to_contain_text(event)
        expect(page.locator(".inline-group")).to_contain_text("planned failure")

        # The bug is fixed; replay the dead deliveries (behind a confirmation page).
        Plan.objects.filter(key="order-1001").update(fail_times=0)
        page.click("#txb-replay")
        expect(page.locator(".txb-question")).to_contain_text(
            "Make this message's DEAD and waiting deliveries due now"
        )
        page.click("#txb-confirm")
        expect(page.locator(".messagelist")).to_contain_text("Replayed 3 deliveries")

        # Watch them succeed: the page, reloaded, shows three SUCCEEDED deliveries.
        def succeeded_on_page() -> bool:
            page.reload()
            return page.locator(".inline-group .txb-badge", has_text="SUCCEEDED").count() == 3

        wait_for(succeeded_on_page, timeout=60, interval=0.5, what="three SUCCEEDED deliveries on the page")
        expect(timeline).to_contain_text("REPLAY")
        expect(timeline).to_contain_text("by ops")
        assert set(deliveries(dead).values()) == {"SUCCEEDED"}
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "message.png"), full_page=True)

        # Resume the DISCARDED message of order 1002.
        page.goto(f"{site}/admin/txbroker/message/?q=order-1002")
        page.locator("a.txb-msg-link").first.click()
        expect(page.locator(".fieldBox.field-state_badge")).to_contain_text("DISCARDED")
        page.click("#txb-resume")
        page.click("#txb-confirm")
        expect(page.locator(".messagelist")).to_contain_text("it is HALF again")
        expect(page.locator(".fieldBox.field-state_badge")).to_contain_text("HALF")
        expect(page.locator("ol.txb-timeline")).to_contain_text("RESUMED")
        assert Message.objects.get(pk=discarded).state == "HALF"
        assert TraceEvent.objects.filter(message_id=discarded, event="RESUMED", actor="ops").exists()

        # Order 1003 fails for good (in test_refund_group: 3 attempts), so the dashboard has a
        # dead letter to show.
        Plan.objects.create(key="order-1003", fail_times=99)
        broken = send("order-1003", tag="refund").msg_id
        wait_for(lambda: set(deliveries(broken).values()) == {"DEAD"}, timeout=60, what="order 1003 DEAD")

        # The dashboard, reached from the admin index; a screenshot for people to look at.
        page.goto(f"{site}/admin/")
        page.click("a[href='/admin/txbroker/dashboard/']")
        expect(page.locator("#txb-dashboard svg.txb-chart")).to_have_count(5)
        expect(page.locator("#txb-flow")).to_contain_text("committed")
        expect(page.locator("#txb-dead")).to_contain_text("test_refund_group")
        OUTPUT.mkdir(exist_ok=True)
        shot = OUTPUT / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        with capsys.disabled():
            print(f"\ndashboard screenshot: {shot}")
    finally:
        # Database work done while Playwright's loop runs uses connections of their own
        # context; close them, or they outlive the test database.
        connections.close_all()
