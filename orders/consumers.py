"""order_consumer_group: mark the paid order PAID, and the refunded one REFUNDED (one
handler for both tags: the group's deliveries of one order run in commit order)."""

from __future__ import annotations

from orders.services import order_mark_paid, order_mark_refunded
from payments.events import TAG_REFUND, TAGS, TOPIC, PaymentRefunded, PaymentSucceeded
from txbroker import ConsumedMessage, consumer

ORDER_CONSUMER_GROUP = "order_consumer_group"


@consumer(topic=TOPIC, group=ORDER_CONSUMER_GROUP, tags=TAGS)
def mark_order_paid(message: ConsumedMessage) -> None:
    if message.tag == TAG_REFUND:
        order_mark_refunded(order_id=PaymentRefunded.from_body(message.body).order_id)
        return
    event = PaymentSucceeded.from_body(message.body)
    order_mark_paid(order_id=event.order_id)
