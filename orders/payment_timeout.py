"""Unpaid orders: the payment timer.

Creating an order sends, in the same transaction, a delayed message (``order_topic``, tag
``payment_timeout``, key = order id) due ORDERS_PAYMENT_TIMEOUT seconds later. Its consumer
(``orders.consumers.cancel_unpaid_order``) cancels the order in one conditional UPDATE that
needs it CREATED and held by no payment, exactly like a user's cancel (see
``orders.services``); otherwise it does nothing. That UPDATE is the guard: a payment that
claimed the order first holds it (and keeps holding it once recorded), so a timer firing
during or after a payment leaves the order alone; a payment that comes after the
cancellation finds the order CANCELLED and is refused (409) before any charge.

A recorded payment recalls the timer (``order_payment_timer_recall``, called by payments
after its local transaction commits): its delivery becomes RECALLED and never runs. The
recall is a courtesy, not the guard: should it fail or come too late, the conditional
UPDATE above still leaves the paid order alone.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError
from django.utils import timezone

from orders import conf
from orders.events import PAYMENT_TIMEOUT_TAG, PRODUCER_GROUP, TOPIC, payment_timeout_body
from orders.models import Order, order_id_is_valid
from txbroker import OutgoingMessage, Producer, messages_with_key, recall
from txbroker.exceptions import InvalidTransition

logger = logging.getLogger("orders")

order_producer = Producer(PRODUCER_GROUP)

RECALL_ACTOR = "payments (the order was paid)"


def broker_database() -> str:
    """txbroker's database alias (``default`` unless TXBROKER_DATABASE says otherwise):
    the order and its payment timer commit in one transaction when they share it."""
    return getattr(settings, "TXBROKER_DATABASE", DEFAULT_DB_ALIAS)


def order_payment_timer_send(order: Order) -> str:
    """Send the order's payment timer; call it inside the transaction that creates the
    order (``transaction.atomic()`` on txbroker's database). Returns its message id."""
    return order_producer.send(
        OutgoingMessage(
            topic=TOPIC,
            tag=PAYMENT_TIMEOUT_TAG,
            keys=(order.order_id,),
            body=payment_timeout_body(order.order_id),
            delay=timedelta(seconds=conf.seconds("ORDERS_PAYMENT_TIMEOUT")),
        )
    )


def order_cancel_unpaid(*, order_id: str) -> bool:
    """The payment timer is due: CREATED -> CANCELLED in one conditional UPDATE, unless a
    payment holds the order. True when it cancelled the order now; False (nothing changed)
    when the order is paid, held by a payment, already cancelled or missing."""
    if not order_id_is_valid(order_id):
        logger.warning("payment timer of an invalid order id %r: nothing to cancel", order_id)
        return False
    moved = Order.objects.filter(order_id=order_id, status=Order.Status.CREATED, payment_hold=False).update(
        status=Order.Status.CANCELLED, updated_at=timezone.now()
    )
    if moved:
        logger.info(
            "order %s CANCELLED: still unpaid %gs after its creation (ORDERS_PAYMENT_TIMEOUT)",
            order_id,
            conf.seconds("ORDERS_PAYMENT_TIMEOUT"),
        )
        return True
    row = Order.objects.filter(order_id=order_id).values_list("status", "payment_hold").first()
    if row is None:
        why = "the order does not exist"
    elif row[0] == Order.Status.CREATED:
        why = "a payment holds it"
    else:
        why = f"it is {row[0]}"
    logger.info("payment timer of order %s: nothing to do (%s)", order_id, why)
    return False


def order_payment_timer_recall(*, order_id: str) -> list[str]:
    """Recall the order's payment timer (its deliveries not started yet become RECALLED);
    for a payment that was recorded. Returns the ids of the timers recalled. Never raises
    for a database error: the timer's consumer leaves a paid order alone anyway."""
    recalled = []
    try:
        for message in messages_with_key(order_id, producer_group=PRODUCER_GROUP):
            if message.topic != TOPIC or message.tag != PAYMENT_TIMEOUT_TAG or message.state != "COMMITTED":
                continue
            result = recall(message.msg_id, actor=RECALL_ACTOR)
            if result.recalled:
                recalled.append(message.msg_id)
    except (DatabaseError, InvalidTransition):
        logger.warning("recalling the payment timer of order %s failed", order_id, exc_info=True)
    return recalled
