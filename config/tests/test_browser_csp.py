"""The pages people open, in a real browser under the Content-Security-Policy: Swagger UI
renders the API, ReDoc renders it, the admin logs in and its scripts run (the permission
picker), the dashboard draws its charts, the broker's lists load their script; the browser reports no CSP violation and requests
nothing from another origin. Playwright drives Debian's chromium (see
txbroker/tests/test_browser.py, whose fixtures this reuses)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections

from txbroker.tests.processes import ROOT
from txbroker.tests.test_browser import admin_login, browser, chromium, site  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow]

PASSWORD = "a-long-browser-password"
OUTPUT = ROOT / "test-output"
# Recorded by the page itself: init scripts are not subject to the page's policy.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture
def watched_page(browser, site):  # noqa: F811 (fixtures)
    """A page that records console errors, CSP violations and every URL it requests."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(20_000)
    page.add_init_script(RECORD_VIOLATIONS)
    seen = {"console": [], "requests": []}
    page.on("console", lambda message: message.type == "error" and seen["console"].append(message.text))
    # Requests that went out (a request the policy blocks is reported as failed, not finished).
    page.on("requestfinished", lambda request: seen["requests"].append(request.url))
    yield page, seen
    page.close()


def forget(seen) -> None:
    for events in seen.values():
        events.clear()


def assert_clean(page, seen, site: str, allowed: tuple[str, ...] = ()) -> None:  # noqa: F811 (fixture name)
    violations = [v for v in page.evaluate("window.__cspViolations") if v not in allowed]
    assert violations == [], violations
    csp_errors = [
        text
        for text in seen["console"]
        if "Content Security Policy" in text and not any(v.split()[-1] in text for v in allowed)
    ]
    assert csp_errors == [], csp_errors
    origin = urlsplit(site).netloc
    foreign = [
        url
        for url in seen["requests"]
        if not url.startswith(("data:", "blob:")) and urlsplit(url).netloc != origin
    ]
    assert foreign == [], foreign


def test_docs_admin_and_dashboard_work_under_the_content_security_policy(
    transactional_db,
    watched_page,
    site,  # noqa: F811 (fixture)
):
    from playwright.sync_api import expect

    page, seen = watched_page
    try:
        get_user_model().objects.create_superuser("csp-root", "root@example.com", PASSWORD)
        title = settings.SPECTACULAR_SETTINGS["TITLE"]

        # Swagger UI: the API's title and its operations, drawn by the bundle from our static files.
        response = page.goto(f"{site}/api/docs/")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        expect(page.locator(".swagger-ui .info .title")).to_contain_text(title)
        expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
        assert page.locator(".swagger-ui .opblock").count() > 10
        assert_clean(page, seen, site)
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "swagger-csp.png"))

        # ReDoc, from our static files too.
        forget(seen)
        page.goto(f"{site}/api/redoc/")
        expect(page.locator("h1").first).to_contain_text(title)
        expect(page.get_by_text("Create an order").first).to_be_attached()
        # ReDoc's bundle always links its vendor's logo from their CDN; the policy blocks it
        # (the link shows its text) and nothing else.
        assert_clean(page, seen, site, allowed=("img-src https://cdn.redoc.ly/redoc/logo-mini.svg",))

        # The admin: log in, then a form whose widget is built by the admin's scripts.
        forget(seen)
        admin_login(page, site, "csp-root", PASSWORD)
        root = get_user_model().objects.get(username="csp-root")
        page.goto(f"{site}/admin/auth/user/{root.pk}/change/")
        expect(page.locator("#id_user_permissions_from")).to_be_attached()  # SelectFilter2.js ran
        assert_clean(page, seen, site)

        # The broker's dashboard: charts drawn as SVG on the server.
        forget(seen)
        page.goto(f"{site}/admin/txbroker/dashboard/")
        expect(page.locator("#txb-dashboard svg").first).to_be_visible()
        assert_clean(page, seen, site)

        # The broker's lists: their script (copy buttons, ages) is a file of the site's own.
        forget(seen)
        page.goto(f"{site}/admin/txbroker/message/")
        expect(page.locator("#changelist")).to_be_attached()
        assert any(url.endswith("/txbroker/admin.js") for url in seen["requests"]), seen["requests"]
        assert_clean(page, seen, site)
    finally:
        # Database work done while Playwright's loop runs uses connections of their own
        # context; close them, or they outlive the test database.
        connections.close_all()
