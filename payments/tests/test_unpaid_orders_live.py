"""Unpaid orders end to end, over HTTP on real processes: gunicorn serving the API, a
Celery worker running the consumers and beat sweeping (waking the worker for due delayed
deliveries), with ORDERS_PAYMENT_TIMEOUT = 2 s. An order left unpaid is CANCELLED after its
timeout and a later payment answers 409; a paid order stays PAID once the timeout passed,
whether its timer was recalled or (its recall lost) ran and found the order paid."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from rest_framework.authtoken.models import Token

from harness.procs import free_port, start_gunicorn
from orders.consumers import ORDER_TIMEOUT_CONSUMER_GROUP
from orders.events import TOPIC as ORDER_TOPIC
from orders.models import Order
from orders.tests.factories import UserFactory
from payments.clock import db_ago
from payments.models import Charge, PaymentRecord
from txbroker.models import Delivery, Message
from txbroker.tests.processes import child_env, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

TIMEOUT = "2"


@pytest.fixture
def worker_env() -> dict[str, str]:
    return {"ORDERS_PAYMENT_TIMEOUT": TIMEOUT}


@dataclass
class Api:
    url: str
    token: str

    def post(self, path: str, body: dict) -> requests.Response:
        return requests.post(self.url + path, json=body, headers=self.headers, timeout=30)

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, headers=self.headers, timeout=30)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


@pytest.fixture
def api(transactional_db, broker_env, tmp_path) -> Iterator[Api]:
    env = child_env(
        DJANGO_DEBUG="0",
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_LOG_LEVEL="ERROR",
        ORDERS_PAYMENT_TIMEOUT=TIMEOUT,
    )
    port = free_port()
    web = start_gunicorn(tmp_path, env, port=port, workers=1, threads=4)
    token, _ = Token.objects.get_or_create(user=UserFactory())
    try:
        yield Api(url=f"http://127.0.0.1:{port}", token=token.key)
    finally:
        web.stop()


def create_order(api: Api) -> str:
    response = api.post("/api/orders/", {"amount": "25.00"})
    assert response.status_code == 201, response.text
    return response.json()["order_id"]


def timer(order_id: str) -> Delivery:
    return Delivery.objects.get(
        message__topic=ORDER_TOPIC,
        message__key_rows__key=order_id,
        consumer_group=ORDER_TIMEOUT_CONSUMER_GROUP,
    )


def wait_paid(api: Api, order_id: str) -> None:
    wait_for(
        lambda: api.get(f"/api/orders/{order_id}/").json()["status"] == "PAID",
        timeout=30,
        interval=0.3,
        what=f"order {order_id} PAID",
    )


def wait_past_due(order_id: str, seconds: float) -> None:
    """Until the database's clock is ``seconds`` past the timer's due time."""
    past = Message.objects.filter(pk=timer(order_id).message_id, deliver_at__lt=db_ago(seconds))
    wait_for(past.exists, timeout=30, what=f"the timer of {order_id} {seconds}s past due")


def test_an_unpaid_order_is_cancelled_after_its_timeout_and_cannot_be_paid(api, app_worker, beat):
    order_id = create_order(api)
    assert api.get(f"/api/orders/{order_id}/").json()["status"] == "CREATED"

    wait_for(
        lambda: api.get(f"/api/orders/{order_id}/").json()["status"] == "CANCELLED",
        timeout=30,
        interval=0.3,
        what=f"order {order_id} cancelled by its timer",
    )
    assert timer(order_id).status == "SUCCEEDED"

    response = api.post("/api/payments/", {"order_id": order_id, "amount": "25.00"})
    assert response.status_code == 409
    assert response.json() == {"detail": "the order is CANCELLED: only a CREATED order can be paid"}
    assert not Charge.objects.filter(order_id=order_id).exists()
    assert not PaymentRecord.objects.filter(order_id=order_id).exists()
    assert api.get(f"/api/orders/{order_id}/").json()["status"] == "CANCELLED"


def test_a_paid_order_stays_paid_after_the_timeout(api, app_worker, beat):
    order_id = create_order(api)
    response = api.post("/api/payments/", {"order_id": order_id, "amount": "25.00"})
    assert response.status_code == 201, response.text
    wait_paid(api, order_id)

    # Beat sweeps every second: a timer that was not recalled would have run by now.
    wait_past_due(order_id, 3)
    assert timer(order_id).status == "RECALLED"
    assert api.get(f"/api/orders/{order_id}/").json()["status"] == "PAID"


def test_a_paid_order_whose_timer_was_not_recalled_stays_paid(api, app_worker, beat):
    order_id = create_order(api)
    response = api.post("/api/payments/", {"order_id": order_id, "amount": "25.00"})
    assert response.status_code == 201, response.text
    # Its recall lost (as if the web process died right after the payment committed).
    Delivery.objects.filter(pk=timer(order_id).pk).update(status="PENDING")

    wait_for(lambda: timer(order_id).status == "SUCCEEDED", timeout=30, what="the timer to run")
    wait_paid(api, order_id)
    assert Order.objects.values_list("status", "payment_hold").get(order_id=order_id) == ("PAID", True)
