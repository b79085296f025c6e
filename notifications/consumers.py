"""notification_consumer_group: one SMS per paid order, and one per refunded order (one
handler for both tags: the group sees an order's payment before its refund)."""

from __future__ import annotations

from notifications.services import sms_notify_payment, sms_notify_refund
from payments.events import TAG_REFUND, TAGS, TOPIC, PaymentRefunded, PaymentSucceeded
from txbroker import ConsumedMessage, consumer

NOTIFICATION_CONSUMER_GROUP = "notification_consumer_group"


@consumer(topic=TOPIC, group=NOTIFICATION_CONSUMER_GROUP, tags=TAGS)
def send_payment_sms(message: ConsumedMessage) -> None:
    if message.tag == TAG_REFUND:
        refund = PaymentRefunded.from_body(message.body)
        sms_notify_refund(order_id=refund.order_id, user_id=refund.user_id, amount=refund.amount)
        return
    event = PaymentSucceeded.from_body(message.body)
    sms_notify_payment(order_id=event.order_id, user_id=event.user_id, amount=event.amount)
