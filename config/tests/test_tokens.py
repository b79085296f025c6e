"""API tokens expire DJANGO_TOKEN_TTL seconds after they were issued and can be revoked;
``POST /api/auth/token/`` {username, password} -> 200 {"token", "expires_at"} and
``Authorization: Token <token>`` work as before."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config.tokens import TOKEN_EXPIRED

pytestmark = pytest.mark.django_db

PASSWORD = "a-token-test-password"


@pytest.fixture
def alice(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return get_user_model().objects.create_user("alice", password=PASSWORD)


def login() -> dict:
    response = APIClient().post(
        "/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def orders_with(key: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get("/api/orders/")


def test_a_token_says_when_it_expires_and_is_the_same_until_then(alice, settings):
    settings.TOKEN_TTL = 3600
    first = login()
    token = Token.objects.get(user=alice)
    assert first["token"] == token.key
    assert parse_datetime(first["expires_at"]) == token.created + timedelta(seconds=3600)
    assert login()["token"] == first["token"]
    assert orders_with(first["token"]).status_code == 200


def test_an_expired_token_is_refused_and_a_login_issues_a_new_one(alice, settings):
    old = login()["token"]
    Token.objects.filter(key=old).update(created=timezone.now() - timedelta(seconds=settings.TOKEN_TTL + 1))

    refused = orders_with(old)
    assert refused.status_code == 401
    assert refused.json() == {"detail": TOKEN_EXPIRED}
    assert refused["WWW-Authenticate"] == "Token"

    new = login()
    assert new["token"] != old
    assert parse_datetime(new["expires_at"]) > timezone.now()
    assert orders_with(new["token"]).status_code == 200
    assert orders_with(old).status_code == 401


def test_a_revoked_token_stops_working_at_once(alice):
    key = login()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    revoked = client.post("/api/auth/token/revoke/")
    assert revoked.status_code == 204
    assert not Token.objects.filter(user=alice).exists()
    assert orders_with(key).status_code == 401
    assert client.post("/api/auth/token/revoke/").status_code == 401  # nothing left to revoke with
    assert login()["token"] != key


def test_revoking_needs_credentials():
    response = APIClient().post("/api/auth/token/revoke/")
    assert response.status_code == 401
    assert "detail" in response.json()


@pytest.mark.parametrize(
    "body",
    [
        {"username": "a" * 151, "password": "x"},
        {"username": "alice", "password": "x" * 4097},
    ],
)
def test_oversized_credentials_are_refused_before_any_login_attempt(alice, body):
    response = APIClient().post("/api/auth/token/", body, format="json")
    assert response.status_code == 400
    assert not AccessAttempt.objects.exists()
