"""points_consumer_group: award the points of a payment, once, and take them back on its
refund (one handler for both tags: the group sees an order's payment before its refund)."""

from __future__ import annotations

from payments.events import TAG_REFUND, TAGS, TOPIC, PaymentRefunded, PaymentSucceeded
from points.services import points_award_for_payment, points_take_back_for_refund
from txbroker import ConsumedMessage, consumer

POINTS_CONSUMER_GROUP = "points_consumer_group"


@consumer(topic=TOPIC, group=POINTS_CONSUMER_GROUP, tags=TAGS)
def award_points(message: ConsumedMessage) -> None:
    if message.tag == TAG_REFUND:
        refund = PaymentRefunded.from_body(message.body)
        points_take_back_for_refund(order_id=refund.order_id, user_id=refund.user_id)
        return
    event = PaymentSucceeded.from_body(message.body)
    points_award_for_payment(order_id=event.order_id, user_id=event.user_id, amount=event.amount)
