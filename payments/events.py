"""The payment-success message, the published language of payments: its topic, its tag and
its body. The contract between the payment producer (``payments.checkers``) and the consumer
groups, each named by its own app's ``consumers.py`` (orders, points, notifications). A
consumer app imports this module and nothing else of payments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils.dateparse import parse_datetime

TOPIC = "payment_success_topic"
TAG = "pay"
TAG_REFUND = "refund"
# What every consumer group of the topic subscribes to: pay and refund in ONE group, so that
# the order's message group (both carry ``message_group`` = order id) orders them per group.
TAGS = f"{TAG} || {TAG_REFUND}"


class MalformedPaymentEvent(ValueError):
    """The message body is not a payment-success event."""


@dataclass(frozen=True)
class PaymentSucceeded:
    order_id: str
    user_id: int
    amount: Decimal
    pay_time: datetime

    def as_body(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "user_id": self.user_id,
            "amount": f"{self.amount:.2f}",
            "pay_time": self.pay_time.isoformat(),
        }

    @classmethod
    def from_body(cls, body: Any) -> PaymentSucceeded:
        try:
            pay_time = parse_datetime(body["pay_time"])
            amount = Decimal(body["amount"])
            event = cls(
                order_id=str(body["order_id"]), user_id=int(body["user_id"]), amount=amount, pay_time=pay_time
            )
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise MalformedPaymentEvent(f"not a payment-success body: {body!r} ({exc!r})") from exc
        if pay_time is None or not amount.is_finite() or amount <= 0:
            raise MalformedPaymentEvent(f"not a payment-success body: {body!r}")
        return event


@dataclass(frozen=True)
class PaymentRefunded:
    """The refund of an order's recorded payment (tag ``refund``, after its ``pay``)."""

    order_id: str
    user_id: int
    amount: Decimal
    refund_time: datetime

    def as_body(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "user_id": self.user_id,
            "amount": f"{self.amount:.2f}",
            "refund_time": self.refund_time.isoformat(),
        }

    @classmethod
    def from_body(cls, body: Any) -> PaymentRefunded:
        try:
            refund_time = parse_datetime(body["refund_time"])
            amount = Decimal(body["amount"])
            event = cls(
                order_id=str(body["order_id"]),
                user_id=int(body["user_id"]),
                amount=amount,
                refund_time=refund_time,
            )
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise MalformedPaymentEvent(f"not a refund body: {body!r} ({exc!r})") from exc
        if refund_time is None or not amount.is_finite() or amount <= 0:
            raise MalformedPaymentEvent(f"not a refund body: {body!r}")
        return event
