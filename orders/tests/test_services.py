"""Order services and invariants held by the database."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError

from orders.models import Order
from orders.selectors import order_held_by_payment
from orders.services import (
    ORDER_CANCELLED_BUT_PAID,
    ORDER_MISSING_FOR_PAYMENT,
    ORDER_NOT_CANCELLABLE,
    ORDER_PAYMENT_STARTED,
    OrderIdTaken,
    OrderNotCancellable,
    OrderNotFound,
    OrderNotPayable,
    order_cancel,
    order_create,
    order_hold_for_payment,
    order_mark_paid,
    order_release_payment_hold,
)
from orders.tests.factories import OrderFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_mark_paid_moves_created_to_paid_once():
    order = OrderFactory()

    assert order_mark_paid(order_id=order.order_id) is True
    assert order_mark_paid(order_id=order.order_id) is False  # a redelivery: no-op

    order.refresh_from_db()
    assert order.status == Order.Status.PAID


def test_mark_paid_of_a_missing_order_raises_with_a_clear_reason():
    with pytest.raises(OrderNotFound, match=ORDER_MISSING_FOR_PAYMENT.format(order_id="GHOST")):
        order_mark_paid(order_id="GHOST")


def test_mark_paid_of_a_cancelled_order_raises():
    order = OrderFactory(status=Order.Status.CANCELLED)

    with pytest.raises(OrderNotPayable) as caught:
        order_mark_paid(order_id=order.order_id)
    assert str(caught.value) == ORDER_CANCELLED_BUT_PAID.format(order_id=order.order_id)


def test_create_twice_with_one_order_id_raises_order_id_taken():
    user = UserFactory()
    order_create(user=user, amount=Decimal("1.00"), order_id="SAME")

    with pytest.raises(OrderIdTaken):
        order_create(user=UserFactory(), amount=Decimal("2.00"), order_id="SAME")


@pytest.mark.parametrize(
    "fields", [{"status": "SHIPPED"}, {"amount": Decimal("0.00")}, {"amount": Decimal("-1.00")}]
)
def test_the_database_refuses_invalid_orders(fields):
    with pytest.raises(IntegrityError):
        OrderFactory(**fields)


def test_a_payment_hold_refuses_the_cancel_until_it_is_released():
    order = OrderFactory()
    assert order_hold_for_payment(order_id=order.order_id) is True
    assert order_hold_for_payment(order_id=order.order_id) is False  # held already

    with pytest.raises(OrderNotCancellable, match=ORDER_PAYMENT_STARTED):
        order_cancel(user=order.user, order_id=order.order_id)
    assert order_held_by_payment(order_id=order.order_id)

    assert order_release_payment_hold(order_id=order.order_id) is True
    assert order_cancel(user=order.user, order_id=order.order_id).status == Order.Status.CANCELLED
    assert order_hold_for_payment(order_id=order.order_id) is False  # only a CREATED order


def test_cancel_says_why_nothing_moved():
    order = OrderFactory()
    with pytest.raises(OrderNotFound):
        order_cancel(user=UserFactory(), order_id=order.order_id)  # someone else's
    with pytest.raises(OrderNotFound):
        order_cancel(user=order.user, order_id="bad id\x00")
    order_mark_paid(order_id=order.order_id)
    with pytest.raises(OrderNotCancellable, match=ORDER_NOT_CANCELLABLE.format(status="PAID")):
        order_cancel(user=order.user, order_id=order.order_id)
