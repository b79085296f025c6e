"""Writes of orders. Every status change is one conditional UPDATE.

The cancel-versus-payment rule: the order row lock decides. A payment first claims the
order (``payments.services``: under the order row lock, the order must be CREATED, and an
active charge is recorded), and ``order_cancel`` takes the same lock and refuses once a
payment has claimed the order or succeeded. So whichever takes the lock first wins:

- cancel first: the order is CANCELLED and the payment answers 409 before any charge;
- payment first: the cancel answers 409 (a payment is in progress, or the order is paid).

An order therefore never ends CANCELLED with a successful payment. If the payment's claim
is released (declined, gateway error, or abandoned by check-back), the order can be
cancelled again.
"""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Optional

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from orders.models import Order
from orders.selectors import order_get_for_update

ORDER_NOT_FOUND = "order not found"
ORDER_ID_TAKEN = (
    "this order_id is taken: order ids are unique across all users' orders; "
    "choose another, or omit order_id to get a generated one"
)
ORDER_NOT_CANCELLABLE = "only a CREATED order can be cancelled; this one is {status}"
ORDER_PAYMENT_STARTED = "a payment for this order has started or succeeded: it can no longer be cancelled"
ORDER_MISSING_FOR_PAYMENT = "order {order_id} does not exist: the payment cannot be applied to it"
ORDER_CANCELLED_BUT_PAID = (
    "order {order_id} is CANCELLED but a payment for it succeeded: this breaks the cancel rule "
    "and needs an operator (refund or reopen)"
)


class OrderError(Exception):
    """Base class of the orders app's errors."""


class OrderNotFound(OrderError):
    pass


class OrderIdTaken(OrderError):
    pass


class OrderNotCancellable(OrderError):
    pass


class OrderNotPayable(OrderError):
    pass


def order_id_generate() -> str:
    """A fresh order id: 96 random bits from the OS's CSPRNG, so nobody can predict (and
    take first) the ids the service will hand out."""
    return f"ORD-{secrets.token_hex(12).upper()}"


def order_create(*, user: AbstractBaseUser, amount: Decimal, order_id: Optional[str] = None) -> Order:
    """Create a CREATED order; ``order_id`` is generated when not given."""
    order = Order(order_id=order_id or order_id_generate(), user=user, amount=amount)
    now = timezone.now()
    order.created_at = order.updated_at = now
    try:
        with transaction.atomic():
            order.save(force_insert=True)
    except IntegrityError:
        if Order.objects.filter(order_id=order.order_id).exists():
            raise OrderIdTaken(ORDER_ID_TAKEN) from None
        raise
    return order


def order_cancel(*, user: AbstractBaseUser, order_id: str) -> Order:
    """CREATED -> CANCELLED, unless a payment has claimed the order (see the module doc)."""
    # Imported here: payments depends on orders, and this is the one read the other way.
    from payments.selectors import payment_blocks_cancel

    with transaction.atomic():
        order = order_get_for_update(order_id=order_id)
        if order is None or order.user_id != user.pk:
            raise OrderNotFound(ORDER_NOT_FOUND)
        if order.status != Order.Status.CREATED:
            raise OrderNotCancellable(ORDER_NOT_CANCELLABLE.format(status=order.status))
        if payment_blocks_cancel(order_id=order_id):
            raise OrderNotCancellable(ORDER_PAYMENT_STARTED)
        now = timezone.now()
        moved = Order.objects.filter(pk=order.pk, status=Order.Status.CREATED).update(
            status=Order.Status.CANCELLED, updated_at=now
        )
        # Cannot be 0: the row is locked and was CREATED.
        assert moved == 1
    order.status, order.updated_at = Order.Status.CANCELLED, now
    return order


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
    if status == Order.Status.PAID:
        return False
    if status is None:
        raise OrderNotFound(ORDER_MISSING_FOR_PAYMENT.format(order_id=order_id))
    raise OrderNotPayable(ORDER_CANCELLED_BUT_PAID.format(order_id=order_id))
