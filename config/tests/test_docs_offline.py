"""The API docs work with no internet: Swagger UI and ReDoc reference only this site's URLs,
and every file they reference is served by the site itself (WhiteNoise, from
drf-spectacular-sidecar's static files): collected, as in production, and straight from the
apps' folders with DEBUG on, as in `make run`."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db

URL = re.compile(r"""\b(?:src|href)=["']([^"']+)["']|\burl:\s*["']([^"']+)["']""", re.IGNORECASE)
PAGES = ["/api/docs/", "/api/docs/?script=", "/api/redoc/"]


def referenced(body: str) -> list[str]:
    # data: URLs (ReDoc's empty favicon) are inline: nothing to fetch.
    return [a or b for a, b in URL.findall(body) if not (a or b).startswith("data:")]


@pytest.mark.parametrize("page", PAGES)
def test_the_docs_reference_no_other_site(page):
    body = Client().get(page).content.decode()
    assert not re.search(r"https?://", body), re.findall(r"https?://\S+", body)
    assert all(url.startswith("/") for url in referenced(body)), referenced(body)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """Static files collected as a deployment does (`manage.py collectstatic`), into a folder
    of the test's own, which WhiteNoise then serves, as in production (DEBUG off)."""
    root = tmp_path_factory.mktemp("static")
    with override_settings(STATIC_ROOT=root):
        call_command("collectstatic", "--no-input", verbosity=0)
        yield root


@pytest.mark.parametrize("page", PAGES)
def test_every_file_the_docs_reference_is_served(collected, page):
    client = Client()
    urls = referenced(client.get(page).content.decode())
    assert urls
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        if url.startswith("/static/"):
            assert b"".join(response.streaming_content if response.streaming else [response.content])


@pytest.mark.parametrize("page", PAGES)
def test_with_debug_on_the_files_are_served_without_collectstatic(settings, tmp_path, page):
    """`make run` (DEBUG on): WhiteNoise serves the apps' static folders themselves."""
    settings.DEBUG = True
    settings.STATIC_ROOT = tmp_path  # nothing collected
    client = Client()  # a new handler: WhiteNoise reads DEBUG as it starts
    urls = referenced(client.get(page).content.decode())
    for url in urls:
        assert client.get(url).status_code == 200, url
