"""Fixtures and helpers shared by the order-payment apps' tests (each app's
``tests/conftest.py`` star-imports this module)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from notifications.backends import FileSmsBackend, InMemorySmsBackend, Sms
from notifications.models import Notification
from notifications.services import order_reference
from orders.models import Order
from payments.clock import db_ago
from payments.gateways import GatewayError, SimulatedGateway
from payments.models import Charge, PaymentRecord
from points.models import PointsRecord
from points.selectors import points_balance
from txbroker.models import Delivery, Message
from txbroker.tests.processes import Proc, start_worker, wait_for

# The fixtures; the helpers (effects, wait_settled, gateway_charge, ...) are imported by name.
__all__ = [
    "anon",
    "app_worker",
    "client_for",
    "fast_password_hashing",
    "gateway_calls",
    "sms_outbox",
    "worker_env",
]

GROUPS = ("notification_consumer_group", "order_consumer_group", "points_consumer_group")


@pytest.fixture(autouse=True)
def sms_outbox(settings) -> Iterator[list[Sms]]:
    """In this process SMS go to the in-memory backend; its outbox, emptied per test."""
    # The suite runs with DEBUG off, which redirects plain HTTP to HTTPS.
    settings.SECURE_SSL_REDIRECT = False
    settings.NOTIFICATIONS_SMS_BACKEND = "notifications.backends.InMemorySmsBackend"
    InMemorySmsBackend.reset()
    yield InMemorySmsBackend.outbox
    InMemorySmsBackend.reset()


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def gateway_calls() -> Iterator[list]:
    """Every charge the simulated gateway (and its test subclasses) saw in this process."""
    SimulatedGateway.reset()
    yield SimulatedGateway.calls
    SimulatedGateway.reset()


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for() -> Callable[[Any], APIClient]:
    """``client_for(user)``: an API client authenticated with the user's token."""

    def make(user) -> APIClient:
        token, _ = Token.objects.get_or_create(user=user)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make


@dataclass
class AppWorker:
    proc: Proc
    sms_path: Path

    def sms(self, order_id: str | None = None) -> list[Sms]:
        """The SMS sent (of one order: naming its reference, as payment SMS do)."""
        sent = FileSmsBackend.read(self.sms_path)
        return [s for s in sent if order_id is None or f" {order_reference(order_id)} " in s.text]


@pytest.fixture
def worker_env() -> dict[str, str]:
    """Extra environment of ``app_worker``; a test module overrides this fixture to change it."""
    return {}


@pytest.fixture
def app_worker(transactional_db, broker_env, clean_queue, tmp_path, worker_env) -> Iterator[AppWorker]:
    """The ``worker`` fixture's real Celery worker, with SMS written to a file this test reads."""
    sms_path = tmp_path / "sms.jsonl"
    env = {
        "NOTIFICATIONS_SMS_BACKEND": "notifications.backends.FileSmsBackend",
        "NOTIFICATIONS_SMS_FILE_PATH": str(sms_path),
        **worker_env,
    }
    proc = start_worker(tmp_path, name="app-worker", **env)
    yield AppWorker(proc=proc, sms_path=sms_path)
    proc.stop()


def effects(order_id: str) -> dict[str, Any]:
    """Everything the payment of one order caused, to compare with what it should have."""
    order = Order.objects.filter(order_id=order_id).first()
    messages = Message.objects.filter(key_rows__key=order_id)
    return {
        "order": order.status if order else None,
        "records": list(PaymentRecord.objects.filter(order_id=order_id).values_list("status", flat=True)),
        "charges": sorted(Charge.objects.filter(order_id=order_id).values_list("status", flat=True)),
        "messages": sorted(messages.values_list("state", flat=True)),
        "deliveries": dict(
            Delivery.objects.filter(message__in=messages).values_list("consumer_group", "status")
        ),
        "attempts": dict(
            Delivery.objects.filter(message__in=messages).values_list("consumer_group", "attempts")
        ),
        "points_records": list(
            PointsRecord.objects.filter(order_id=order_id).values_list("points", flat=True)
        ),
        "points": points_balance(user=order.user) if order else None,
        "notifications": list(
            Notification.objects.filter(order_id=order_id).values_list("status", flat=True)
        ),
    }


def wait_settled(order_id: str, *, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the order's messages are settled and every delivery has finished."""

    def settled():
        connection.close_if_unusable_or_obsolete()
        state = effects(order_id)
        if any(m == Message.State.HALF for m in state["messages"]):
            return None
        committed = state["messages"].count(Message.State.COMMITTED)
        finished = [
            s for s in state["deliveries"].values() if s in (Delivery.Status.SUCCEEDED, Delivery.Status.DEAD)
        ]
        if len(finished) < committed * len(GROUPS):
            return None
        return state

    return wait_for(settled, timeout=timeout, what=f"order {order_id} settled")


def gateway_charge(charge: Charge) -> None:
    """The charge's gateway call, as its payment made it: the gateway records the outcome
    (approved or declined; ``sim_error`` charges nothing). Not counted in ``gateway_calls``:
    it sets the scene, it is not a call under test."""
    try:
        SimulatedGateway().charge(
            order_id=charge.order_id,
            amount=charge.amount,
            payment_method=charge.payment_method,
            idempotency_key=charge.idempotency_key,
        )
    except GatewayError:
        pass
    finally:
        SimulatedGateway.reset()


def age_by(charge: Charge, *, seconds: float, closed: bool = False) -> None:
    """Make the charge ``seconds`` old, database time (``closed``: only since its last move)."""
    since = db_ago(seconds)
    changes = {"updated_at": since} if closed else {"created_at": since, "updated_at": since}
    Charge.objects.filter(pk=charge.pk).update(**changes)
    charge.refresh_from_db()


def pay_in_a_thread(client: APIClient, order: Order) -> tuple[threading.Thread, list]:
    """POST the order's payment from another thread; its answer lands in the list."""
    answers: list = []

    def pay() -> None:
        try:
            answers.append(
                client.post(
                    "/api/payments/", {"order_id": order.order_id, "amount": str(order.amount)}, format="json"
                )
            )
        finally:
            connection.close()

    thread = threading.Thread(target=pay)
    thread.start()
    return thread, answers
