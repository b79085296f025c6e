"""A cancel racing a payment: the order row lock settles it, one way, never both.

The rule (``orders.services``): a payment claims the order under its row lock before
charging; a cancel takes the same lock and is refused once a payment claimed the order;
a payment finds a cancelled order not payable before charging anything.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from orders import services as order_services
from orders.models import Order
from orders.tests.factories import OrderFactory, UserFactory
from payments.models import Charge, PaymentRecord
from payments.tests.gateways import BlockingGateway
from txbroker import delivery

pytestmark = pytest.mark.django_db(transaction=True)


def pay(client, order):
    return client.post("/api/payments/", {"order_id": order.order_id, "amount": "99.00"}, format="json")


def cancel(client, order):
    return client.post(f"/api/orders/{order.order_id}/cancel/")


def test_cancel_first_then_the_payment_is_refused_before_any_charge(client_for, gateway_calls):
    order = OrderFactory()
    client = client_for(order.user)

    assert cancel(client, order).status_code == 200
    response = pay(client, order)

    assert response.status_code == 409
    assert response.json()["detail"] == "the order is CANCELLED: only a CREATED order can be paid"
    assert gateway_calls == []
    assert not Charge.objects.exists()


def test_payment_in_progress_then_the_cancel_is_refused(client_for, settings):
    settings.PAYMENTS_GATEWAY_BACKEND = "payments.tests.gateways.BlockingGateway"
    BlockingGateway.arm()
    order = OrderFactory()
    client = client_for(order.user)
    responses = []

    def paying() -> None:
        try:
            responses.append(pay(client_for(order.user), order))
        finally:
            connection.close()

    thread = threading.Thread(target=paying)
    thread.start()
    try:
        assert BlockingGateway.entered.wait(timeout=10)  # claimed; the gateway is charging

        refused = cancel(client, order)

        assert refused.status_code == 409
        assert refused.json()["detail"] == order_services.ORDER_PAYMENT_STARTED
    finally:
        BlockingGateway.release.set()
        thread.join(timeout=30)
    assert responses[0].status_code == 201
    delivery.deliver_due()
    order.refresh_from_db()
    assert order.status == Order.Status.PAID
    assert cancel(client, order).status_code == 409


def test_a_declined_payment_releases_the_order_for_cancel(client_for):
    order = OrderFactory()
    client = client_for(order.user)

    declined = client.post(
        "/api/payments/",
        {"order_id": order.order_id, "amount": "99.00", "payment_method": "sim_decline"},
        format="json",
    )

    assert declined.status_code == 402
    assert cancel(client, order).status_code == 200


def test_concurrent_cancel_and_payment_never_both_succeed(client_for, settings):
    """Many orders, each hit by a payment and a cancel released together from a barrier."""
    settings.PAYMENTS_GATEWAY_BACKEND = "payments.tests.gateways.SlowGateway"
    user = UserFactory()
    orders = [OrderFactory(user=user) for _ in range(12)]
    results: dict[str, dict[str, int]] = {o.order_id: {} for o in orders}

    def run(action: str, order: Order, barrier: threading.Barrier) -> None:
        try:
            client = client_for(user)
            barrier.wait(timeout=10)
            response = pay(client, order) if action == "pay" else cancel(client, order)
            results[order.order_id][action] = response.status_code
        finally:
            connection.close()

    threads = []
    for order in orders:
        barrier = threading.Barrier(2)
        threads += [
            threading.Thread(target=run, args=(action, order, barrier)) for action in ("pay", "cancel")
        ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    delivery.deliver_due()

    for order in orders:
        outcome = results[order.order_id]
        order.refresh_from_db()
        paid = PaymentRecord.objects.filter(order_id=order.order_id, status="SUCCESS").exists()
        assert outcome in ({"pay": 201, "cancel": 409}, {"pay": 409, "cancel": 200}), outcome
        if outcome["pay"] == 201:
            assert paid and order.status == Order.Status.PAID
        else:
            assert not paid and order.status == Order.Status.CANCELLED
            assert not Charge.objects.filter(order_id=order.order_id).exists()
