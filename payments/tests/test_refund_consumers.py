"""The refund message's consumers, in this process: orders -> REFUNDED, points taken back
by a negative record, a second (REFUND) notification; each idempotent."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import transaction

from notifications.models import Notification
from notifications.services import REFUND_SMS_TEXT, order_reference, sms_notify_refund
from notifications.tests.factories import NotificationProfileFactory
from orders.models import Order
from orders.tests.factories import OrderFactory, UserFactory
from payments.events import TAG_REFUND
from payments.tests.fixtures import GROUPS
from points.models import PointsRecord
from points.selectors import points_balance
from points.services import points_take_back_for_refund
from txbroker import delivery, delivery_transitions
from txbroker.models import Delivery, Message
from txbroker.tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def pay_and_refund(client, order) -> tuple[str, str]:
    paid = client.post(
        "/api/payments/", {"order_id": order.order_id, "amount": str(order.amount)}, format="json"
    )
    assert paid.status_code == 201, paid.content
    refunded = client.post(f"/api/payments/{order.order_id}/refund/", format="json")
    assert refunded.status_code == 201, refunded.content
    return paid.json()["message_id"], refunded.json()["message_id"]


def deliver_all(*msg_ids: str) -> None:
    def done():
        delivery.deliver_due()
        rows = Delivery.objects.filter(message_id__in=msg_ids)
        return rows.count() == len(msg_ids) * len(GROUPS) and not rows.exclude(status="SUCCEEDED").exists()

    wait_for(done, timeout=30, what="every delivery succeeded")


def test_refund_consumers_mark_refunded_take_points_back_and_send_a_refund_sms(client_for, sms_outbox):
    user = UserFactory()
    NotificationProfileFactory(user=user, phone="+8613800138000")
    order = OrderFactory(user=user, amount="99.90")
    pay_id, refund_id = pay_and_refund(client_for(user), order)

    deliver_all(pay_id, refund_id)

    assert Order.objects.get(pk=order.pk).status == Order.Status.REFUNDED
    records = dict(PointsRecord.objects.filter(order_id=order.order_id).values_list("reason", "points"))
    assert records == {"PAYMENT": 99, "REFUND": -99}
    assert points_balance(user=user) == 0
    kinds = dict(Notification.objects.filter(order_id=order.order_id).values_list("kind", "status"))
    assert kinds == {"PAYMENT": "SENT", "REFUND": "SENT"}
    refund_text = REFUND_SMS_TEXT.format(amount="99.90", reference=order_reference(order.order_id))
    assert [s.text for s in sms_outbox][-1] == refund_text
    for group in GROUPS:  # pay first, in every consumer group
        pay_row = Delivery.objects.get(message_id=pay_id, consumer_group=group)
        refund_row = Delivery.objects.get(message_id=refund_id, consumer_group=group)
        assert pay_row.sequence < refund_row.sequence

    # Redelivered (every group): nothing more happens.
    sent = len(sms_outbox)
    for group in GROUPS:
        assert delivery_transitions.replay(refund_id, group=group, force=True) == 1
        assert delivery_transitions.replay(pay_id, group=group, force=True) == 1
    deliver_all(pay_id, refund_id)
    assert Order.objects.get(pk=order.pk).status == Order.Status.REFUNDED
    assert PointsRecord.objects.filter(order_id=order.order_id).count() == 2
    assert points_balance(user=user) == 0
    assert Notification.objects.filter(order_id=order.order_id).count() == 2
    assert len(sms_outbox) == sent
    assert Message.objects.get(msg_id=refund_id).tag == TAG_REFUND


def test_a_refund_sms_to_an_unverified_phone_is_skipped():
    user = UserFactory()
    NotificationProfileFactory(user=user, unverified=True)
    with transaction.atomic():
        first = sms_notify_refund(order_id="ORD-1", user_id=user.pk, amount=Decimal("5.00"))
        again = sms_notify_refund(order_id="ORD-1", user_id=user.pk, amount=Decimal("5.00"))
    assert first == again
    assert (first.kind, first.status) == (Notification.Kind.REFUND, Notification.Status.SKIPPED)


def test_taking_points_back_without_an_award_raises_so_the_delivery_is_retried():
    with pytest.raises(LookupError), transaction.atomic():
        points_take_back_for_refund(order_id="ORD-NONE", user_id=UserFactory().pk)
    assert not PointsRecord.objects.exists()
