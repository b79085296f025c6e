"""points_consumer_group: award the points of a payment, once."""

from __future__ import annotations

from payments.events import TAG, TOPIC, PaymentSucceeded
from points.services import points_award_for_payment
from txbroker import ConsumedMessage, consumer

POINTS_CONSUMER_GROUP = "points_consumer_group"


@consumer(topic=TOPIC, group=POINTS_CONSUMER_GROUP, tags=TAG)
def award_points(message: ConsumedMessage) -> None:
    event = PaymentSucceeded.from_body(message.body)
    points_award_for_payment(order_id=event.order_id, user_id=event.user_id, amount=event.amount)
