"""Load for chaos and bench: users with API tokens, order amounts, and a small JSON-over-HTTP
client (the standard library's, one connection per request, as a simple client does).

``users_create`` writes through the ORM (there is no sign-up endpoint); everything else
goes over HTTP to the real server.
"""

from __future__ import annotations

import http.client
import json
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Optional
from urllib.parse import urlsplit

# Amounts whose cents decide the points (floor to the yuan): 0.99 -> 0, 99.99 -> 99,
# 100.01 -> 100, the smallest and the largest amounts the API takes.
ROUNDING_AMOUNTS = tuple(
    Decimal(a)
    for a in (
        "0.01",
        "0.50",
        "0.99",
        "1.00",
        "1.01",
        "9.99",
        "10.01",
        "99.99",
        "100.00",
        "100.01",
        "99999999.99",
    )
)


@dataclass(frozen=True)
class ApiUser:
    user_id: int
    username: str
    token: str


def users_create(*, count: int, prefix: str, phone: bool = True) -> list[ApiUser]:
    """``count`` users with API tokens (and phone numbers, so payment SMS are really sent)."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from notifications.services import phone_set_verified

    user_model = get_user_model()
    users = []
    for i in range(count):
        user = user_model.objects.create_user(username=f"{prefix}-{i:04d}", password=None)
        token = Token.objects.create(user=user)
        if phone:
            phone_set_verified(user=user, phone=f"+86138{i:08d}")
        users.append(ApiUser(user_id=user.pk, username=user.username, token=token.key))
    return users


def amount_pick(rng: random.Random, *, rounding_share: float = 0.3) -> Decimal:
    """An order amount: a share from ``ROUNDING_AMOUNTS``, the rest 0.01 to 5,000.00."""
    if rng.random() < rounding_share:
        return rng.choice(ROUNDING_AMOUNTS)
    return Decimal(rng.randint(1, 500_000)) / 100


@dataclass
class Response:
    status: int  # 0: no HTTP answer (connection refused, reset, timed out)
    body: Any = None
    error: str = ""
    elapsed: float = 0.0


@dataclass
class ApiClient:
    """``POST``/``GET`` JSON with a token; never raises for a transport failure (status 0)."""

    base_url: str
    token: Optional[str] = None
    timeout: float = 30.0
    _parts: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._parts = urlsplit(self.base_url)

    def request(self, method: str, path: str, payload: Any = None) -> Response:
        headers = {"Accept": "application/json"}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        started = time.monotonic()
        conn = http.client.HTTPConnection(self._parts.hostname, self._parts.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return Response(0, error=f"{type(exc).__name__}: {exc}", elapsed=time.monotonic() - started)
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw[:200].decode(errors="replace")
        return Response(response.status, parsed, elapsed=time.monotonic() - started)

    def post(self, path: str, payload: Any = None) -> Response:
        return self.request("POST", path, payload)

    def get(self, path: str) -> Response:
        return self.request("GET", path)
