"""The login lockout (django-axes) on the API's token endpoint and the admin's login form:
after N failures from one address, or for one username from anywhere, logins are refused
(429) even with the right password; an operator lifts it with axes' commands or its admin;
a cache (Redis) outage does not lift it (attempts are kept in the database)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from config.logins import lockout_message

pytestmark = pytest.mark.django_db

LIMIT = 3
PASSWORD = "the-right-password-42"


@pytest.fixture(autouse=True)
def lockout(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def users():
    make = get_user_model().objects.create_user
    return {
        "alice": make("alice", password=PASSWORD),
        "bob": make("bob", password=PASSWORD),
        "ops": make("ops", password=PASSWORD, is_staff=True),
    }


def token(username: str, password: str, address: str = "192.0.2.1"):
    return APIClient().post(
        "/api/auth/token/", {"username": username, "password": password}, format="json", REMOTE_ADDR=address
    )


def admin_login(username: str, password: str, address: str = "192.0.2.1"):
    client = Client(REMOTE_ADDR=address)
    response = client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
    return client, response


def assert_api_locked_out(response) -> None:
    assert response.status_code == 429, response.content[:300]
    assert response.json() == {"detail": lockout_message()}
    assert int(response["Retry-After"]) > 0


def assert_admin_locked_out(client: Client, response) -> None:
    assert response.status_code == 429, response.content[:300]
    assert lockout_message() in response.content.decode()
    assert "_auth_user_id" not in client.session  # not logged in


# --- the token endpoint -------------------------------------------------------------------
def test_the_token_endpoint_locks_out_an_address_after_n_failures(users):
    # Failures for different usernames from one address add up.
    answers = [token(name, "wrong", "192.0.2.10") for name in ("alice", "bob", "nobody")]
    assert [a.status_code for a in answers[:-1]] == [400] * (LIMIT - 1)
    assert_api_locked_out(answers[-1])  # the N-th failure locks
    assert_api_locked_out(token("alice", PASSWORD, "192.0.2.10"))  # the right password too
    assert token("alice", PASSWORD, "192.0.2.11").status_code == 200  # from elsewhere: fine


def test_the_token_endpoint_locks_out_a_username_after_n_failures_from_anywhere(users):
    for i in range(LIMIT - 1):
        assert token("alice", "wrong", f"192.0.2.{20 + i}").status_code == 400
    assert_api_locked_out(token("alice", "wrong", "192.0.2.29"))
    assert_api_locked_out(token("alice", PASSWORD, "192.0.2.30"))  # a fresh address, the right password
    assert token("bob", PASSWORD, "192.0.2.30").status_code == 200  # other users are not affected


def test_a_forged_x_forwarded_for_does_not_escape_the_lockout(users):
    for i in range(LIMIT):
        token(f"user{i}", "wrong", "192.0.2.40")
    forged = APIClient().post(
        "/api/auth/token/",
        {"username": "bob", "password": PASSWORD},
        format="json",
        REMOTE_ADDR="192.0.2.40",
        HTTP_X_FORWARDED_FOR="10.9.8.7",
    )
    assert_api_locked_out(forged)
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"192.0.2.40"}


def test_behind_a_trusted_proxy_the_lockout_counts_the_forwarded_address(users, settings):
    settings.NUM_PROXIES = 1

    def via_proxy(username: str, password: str, client_address: str):
        return APIClient().post(
            "/api/auth/token/",
            {"username": username, "password": password},
            format="json",
            REMOTE_ADDR="127.0.0.1",
            HTTP_X_FORWARDED_FOR=f"10.9.8.7, {client_address}",
        )

    for i in range(LIMIT):
        via_proxy(f"user{i}", "wrong", "198.51.100.50")
    assert_api_locked_out(via_proxy("bob", PASSWORD, "198.51.100.50"))
    assert via_proxy("bob", PASSWORD, "198.51.100.51").status_code == 200
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.50"}


def test_an_operator_lifts_a_username_lockout_with_axes_reset_username(users):
    for i in range(LIMIT):
        token("alice", "wrong", f"192.0.2.{50 + i}")
    assert_api_locked_out(token("alice", PASSWORD, "192.0.2.60"))

    call_command("axes_reset_username", "alice")

    assert token("alice", PASSWORD, "192.0.2.60").status_code == 200


def test_an_operator_lifts_an_address_lockout_with_axes_reset_ip(users):
    for name in ("x", "y", "z"):
        token(name, "wrong", "192.0.2.70")
    assert_api_locked_out(token("alice", PASSWORD, "192.0.2.70"))

    call_command("axes_reset_ip", "192.0.2.70")

    assert token("alice", PASSWORD, "192.0.2.70").status_code == 200


def test_a_lockout_ends_after_the_cool_off(users, settings):
    for i in range(LIMIT):
        token("alice", "wrong", f"192.0.2.{80 + i}")
    assert_api_locked_out(token("alice", PASSWORD, "192.0.2.90"))
    # The failures are older than the cool-off now.
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    assert token("alice", PASSWORD, "192.0.2.90").status_code == 200


# --- the admin's login form ---------------------------------------------------------------
def test_the_admin_login_locks_out_an_address_after_n_failures(users):
    for name in ("ops", "alice", "nobody")[: LIMIT - 1]:
        _, response = admin_login(name, "wrong", "192.0.2.100")
        assert response.status_code == 200  # the form again, with its error
    assert_admin_locked_out(*admin_login("nobody", "wrong", "192.0.2.100"))
    assert_admin_locked_out(*admin_login("ops", PASSWORD, "192.0.2.100"))
    _, response = admin_login("ops", PASSWORD, "192.0.2.101")
    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_the_admin_login_locks_out_a_username_and_an_operator_lifts_it_in_the_admin(users):
    for i in range(LIMIT):
        admin_login("ops", "wrong", f"192.0.2.{110 + i}")
    assert_admin_locked_out(*admin_login("ops", PASSWORD, "192.0.2.120"))
    # The API refuses the same username: one lockout for both doors.
    assert_api_locked_out(token("ops", PASSWORD, "192.0.2.121"))

    # Another operator deletes the access attempts in the admin (Axes > Access attempts).
    root = get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    operator = Client()
    operator.force_login(root)
    listing = operator.get("/admin/axes/accessattempt/?username=ops")
    assert listing.status_code == 200
    ids = [str(pk) for pk in AccessAttempt.objects.filter(username="ops").values_list("pk", flat=True)]
    deleted = operator.post(
        "/admin/axes/accessattempt/", {"action": "delete_selected", "_selected_action": ids, "post": "yes"}
    )
    assert deleted.status_code == 302
    assert not AccessAttempt.objects.filter(username="ops").exists()

    client, response = admin_login("ops", PASSWORD, "192.0.2.120")
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.session["_auth_user_id"] == str(users["ops"].pk)


def test_a_cache_outage_does_not_lift_the_admin_lockout(users, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    for i in range(LIMIT):
        admin_login("ops", "wrong", f"192.0.2.{130 + i}")
    assert_admin_locked_out(*admin_login("ops", PASSWORD, "192.0.2.140"))
