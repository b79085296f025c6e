"""The apps' admin pages render (read-only) for a superuser."""

from __future__ import annotations

import pytest

from notifications.models import Notification
from notifications.tests.factories import NotificationProfileFactory
from orders.tests.factories import OrderFactory, UserFactory
from payments.models import Refund
from payments.tests.factories import ChargeFactory, PaymentRecordFactory
from points.tests.factories import PointsRecordFactory, UserPointsFactory

pytestmark = pytest.mark.django_db

PAGES = [
    "orders/order",
    "payments/paymentrecord",
    "payments/charge",
    "payments/refund",
    "points/userpoints",
    "points/pointsrecord",
    "notifications/notification",
    "notifications/notificationprofile",
]


@pytest.mark.parametrize("page", PAGES)
def test_changelist_and_detail_render(client, page):
    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    order = OrderFactory()
    PaymentRecordFactory(order_id=order.order_id, user=order.user)
    charge = ChargeFactory(order_id=order.order_id, user=order.user, status="RECORDED")
    Refund.objects.create(charge=charge, order_id=order.order_id, user=order.user, amount=charge.amount)
    UserPointsFactory(user=order.user, points=99)
    PointsRecordFactory(order_id=order.order_id, user=order.user, points=99)
    NotificationProfileFactory(user=order.user)
    Notification.objects.create(order_id=order.order_id, user=order.user, text="t", status="SKIPPED")
    client.force_login(admin)

    changelist = client.get(f"/admin/{page}/", secure=True)

    assert changelist.status_code == 200
    first = changelist.context["cl"].result_list[0]
    assert client.get(f"/admin/{page}/{first.pk}/change/", secure=True).status_code == 200
