"""The three consumers every peer runs: the same services as the naive design's tasks
(``harness.naive``), each in its own transaction."""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction

from notifications.services import sms_notify_payment
from orders.services import order_mark_paid
from payments.events import PaymentSucceeded
from points.services import points_award_for_payment

CONSUMERS: dict[str, Callable[[PaymentSucceeded], object]] = {
    "orders": lambda e: order_mark_paid(order_id=e.order_id),
    "points": lambda e: points_award_for_payment(order_id=e.order_id, user_id=e.user_id, amount=e.amount),
    "notifications": lambda e: sms_notify_payment(order_id=e.order_id, user_id=e.user_id, amount=e.amount),
}


def payment_consume(*, group: str, body: dict) -> None:
    """Run consumer ``group`` of the payment event ``body`` in one transaction."""
    event = PaymentSucceeded.from_body(body)
    with transaction.atomic():
        CONSUMERS[group](event)
