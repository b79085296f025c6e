"""POST /api/payments/{order_id}/refund/: its answers, and the messages it sends (the
consumers' side: test_refund_consumers.py; over HTTP with a worker: test_refund_flow.py)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from orders.models import Order
from orders.tests.factories import OrderFactory, UserFactory
from payments import exceptions
from payments.events import TAG, TAG_REFUND, TOPIC
from payments.models import Charge, Refund, SimulatedGatewayRefund
from payments.refunds import refund_check_transaction
from txbroker import LocalTransactionState, MessageView
from txbroker.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


def pay(client, order):
    response = client.post(
        "/api/payments/", {"order_id": order.order_id, "amount": str(order.amount)}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def refund(client, order_id, **body):
    return client.post(f"/api/payments/{order_id}/refund/", body or None, format="json")


def test_refund_answers_201_then_200_with_the_same_body_and_refunds_once(client_for):
    order = OrderFactory(amount="42.50")
    client = client_for(order.user)
    paid = pay(client, order)

    first = refund(client, order.order_id, reason="changed my mind")

    assert first.status_code == 201, first.content
    body = first.json()
    assert set(body) == {"order_id", "amount", "status", "message_id"}
    assert body["order_id"] == order.order_id
    assert body["amount"] == "42.50"
    assert body["status"] == "REFUNDED"
    assert body["message_id"] and body["message_id"] != paid["message_id"]

    again = refund(client, order.order_id)
    assert again.status_code == 200
    assert again.json() == body

    stored = Refund.objects.get(order_id=order.order_id)
    assert stored.status == Refund.Status.REFUNDED
    assert stored.reason == "changed my mind"
    assert stored.actor == order.user
    assert stored.charge.status == Charge.Status.RECORDED
    assert SimulatedGatewayRefund.objects.filter(idempotency_key=stored.idempotency_key).count() == 1


def test_the_refund_and_payment_messages_share_the_orders_message_group(client_for):
    order = OrderFactory()
    client = client_for(order.user)
    paid = pay(client, order)
    refunded = refund(client, order.order_id).json()

    payment_message = Message.objects.get(msg_id=paid["message_id"])
    refund_message = Message.objects.get(msg_id=refunded["message_id"])
    assert (payment_message.topic, payment_message.tag) == (TOPIC, TAG)
    assert (refund_message.topic, refund_message.tag) == (TOPIC, TAG_REFUND)
    assert payment_message.message_group == refund_message.message_group == order.order_id
    assert refund_message.keys == [order.order_id]
    assert refund_message.state == Message.State.COMMITTED
    assert refund_message.body["amount"] == f"{order.amount:.2f}"


def test_an_order_without_a_recorded_payment_is_409_and_nothing_is_refunded(client_for):
    order = OrderFactory()

    response = refund(client_for(order.user), order.order_id)

    assert response.status_code == 409
    assert response.json() == {"detail": exceptions.REFUND_NOT_PAID}
    assert not Refund.objects.exists()
    assert not SimulatedGatewayRefund.objects.exists()


def test_an_order_being_refunded_is_409(client_for):
    order = OrderFactory()
    client = client_for(order.user)
    pay(client, order)
    charge = Charge.objects.get(order_id=order.order_id)
    Refund.objects.create(charge=charge, order_id=order.order_id, user=order.user, amount=charge.amount)

    response = refund(client, order.order_id)

    assert response.status_code == 409
    assert response.json() == {"detail": exceptions.REFUND_IN_PROGRESS}
    assert not SimulatedGatewayRefund.objects.exists()


def test_another_users_or_an_unknown_order_is_404(client_for):
    order = OrderFactory()
    pay(client_for(order.user), order)
    stranger = client_for(UserFactory())

    assert refund(stranger, order.order_id).status_code == 404
    assert refund(stranger, "NO_SUCH_ORDER").status_code == 404
    assert not Refund.objects.exists()


def test_anonymous_is_401(anon):
    order = OrderFactory()
    assert refund(anon, order.order_id).status_code == 401


def test_a_gateway_error_is_502_and_changes_nothing_then_a_retry_refunds(client_for, settings):
    order = OrderFactory()
    client = client_for(order.user)
    paid = pay(client, order)
    settings.PAYMENTS_GATEWAY_BACKEND = "payments.tests.gateways.FailingRefundGateway"

    response = refund(client, order.order_id)

    assert response.status_code == 502
    assert not Refund.objects.exists()
    assert not SimulatedGatewayRefund.objects.exists()
    assert list(Message.objects.filter(tag=TAG_REFUND)) == []
    assert Message.objects.filter(key_rows__key=order.order_id).count() == 1
    assert Order.objects.get(pk=order.pk).status == Order.Status.CREATED  # no consumer ran
    assert Charge.objects.get(order_id=order.order_id).status == Charge.Status.RECORDED

    settings.PAYMENTS_GATEWAY_BACKEND = "payments.gateways.SimulatedGateway"
    retried = refund(client, order.order_id)
    assert retried.status_code == 201
    assert retried.json()["message_id"] != paid["message_id"]


def test_a_reason_must_be_a_string(client_for):
    order = OrderFactory()
    response = refund(client_for(order.user), order.order_id, reason=12)
    assert response.status_code == 400
    assert list(response.json()) == ["reason"]


def test_a_payment_whose_message_is_not_committed_yet_is_409_and_nothing_is_refunded(client_for):
    """The refund message must come after the payment message in the order's message group:
    while the payment's message is still HALF (its producer finishing, or check-back due),
    the refund waits (409)."""
    order = OrderFactory()
    client = client_for(order.user)
    paid = pay(client, order)
    Message.objects.filter(msg_id=paid["message_id"]).update(state=Message.State.HALF, resolved_at=None)

    response = refund(client, order.order_id)

    assert response.status_code == 409
    assert response.json() == {"detail": exceptions.REFUND_IN_PROGRESS}
    assert not Refund.objects.exists()
    assert not SimulatedGatewayRefund.objects.exists()


def _refund_message_view(refund_id: str, msg_id: str = "a" * 32):
    return MessageView(
        msg_id=msg_id,
        topic=TOPIC,
        tag=TAG_REFUND,
        keys=("ORDER",),
        body={},
        properties={"refund_id": refund_id},
        producer_group="refund_producer_group",
        created_at=timezone.now(),
    )


def test_check_back_records_a_refund_the_gateway_made_and_answers_from_it():
    order = OrderFactory()
    charge = Charge.objects.create(
        order_id=order.order_id,
        user=order.user,
        amount=order.amount,
        payment_method="sim_approve",
        status="RECORDED",
    )
    stored = Refund.objects.create(
        charge=charge, order_id=order.order_id, user=order.user, amount=charge.amount, status="APPROVED"
    )

    assert refund_check_transaction(_refund_message_view(str(stored.pk))) == LocalTransactionState.COMMIT
    stored.refresh_from_db()
    assert (stored.status, stored.message_id) == (Refund.Status.REFUNDED, "a" * 32)
    assert refund_check_transaction(_refund_message_view(str(stored.pk))) == LocalTransactionState.COMMIT
    other = _refund_message_view(str(stored.pk), msg_id="b" * 32)
    assert refund_check_transaction(other) == LocalTransactionState.ROLLBACK
    assert refund_check_transaction(_refund_message_view("")) == LocalTransactionState.ROLLBACK
    assert refund_check_transaction(_refund_message_view("999999")) == LocalTransactionState.ROLLBACK
