"""Order services and invariants held by the database."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError

from orders.models import Order
from orders.services import (
    ORDER_CANCELLED_BUT_PAID,
    ORDER_MISSING_FOR_PAYMENT,
    OrderIdTaken,
    OrderNotFound,
    OrderNotPayable,
    order_create,
    order_mark_paid,
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
