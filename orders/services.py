"""Writes of orders. Every status change is one conditional UPDATE.

The cancel-versus-payment rule: the order owns "a payment holds this order" (its
``payment_hold``). A payment claims the order under the order row lock: the order must be
CREATED, and ``order_hold_for_payment`` holds it; the hold stays while the payment is in
progress or recorded, and ``order_release_payment_hold`` lifts it when the payment ends
without a record (declined, gateway error, abandoned by check-back). ``order_cancel`` is one
conditional UPDATE that needs the order CREATED and not held, and the UPDATE waits for the
row lock a claim holds. So whichever comes first wins:

- cancel first: the order is CANCELLED and the payment answers 409 before any charge;
- payment first: the cancel answers 409 (a payment is in progress, or the order is paid).

An order therefore never ends CANCELLED with a successful payment. Once the hold is
released, the order can be cancelled again. This app imports nothing from payments.
"""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Optional

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from orders.exceptions import (
    ORDER_CANCELLED_BUT_PAID,
    ORDER_ID_TAKEN,
    ORDER_MISSING_FOR_PAYMENT,
    ORDER_NOT_CANCELLABLE,
    ORDER_NOT_FOUND,
    ORDER_NOT_PAID_FOR_REFUND,
    ORDER_PAYMENT_STARTED,
    OrderIdTaken,
    OrderNotCancellable,
    OrderNotFound,
    OrderNotPayable,
)
from orders.models import Order, order_id_is_valid
from orders.payment_timeout import broker_database, order_payment_timer_send


def order_id_generate() -> str:
    """A fresh order id: 96 random bits from the OS's CSPRNG, so nobody can predict (and
    take first) the ids the service will hand out."""
    return f"ORD-{secrets.token_hex(12).upper()}"


def order_create(*, user: AbstractBaseUser, amount: Decimal, order_id: Optional[str] = None) -> Order:
    """Create a CREATED order; ``order_id`` is generated when not given. Its payment timer
    (``orders.payment_timeout``) is sent in the same transaction: no order without its
    timer, no timer without its order."""
    order = Order(order_id=order_id or order_id_generate(), user=user, amount=amount)
    now = timezone.now()
    order.created_at = order.updated_at = now
    try:
        with transaction.atomic(), transaction.atomic(using=broker_database(), savepoint=False):
            order.save(force_insert=True)
            order_payment_timer_send(order)
    except IntegrityError:
        if Order.objects.filter(order_id=order.order_id).exists():
            raise OrderIdTaken(ORDER_ID_TAKEN) from None
        raise
    return order


def order_cancel(*, user: AbstractBaseUser, order_id: str) -> Order:
    """CREATED -> CANCELLED in one conditional UPDATE, unless a payment holds the order (see
    the module doc); when nothing moved, the order says why."""
    mine = Order.objects.of_user(user).filter(order_id=order_id) if order_id_is_valid(order_id) else None
    now = timezone.now()
    if mine is not None and mine.filter(status=Order.Status.CREATED, payment_hold=False).update(
        status=Order.Status.CANCELLED, updated_at=now
    ):
        return mine.get()
    order = mine.first() if mine is not None else None
    if order is None:
        raise OrderNotFound(ORDER_NOT_FOUND)
    if order.status != Order.Status.CREATED:
        raise OrderNotCancellable(ORDER_NOT_CANCELLABLE.format(status=order.status))
    raise OrderNotCancellable(ORDER_PAYMENT_STARTED)


def order_hold_for_payment(*, order_id: str) -> bool:
    """Hold the CREATED order for a payment: from now on it cannot be cancelled. The caller
    (a payment claiming the order) holds the order row lock. False when the order is not
    CREATED or is already held."""
    return bool(
        Order.objects.filter(order_id=order_id, status=Order.Status.CREATED, payment_hold=False).update(
            payment_hold=True
        )
    )


def order_release_payment_hold(*, order_id: str) -> bool:
    """Release the order from a payment that ended without being recorded: a CREATED order
    can be cancelled (or paid) again. The caller holds the order row lock."""
    return bool(Order.objects.filter(order_id=order_id, payment_hold=True).update(payment_hold=False))


def order_mark_paid(*, order_id: str) -> bool:
    """CREATED -> PAID for the payment message. True when it moved now, False when it was
    already PAID (a redelivery). A missing or cancelled order raises: the delivery is
    retried, then dead-lettered with that reason, never silently acknowledged."""
    moved = Order.objects.filter(order_id=order_id, status=Order.Status.CREATED).update(
        status=Order.Status.PAID, updated_at=timezone.now()
    )
    if moved:
        return True
    status = Order.objects.filter(order_id=order_id).values_list("status", flat=True).first()
    if status in (Order.Status.PAID, Order.Status.REFUNDED):  # a redelivery (after its refund)
        return False
    if status is None:
        raise OrderNotFound(ORDER_MISSING_FOR_PAYMENT.format(order_id=order_id))
    raise OrderNotPayable(ORDER_CANCELLED_BUT_PAID.format(order_id=order_id))


def order_mark_refunded(*, order_id: str) -> bool:
    """PAID -> REFUNDED for the refund message. True when it moved now, False when it was
    already REFUNDED (a redelivery). Any other status raises (retried, then dead-lettered):
    the order's payment message comes first in its message group, so it is PAID by then."""
    moved = Order.objects.filter(order_id=order_id, status=Order.Status.PAID).update(
        status=Order.Status.REFUNDED, updated_at=timezone.now()
    )
    if moved:
        return True
    status = Order.objects.filter(order_id=order_id).values_list("status", flat=True).first()
    if status == Order.Status.REFUNDED:
        return False
    if status is None:
        raise OrderNotFound(ORDER_MISSING_FOR_PAYMENT.format(order_id=order_id))
    raise OrderNotPayable(ORDER_NOT_PAID_FOR_REFUND.format(order_id=order_id, status=status))
