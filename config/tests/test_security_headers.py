"""The Content-Security-Policy: on every page (the admin, the dashboard, Swagger UI, ReDoc),
scripts only from this site, and those pages load every asset from this site (Swagger UI and
ReDoc from drf-spectacular-sidecar's static files: no CDN). The browser test
(test_browser_csp.py) checks that the pages work under it."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.test import Client

pytestmark = pytest.mark.django_db

PAGES = [
    ("/admin/login/", None),
    ("/admin/", "root"),
    ("/admin/txbroker/message/", "root"),
    ("/admin/txbroker/dashboard/", "root"),
    ("/api/docs/", None),
    ("/api/docs/?script=", None),
    ("/api/redoc/", None),
    ("/api/schema/", None),
]
ASSET = re.compile(r"<(?:script|link|img)\b[^>]*?\b(?:src|href)=\"([^\"]*)\"", re.IGNORECASE)


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in (part.strip() for part in header.split(";")) if d}


@pytest.fixture
def client_as():
    root = get_user_model().objects.create_superuser("root", "root@example.com", "root-password-123")

    def make(who):
        client = Client()
        if who == "root":
            client.force_login(root)
        return client

    return make


@pytest.mark.parametrize(("path", "who"), PAGES)
def test_every_page_carries_a_policy_allowing_scripts_from_this_site_only(client_as, path, who):
    response = client_as(who).get(path)
    assert response.status_code == 200, response.content[:300]
    directives = policy(response)
    assert directives["script-src"] == ["'self'"]
    assert directives["default-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]


@pytest.mark.parametrize(("path", "who"), [p for p in PAGES if not p[0].startswith("/api/schema")])
def test_pages_load_their_assets_from_this_site(client_as, path, who):
    body = client_as(who).get(path).content.decode()
    assets = ASSET.findall(body)
    foreign = [url for url in assets if re.match(r"^(?:[a-z]+:)?//", url, re.IGNORECASE)]
    assert not foreign, foreign
    if path.startswith("/api/docs/") and "script" not in path:
        assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in assets
        assert "/api/docs/?script=" in assets  # the start-up script, as a file
    if path == "/api/redoc/":
        assert "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js" in assets


def test_no_page_has_an_inline_script(client_as):
    for path, who in PAGES:
        body = client_as(who).get(path).content.decode()
        inline = re.findall(r"<script\b(?![^>]*\bsrc=)[^>]*>", body, re.IGNORECASE)
        assert not inline, (path, inline)


def test_the_docs_assets_are_shipped_with_the_site():
    for asset in (
        "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
        "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-standalone-preset.js",
        "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css",
        "drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js",
    ):
        assert finders.find(asset), asset


def test_the_swagger_start_up_script_is_javascript():
    response = Client().get("/api/docs/?script=")
    assert response["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle(" in response.content.decode()
