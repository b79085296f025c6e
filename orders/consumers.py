"""order_consumer_group: mark the paid order PAID."""

from __future__ import annotations

from orders.services import order_mark_paid
from payments.events import TAG, TOPIC, PaymentSucceeded
from txbroker import ConsumedMessage, consumer

ORDER_CONSUMER_GROUP = "order_consumer_group"


@consumer(topic=TOPIC, group=ORDER_CONSUMER_GROUP, tags=TAG)
def mark_order_paid(message: ConsumedMessage) -> None:
    event = PaymentSucceeded.from_body(message.body)
    order_mark_paid(order_id=event.order_id)
