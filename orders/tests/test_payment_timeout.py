"""The payment timer of an order (``orders.payment_timeout``): sent with the order in one
transaction, due ORDERS_PAYMENT_TIMEOUT later; its consumer cancels the order only while
it is CREATED and held by no payment, and does nothing otherwise."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction

from orders.consumers import ORDER_TIMEOUT_CONSUMER_GROUP
from orders.events import PAYMENT_TIMEOUT_TAG, PRODUCER_GROUP, TOPIC
from orders.exceptions import OrderIdTaken
from orders.models import Order
from orders.payment_timeout import order_payment_timer_recall
from orders.services import order_create
from orders.tests.factories import UserFactory
from txbroker import delivery, delivery_transitions
from txbroker.models import Delivery, Message

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


def timers(order_id: str):
    return Message.objects.filter(topic=TOPIC, key_rows__key=order_id)


def timer_delivery(order_id: str) -> Delivery:
    return Delivery.objects.get(message__in=timers(order_id), consumer_group=ORDER_TIMEOUT_CONSUMER_GROUP)


def test_creating_an_order_sends_its_payment_timer_due_after_the_timeout(settings):
    settings.ORDERS_PAYMENT_TIMEOUT = 1800.0
    order = order_create(user=UserFactory(), amount=Decimal("10.00"), order_id="T-1")

    (timer,) = timers("T-1")
    assert (timer.state, timer.tag, timer.producer_group, timer.body) == (
        "COMMITTED",
        PAYMENT_TIMEOUT_TAG,
        PRODUCER_GROUP,
        {"order_id": "T-1"},
    )
    assert abs(timer.deliver_at - (order.created_at + timedelta(seconds=1800))) < timedelta(seconds=5)
    row = timer_delivery("T-1")
    assert (row.status, row.attempts) == ("PENDING", 0)

    delivery.deliver_due()  # not due yet: nothing runs
    assert timer_delivery("T-1").status == "PENDING"
    order.refresh_from_db()
    assert order.status == Order.Status.CREATED


def test_a_rolled_back_creation_leaves_no_timer():
    with pytest.raises(Boom), transaction.atomic():
        order_create(user=UserFactory(), amount=Decimal("10.00"), order_id="T-ROLLED")
        raise Boom

    assert not Order.objects.filter(order_id="T-ROLLED").exists()
    assert not timers("T-ROLLED").exists()


def test_a_refused_creation_sends_no_timer():
    order_create(user=UserFactory(), amount=Decimal("10.00"), order_id="T-SAME")
    with pytest.raises(OrderIdTaken):
        order_create(user=UserFactory(), amount=Decimal("20.00"), order_id="T-SAME")

    assert timers("T-SAME").count() == 1


def due_now(settings, order_id: str, **changes) -> Order:
    """A CREATED order (then ``changes``) whose timer is due now."""
    settings.ORDERS_PAYMENT_TIMEOUT = 0.0
    order = order_create(user=UserFactory(), amount=Decimal("10.00"), order_id=order_id)
    if changes:
        Order.objects.filter(pk=order.pk).update(**changes)
    return order


def test_the_timer_cancels_an_order_still_created_and_not_held(settings):
    order = due_now(settings, "T-UNPAID")

    delivery.deliver_due()

    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    assert timer_delivery("T-UNPAID").status == "SUCCEEDED"

    # A redelivery finds it CANCELLED and does nothing.
    assert delivery_transitions.replay(timer_delivery("T-UNPAID").message_id, force=True) == 1
    delivery.deliver_due()
    row = timer_delivery("T-UNPAID")
    assert (row.status, row.attempts) == ("SUCCEEDED", 2)
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED


@pytest.mark.parametrize(
    "changes, status",
    [
        ({"status": Order.Status.PAID}, Order.Status.PAID),
        ({"status": Order.Status.PAID, "payment_hold": True}, Order.Status.PAID),
        ({"payment_hold": True}, Order.Status.CREATED),  # a payment in progress or recorded
        ({"status": Order.Status.CANCELLED}, Order.Status.CANCELLED),
    ],
)
def test_the_timer_does_nothing_to_a_paid_held_or_cancelled_order(settings, changes, status):
    order = due_now(settings, "T-LEFT", **changes)
    before = Order.objects.values().get(pk=order.pk)

    delivery.deliver_due()

    assert timer_delivery("T-LEFT").status == "SUCCEEDED"
    after = Order.objects.values().get(pk=order.pk)
    assert after == before
    assert after["status"] == status


def test_a_timer_whose_order_is_gone_does_nothing(settings):
    order = due_now(settings, "T-GONE")
    Order.objects.filter(pk=order.pk).delete()

    delivery.deliver_due()

    assert timer_delivery("T-GONE").status == "SUCCEEDED"


def test_recalling_the_timer_makes_its_delivery_recalled():
    order_create(user=UserFactory(), amount=Decimal("10.00"), order_id="T-RECALL")

    (msg_id,) = order_payment_timer_recall(order_id="T-RECALL")

    assert timer_delivery("T-RECALL").status == "RECALLED"
    assert msg_id == timers("T-RECALL").get().msg_id
    assert order_payment_timer_recall(order_id="T-RECALL") == []  # nothing left to recall
    assert order_payment_timer_recall(order_id="NO-SUCH-ORDER") == []
