"""Reads of orders."""

from __future__ import annotations

from typing import Optional

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from orders.models import Order, OrderQuerySet, order_id_is_valid


def order_list(*, user: AbstractBaseUser) -> OrderQuerySet:
    """The user's orders, newest first."""
    return Order.objects.of_user(user).order_by("-created_at", "-id")


def order_get(*, user: AbstractBaseUser, order_id: str) -> Optional[Order]:
    """The user's order with this id; None when it does not exist or is someone else's."""
    if not order_id_is_valid(order_id):
        return None
    return Order.objects.of_user(user).filter(order_id=order_id).first()


def order_get_for_update(*, order_id: str) -> Optional[Order]:
    """The order, its row locked until the caller's transaction ends (None when missing).

    The order row lock is what serializes a payment's claim, its local transaction, the
    check-back of its message and a cancel of the same order.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("order_get_for_update() locks a row: call it inside transaction.atomic()")
    if not order_id_is_valid(order_id):
        return None
    return Order.objects.select_for_update().filter(order_id=order_id).first()


def order_held_by_payment(*, order_id: str) -> bool:
    """True when a payment holds the order (claimed, in progress or recorded): it cannot be
    cancelled (``orders.services``)."""
    return Order.objects.filter(order_id=order_id, payment_hold=True).exists()
