"""order_consumer_group: mark the paid order PAID, and the refunded one REFUNDED (one
handler for both tags: the group's deliveries of one order run in commit order).
order_timeout_consumer_group: cancel the order its payment timer finds unpaid
(``orders.payment_timeout``)."""

from __future__ import annotations

from orders.events import PAYMENT_TIMEOUT_TAG
from orders.events import TOPIC as ORDER_TOPIC
from orders.payment_timeout import order_cancel_unpaid
from orders.services import order_mark_paid, order_mark_refunded
from payments.events import TAG_REFUND, TAGS, TOPIC, PaymentRefunded, PaymentSucceeded
from txbroker import ConsumedMessage, consumer

ORDER_CONSUMER_GROUP = "order_consumer_group"
ORDER_TIMEOUT_CONSUMER_GROUP = "order_timeout_consumer_group"


@consumer(topic=TOPIC, group=ORDER_CONSUMER_GROUP, tags=TAGS)
def mark_order_paid(message: ConsumedMessage) -> None:
    if message.tag == TAG_REFUND:
        order_mark_refunded(order_id=PaymentRefunded.from_body(message.body).order_id)
        return
    event = PaymentSucceeded.from_body(message.body)
    order_mark_paid(order_id=event.order_id)


@consumer(topic=ORDER_TOPIC, group=ORDER_TIMEOUT_CONSUMER_GROUP, tags=PAYMENT_TIMEOUT_TAG)
def cancel_unpaid_order(message: ConsumedMessage) -> None:
    """The order's payment timer is due: cancel it if still CREATED and held by no payment;
    otherwise nothing (a redelivery finds it CANCELLED and does nothing either)."""
    order_id = message.body.get("order_id") if isinstance(message.body, dict) else None
    order_cancel_unpaid(order_id=order_id or message.key or "")
