"""The attacker's probe of issue 10, replayed against a real gunicorn in production mode
(DEBUG off, no trusted proxy) on the test database: past the token endpoint's rate, forged
X-Forwarded-For headers are still refused (and so is the right password); failed logins on
the token endpoint and the admin's form add up to a lockout for the address, shown as the
admin's 429 page, until an operator lifts it with ``axes_reset_ip``."""

from __future__ import annotations

import http.client
import json
import re
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import call_command

from config.logins import lockout_message
from harness.procs import free_port, start_gunicorn
from txbroker.tests.processes import child_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "a-real-operator-password"
TOKEN_RATE = 3
FAILURE_LIMIT = 5
COUNTER = "throttle_auth_token_127.0.0.1"


def cookies(headers) -> str:
    return "\n".join(headers.get_all("Set-Cookie") or [])


class Site:
    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: str | None = None, **headers: str):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.msg, response.read().decode()
        finally:
            connection.close()

    def token(self, username: str, password: str, **headers: str):
        body = json.dumps({"username": username, "password": password})
        return self.request(
            "POST", "/api/auth/token/", body, **{"Content-Type": "application/json", **headers}
        )

    def admin_login(self, username: str, password: str):
        """The admin's login form as a browser posts it: the CSRF cookie and field first."""
        _, headers, page = self.request("GET", "/admin/login/")
        cookie = re.search(r"csrftoken=([^;]+)", cookies(headers)).group(1)
        field = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = urlencode(
            {"csrfmiddlewaretoken": field, "username": username, "password": password, "next": "/admin/"}
        )
        return self.request(
            "POST",
            "/admin/login/?next=/admin/",
            form,
            **{"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={cookie}"},
        )


@pytest.fixture
def site(transactional_db, tmp_path):
    cache.delete(COUNTER)
    env = child_env(
        DJANGO_DEBUG="0",
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_NUM_PROXIES="0",
        DJANGO_THROTTLE_AUTH_TOKEN_RATE=f"{TOKEN_RATE}/minute",
        DJANGO_LOGIN_FAILURE_LIMIT=str(FAILURE_LIMIT),
        DJANGO_LOG_LEVEL="ERROR",
    )
    port = free_port()
    web = start_gunicorn(tmp_path, env, port=port, workers=2, threads=2)
    try:
        yield Site(port)
    finally:
        web.stop()
        cache.delete(COUNTER)


def test_forged_forwarded_addresses_neither_escape_the_throttle_nor_the_lockout(site):
    get_user_model().objects.create_user("ops", password=PASSWORD, is_staff=True, is_superuser=True)

    # Wrong passwords up to the rate, then 429, whatever X-Forwarded-For claims.
    assert [site.token("ops", f"guess-{i}")[0] for i in range(TOKEN_RATE)] == [400] * TOKEN_RATE
    forged = [site.token("ops", f"guess-{i}", **{"X-Forwarded-For": f"10.0.0.{i}"}) for i in range(1, 11)]
    assert {status for status, _, _ in forged} == {429}
    assert all(int(headers["Retry-After"]) > 0 for _, headers, _ in forged)
    status, _, body = site.token("ops", PASSWORD, **{"X-Forwarded-For": "10.0.0.99"})
    assert (status, "token" in body) == (429, False)

    # The admin's form counts against the same address: the lockout, as a page.
    for i in range(FAILURE_LIMIT - TOKEN_RATE - 1):
        assert site.admin_login("ops", f"guess-{i}")[0] == 200
    status, headers, page = site.admin_login("ops", "last-guess")
    assert status == 429
    assert lockout_message() in page
    status, headers, page = site.admin_login("ops", PASSWORD)
    assert status == 429 and "sessionid" not in cookies(headers)
    assert "Content-Security-Policy" in headers

    # An operator lifts it; the right password gets in.
    call_command("axes_reset_ip", "127.0.0.1")
    status, headers, _ = site.admin_login("ops", PASSWORD)
    assert status == 302 and headers["Location"] == "/admin/"
    assert "sessionid=" in cookies(headers)
