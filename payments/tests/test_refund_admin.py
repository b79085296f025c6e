"""The admin's refund of ABANDONED charges: through the refund service, recorded with the
operator, only with the ``payments.refund_charge`` permission."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from orders.tests.factories import OrderFactory, UserFactory
from payments.events import TAG_REFUND
from payments.models import Charge, Refund, SimulatedGatewayRefund
from payments.tests.factories import ChargeFactory
from txbroker.models import Message

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/admin/payments/charge/"


def staff(username: str, *codenames: str):
    user = UserFactory(username=username, is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="payments", codename__in=codenames)
    )
    return user


def refund_action(client, *charges):
    return client.post(
        PAGE, {"action": "refund_abandoned", "_selected_action": [c.pk for c in charges]}, secure=True
    )


def test_an_operator_refunds_an_abandoned_charge_once_recorded_with_them(client):
    operator = staff("operator", "view_charge", "refund_charge")
    order = OrderFactory()
    charge = ChargeFactory(order_id=order.order_id, user=order.user, status=Charge.Status.ABANDONED)
    assert list(Charge.objects.to_refund()) == [charge]
    client.force_login(operator)

    response = refund_action(client, charge)

    assert response.status_code == 302
    refund = Refund.objects.get(charge=charge)
    assert (refund.status, refund.actor, refund.user, refund.amount) == (
        Refund.Status.REFUNDED,
        operator,
        order.user,
        charge.amount,
    )
    assert SimulatedGatewayRefund.objects.filter(idempotency_key=refund.idempotency_key).count() == 1
    assert not Message.objects.filter(tag=TAG_REFUND).exists()  # nobody consumed a payment for it
    assert not Charge.objects.to_refund().exists()

    assert refund_action(client, charge).status_code == 302  # again: nothing more
    assert Refund.objects.count() == 1
    assert SimulatedGatewayRefund.objects.count() == 1


def test_a_charge_that_is_not_abandoned_is_refused(client):
    client.force_login(staff("operator", "view_charge", "refund_charge"))
    order = OrderFactory()
    charge = ChargeFactory(order_id=order.order_id, user=order.user, status=Charge.Status.DECLINED)

    response = refund_action(client, charge)

    assert response.status_code == 302
    assert not Refund.objects.exists()
    assert not SimulatedGatewayRefund.objects.exists()


def test_without_the_permission_the_action_is_neither_offered_nor_run(client):
    viewer = staff("viewer", "view_charge")
    order = OrderFactory()
    charge = ChargeFactory(order_id=order.order_id, user=order.user, status=Charge.Status.ABANDONED)
    client.force_login(viewer)

    page = client.get(PAGE, secure=True)
    assert page.status_code == 200
    assert "refund_abandoned" not in page.content.decode()
    refund_action(client, charge)

    assert not Refund.objects.exists()
    assert not SimulatedGatewayRefund.objects.exists()
