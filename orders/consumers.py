"""order_consumer_group: mark the paid order PAID. order_timeout_consumer_group: cancel
the order its payment timer finds unpaid (``orders.payment_timeout``)."""

from __future__ import annotations

from orders.events import PAYMENT_TIMEOUT_TAG
from orders.events import TOPIC as ORDER_TOPIC
from orders.payment_timeout import order_cancel_unpaid
from orders.services import order_mark_paid
from payments.events import TAG, TOPIC, PaymentSucceeded
from txbroker import ConsumedMessage, consumer

ORDER_CONSUMER_GROUP = "order_consumer_group"
ORDER_TIMEOUT_CONSUMER_GROUP = "order_timeout_consumer_group"


@consumer(topic=TOPIC, group=ORDER_CONSUMER_GROUP, tags=TAG)
def mark_order_paid(message: ConsumedMessage) -> None:
    event = PaymentSucceeded.from_body(message.body)
    order_mark_paid(order_id=event.order_id)


@consumer(topic=ORDER_TOPIC, group=ORDER_TIMEOUT_CONSUMER_GROUP, tags=PAYMENT_TIMEOUT_TAG)
def cancel_unpaid_order(message: ConsumedMessage) -> None:
    """The order's payment timer is due: cancel it if still CREATED and held by no payment;
    otherwise nothing (a redelivery finds it CANCELLED and does nothing either)."""
    order_id = message.body.get("order_id") if isinstance(message.body, dict) else None
    order_cancel_unpaid(order_id=order_id or message.key or "")
