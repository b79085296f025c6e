"""DRF throttling on the token, order-creation and payment endpoints: 429 past the rate,
counted in the shared (Redis) cache so every web process sees the same count; a client's
address comes from trusted proxies only (DJANGO_NUM_PROXIES), never from a header the client
wrote; a cache outage refuses logins (503) and lets the other endpoints through."""

from __future__ import annotations

import socket

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.test import APIClient

from config.throttling import LIMITER_UNAVAILABLE, ScopedRateThrottle

pytestmark = pytest.mark.django_db

BAD_LOGIN = {"username": "nobody", "password": "guess"}


@pytest.fixture
def low_rates(monkeypatch):
    monkeypatch.setattr(
        ScopedRateThrottle,
        "THROTTLE_RATES",
        {"auth_token": "3/minute", "orders": "2/minute", "payments": "2/minute"},
    )


@pytest.fixture
def fresh_counters():
    """Forget the counters these tests use, before and after (Redis outlives a test)."""
    keys = [
        f"throttle_auth_token_{address}"
        for address in ("127.0.0.1", "203.0.113.7", "198.51.100.9", "10.0.0.1", "10.0.0.2", "10.0.0.3")
    ]
    cache.delete_many(keys)
    yield
    cache.delete_many(keys)


def test_the_throttle_counters_live_in_redis_shared_by_every_process():
    assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert settings.CACHES["default"]["LOCATION"] == settings.CELERY_BROKER_URL


def test_the_token_endpoint_answers_429_past_its_rate(low_rates, fresh_counters):
    client = APIClient(REMOTE_ADDR="127.0.0.1")
    answers = [client.post("/api/auth/token/", BAD_LOGIN, format="json") for _ in range(4)]
    assert [a.status_code for a in answers] == [400, 400, 400, 429]
    assert int(answers[-1]["Retry-After"]) > 0
    assert "detail" in answers[-1].json()


def test_a_forged_x_forwarded_for_does_not_escape_the_token_throttle(low_rates, fresh_counters):
    # No trusted proxy (the default): the socket's address counts, whatever the header says.
    assert settings.NUM_PROXIES == 0
    client = APIClient(REMOTE_ADDR="203.0.113.7")
    for _ in range(3):
        assert client.post("/api/auth/token/", BAD_LOGIN, format="json").status_code == 400
    for i in range(1, 4):
        forged = client.post("/api/auth/token/", BAD_LOGIN, format="json", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}")
        assert forged.status_code == 429


def test_behind_one_trusted_proxy_the_address_it_appended_counts(low_rates, fresh_counters, settings):
    settings.NUM_PROXIES = 1
    # The proxy (127.0.0.1) appends the address it saw; what the client wrote before it is ignored.
    proxy = APIClient(REMOTE_ADDR="127.0.0.1")

    def login(forwarded: str) -> int:
        return proxy.post(
            "/api/auth/token/", BAD_LOGIN, format="json", HTTP_X_FORWARDED_FOR=forwarded
        ).status_code

    assert [login(f"10.0.0.{i}, 198.51.100.9") for i in (1, 2, 3)] == [400, 400, 400]
    assert login("10.0.0.3, 198.51.100.9") == 429  # the same client, whatever it forges
    assert login("198.51.100.9") == 429
    assert login("203.0.113.7") == 400  # another client behind the same proxy has its own budget
    assert cache.get("throttle_auth_token_127.0.0.1") is None  # the proxy itself is not counted


def test_order_creation_answers_429_per_user(low_rates):
    alice = get_user_model().objects.create_user("orders-throttled-alice")
    bob = get_user_model().objects.create_user("orders-throttled-bob")
    for user in (alice, bob):
        cache.delete(f"throttle_orders_{user.pk}")
    client = APIClient()
    client.force_authenticate(alice)
    answers = [client.post("/api/orders/", {"amount": "1.00"}, format="json") for _ in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert int(answers[-1]["Retry-After"]) > 0
    assert "detail" in answers[-1].json()
    assert client.get("/api/orders/").status_code == 200  # reading is not throttled
    client.force_authenticate(bob)  # another user has their own budget
    assert client.post("/api/orders/", {"amount": "1.00"}, format="json").status_code == 201
    for user in (alice, bob):
        cache.delete(f"throttle_orders_{user.pk}")


def test_the_payment_endpoint_answers_429_per_user(low_rates):
    alice = get_user_model().objects.create_user("throttled-alice")
    bob = get_user_model().objects.create_user("throttled-bob")
    for user in (alice, bob):
        cache.delete(f"throttle_payments_{user.pk}")
    client = APIClient()
    client.force_authenticate(alice)
    codes = [client.post("/api/payments/", {}, format="json").status_code for _ in range(3)]
    assert codes == [400, 400, 429]
    client.force_authenticate(bob)  # another user has their own budget
    assert client.post("/api/payments/", {}, format="json").status_code == 400


@pytest.fixture
def redis_down(settings):
    """The cache points at a port nobody listens on: every cache call fails, as in an outage."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }


def test_a_cache_outage_refuses_logins_and_lets_other_requests_through(low_rates, redis_down):
    user = get_user_model().objects.create_user("outage-user", password="a-right-password-1")
    client = APIClient()
    # Logins fail closed: not even the right password gets a token while nothing counts guesses.
    for body in (BAD_LOGIN, {"username": "outage-user", "password": "a-right-password-1"}):
        refused = client.post("/api/auth/token/", body, format="json")
        assert refused.status_code == 503
        assert refused.json() == {"detail": LIMITER_UNAVAILABLE}
        assert int(refused["Retry-After"]) > 0
    # Other throttles fail open: orders and payments go on.
    client.force_authenticate(user)
    codes = {client.post("/api/orders/", {"amount": "1.00"}, format="json").status_code for _ in range(3)}
    assert codes == {201}
    codes = {client.post("/api/payments/", {}, format="json").status_code for _ in range(3)}
    assert codes == {400}
