"""notification_consumer_group: one SMS per paid order."""

from __future__ import annotations

from notifications.services import sms_notify_payment
from payments.events import TAG, TOPIC, PaymentSucceeded
from txbroker import ConsumedMessage, consumer

NOTIFICATION_CONSUMER_GROUP = "notification_consumer_group"


@consumer(topic=TOPIC, group=NOTIFICATION_CONSUMER_GROUP, tags=TAG)
def send_payment_sms(message: ConsumedMessage) -> None:
    event = PaymentSucceeded.from_body(message.body)
    sms_notify_payment(order_id=event.order_id, user_id=event.user_id, amount=event.amount)
