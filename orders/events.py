"""The orders app's own message: the payment timer of an order (its topic, tag and body),
a delayed message sent with the order and consumed by the orders app itself
(``orders.consumers``). Nothing of payments: this app imports nothing from it."""

from __future__ import annotations

from typing import Any

TOPIC = "order_topic"
PAYMENT_TIMEOUT_TAG = "payment_timeout"
PRODUCER_GROUP = "order_producer_group"


def payment_timeout_body(order_id: str) -> dict[str, Any]:
    return {"order_id": order_id}
