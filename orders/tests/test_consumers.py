"""order_consumer_group: a payment for a missing order is retried, then dead-lettered with
a clear reason, never acknowledged silently."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from orders.consumers import ORDER_CONSUMER_GROUP
from orders.models import Order
from orders.services import ORDER_MISSING_FOR_PAYMENT
from orders.tests.factories import OrderFactory, UserFactory
from payments.checkers import payment_producer
from payments.events import TAG, TOPIC, PaymentSucceeded
from txbroker import LocalTransactionState, OutgoingMessage, delivery, delivery_transitions
from txbroker.models import Delivery, TraceEvent
from txbroker.tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def publish(order_id: str, user_id: int) -> str:
    """A committed payment message for ``order_id``, whatever the payments tables say."""
    event = PaymentSucceeded(
        order_id=order_id, user_id=user_id, amount=Decimal("10.00"), pay_time=timezone.now()
    )
    message = OutgoingMessage(topic=TOPIC, tag=TAG, keys=[order_id], body=event.as_body())
    sent = payment_producer.send_message_in_transaction(message, lambda m, a: LocalTransactionState.COMMIT)
    return sent.msg_id


def test_a_missing_order_is_retried_then_dead_with_a_clear_reason(broker_env, broker_setting):
    broker_setting("TXBROKER_MAX_RECONSUME_TIMES", "2")
    msg_id = publish("GHOST_ORDER", UserFactory().pk)

    def dead():
        delivery.deliver_due()
        return Delivery.objects.get(message_id=msg_id, consumer_group=ORDER_CONSUMER_GROUP).status == "DEAD"

    wait_for(dead, timeout=20, what="the order delivery to be dead-lettered")

    dead_letter = Delivery.objects.get(message_id=msg_id, consumer_group=ORDER_CONSUMER_GROUP)
    assert dead_letter.attempts == 3  # the first attempt and two retries
    reason = ORDER_MISSING_FOR_PAYMENT.format(order_id="GHOST_ORDER")
    assert reason in dead_letter.last_error
    assert TraceEvent.objects.filter(
        message_id=msg_id, event="DEAD", consumer_group=ORDER_CONSUMER_GROUP, detail__contains=reason
    ).exists()


def test_a_redelivered_payment_leaves_a_paid_order_paid():
    order = OrderFactory()
    msg_id = publish(order.order_id, order.user_id)
    delivery.deliver_due()
    order.refresh_from_db()
    assert order.status == Order.Status.PAID

    assert delivery_transitions.replay(msg_id, group=ORDER_CONSUMER_GROUP, force=True) == 1
    delivery.deliver_due()

    row = Delivery.objects.get(message_id=msg_id, consumer_group=ORDER_CONSUMER_GROUP)
    assert (row.status, row.attempts) == ("SUCCEEDED", 2)
    order.refresh_from_db()
    assert order.status == Order.Status.PAID
