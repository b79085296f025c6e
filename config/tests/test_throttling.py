"""DRF throttling on the token and payment endpoints: 429 past the rate, counted in the
shared (Redis) cache so every web process sees the same count."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.test import APIClient

from config.throttling import ScopedRateThrottle

pytestmark = pytest.mark.django_db


@pytest.fixture
def low_rates(monkeypatch):
    monkeypatch.setattr(
        ScopedRateThrottle, "THROTTLE_RATES", {"auth_token": "3/minute", "payments": "2/minute"}
    )


def test_the_throttle_counters_live_in_redis_shared_by_every_process():
    assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert settings.CACHES["default"]["LOCATION"] == settings.CELERY_BROKER_URL


def test_the_token_endpoint_answers_429_past_its_rate(low_rates):
    cache.delete("throttle_auth_token_127.0.0.1")
    client = APIClient(REMOTE_ADDR="127.0.0.1")
    answers = [
        client.post("/api/auth/token/", {"username": "nobody", "password": "guess"}, format="json")
        for _ in range(4)
    ]
    assert [a.status_code for a in answers] == [400, 400, 400, 429]
    assert int(answers[-1]["Retry-After"]) > 0
    cache.delete("throttle_auth_token_127.0.0.1")


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


def test_a_cache_outage_lets_requests_through(low_rates, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(ScopedRateThrottle, "get_cache_key", broken)
    client = APIClient()
    codes = {client.post("/api/auth/token/", {}, format="json").status_code for _ in range(5)}
    assert codes == {400}
