"""Unpaid orders (issue 12, item 6), through the API: a successful payment recalls the
order's payment timer; a payment for an order its timer cancelled is refused with 409 and
changes nothing. The timer itself: ``orders/tests/test_payment_timeout.py``; end to end on
real processes: ``test_unpaid_orders_live.py``."""

from __future__ import annotations

import pytest

from orders.consumers import ORDER_TIMEOUT_CONSUMER_GROUP
from orders.events import TOPIC as ORDER_TOPIC
from orders.models import Order
from orders.tests.factories import UserFactory
from payments.events import TOPIC as PAYMENT_TOPIC
from payments.exceptions import PAYMENT_NOT_PAYABLE
from payments.models import Charge, PaymentRecord
from txbroker import delivery
from txbroker.models import Delivery, Message, TraceEvent

pytestmark = pytest.mark.django_db(transaction=True)


def create_order(client) -> str:
    response = client.post("/api/orders/", {"amount": "25.00"}, format="json")
    assert response.status_code == 201
    return response.json()["order_id"]


def pay(client, order_id: str, **extra):
    return client.post("/api/payments/", {"order_id": order_id, "amount": "25.00", **extra}, format="json")


def timer(order_id: str) -> Delivery:
    return Delivery.objects.get(
        message__topic=ORDER_TOPIC,
        message__key_rows__key=order_id,
        consumer_group=ORDER_TIMEOUT_CONSUMER_GROUP,
    )


def test_a_successful_payment_recalls_the_orders_timer(client_for):
    client = client_for(UserFactory())
    order_id = create_order(client)
    assert timer(order_id).status == "PENDING"

    assert pay(client, order_id).status_code == 201

    row = timer(order_id)
    assert (row.status, row.attempts) == ("RECALLED", 0)
    recalled = TraceEvent.objects.get(message_id=row.message_id, event="RECALLED")
    assert ORDER_TIMEOUT_CONSUMER_GROUP in recalled.detail and "paid" in recalled.actor
    # A repeated payment charges nothing and leaves the timer recalled.
    assert pay(client, order_id).status_code == 200
    assert timer(order_id).status == "RECALLED"


def test_a_declined_payment_leaves_the_timer_running(client_for):
    client = client_for(UserFactory())
    order_id = create_order(client)

    assert pay(client, order_id, payment_method="sim_decline").status_code == 402

    assert timer(order_id).status == "PENDING"
    assert Order.objects.get(order_id=order_id).payment_hold is False


def test_paying_an_order_cancelled_by_its_timer_is_409_and_changes_nothing(
    client_for, settings, gateway_calls
):
    settings.ORDERS_PAYMENT_TIMEOUT = 0.0
    client = client_for(UserFactory())
    order_id = create_order(client)
    delivery.deliver_due()  # the timer is due at once
    assert client.get(f"/api/orders/{order_id}/").json()["status"] == "CANCELLED"
    before = Order.objects.values().get(order_id=order_id)

    response = pay(client, order_id)

    assert response.status_code == 409
    assert response.json() == {"detail": PAYMENT_NOT_PAYABLE.format(status="CANCELLED")}
    assert gateway_calls == []
    assert Order.objects.values().get(order_id=order_id) == before
    assert not Charge.objects.filter(order_id=order_id).exists()
    assert not PaymentRecord.objects.filter(order_id=order_id).exists()
    assert not Message.objects.filter(topic=PAYMENT_TOPIC, key_rows__key=order_id).exists()
