"""The payments REST API: validation and error answers (the flow itself is test_flow.py)."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from orders.models import Order
from orders.tests.factories import OrderFactory, UserFactory
from orders.tests.test_api import INVALID_AMOUNTS, INVALID_ORDER_IDS
from payments import exceptions, services
from payments.gateways import SimulatedGateway
from payments.models import Charge, PaymentRecord
from payments.tests.factories import PaymentRecordFactory


def pay(client, **body):
    return client.post("/api/payments/", body, format="json")


@pytest.mark.django_db
@pytest.mark.parametrize("amount", INVALID_AMOUNTS)
def test_invalid_amounts_are_400_naming_the_field(client_for, amount, gateway_calls):
    order = OrderFactory()

    response = pay(client_for(order.user), order_id=order.order_id, amount=amount)

    assert response.status_code == 400
    assert list(response.json()) == ["amount"]
    assert gateway_calls == []


@pytest.mark.django_db
@pytest.mark.parametrize("order_id", INVALID_ORDER_IDS)
def test_invalid_order_ids_are_400_naming_the_field(client_for, order_id):
    response = pay(client_for(UserFactory()), order_id=order_id, amount="99.00")

    assert response.status_code == 400
    assert list(response.json()) == ["order_id"]


@pytest.mark.django_db
def test_missing_fields_are_named(client_for):
    response = pay(client_for(UserFactory()))

    assert response.status_code == 400
    assert set(response.json()) == {"order_id", "amount"}


@pytest.mark.django_db
def test_an_unknown_payment_method_is_400_naming_the_field(client_for):
    order = OrderFactory()

    response = pay(client_for(order.user), order_id=order.order_id, amount="99.00", payment_method="bitcoin")

    assert response.status_code == 400
    assert response.json() == {"payment_method": ["must be one of: sim_approve, sim_decline, sim_error"]}


@pytest.mark.django_db(transaction=True)
def test_an_amount_that_is_not_the_orders_is_400_naming_the_field(client_for, gateway_calls):
    order = OrderFactory(amount="99.00")

    response = pay(client_for(order.user), order_id=order.order_id, amount="98.99")

    assert response.status_code == 400
    assert response.json() == {"amount": [exceptions.PAYMENT_AMOUNT_MISMATCH.format(expected="99.00")]}
    assert gateway_calls == []


@pytest.mark.django_db(transaction=True)
def test_a_missing_order_is_404(client_for):
    response = pay(client_for(UserFactory()), order_id="NO_SUCH_ORDER", amount="99.00")

    assert response.status_code == 404
    assert response.json() == {"detail": exceptions.PAYMENT_ORDER_NOT_FOUND}


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_order_is_409(client_for, gateway_calls):
    order = OrderFactory(status=Order.Status.CANCELLED)

    response = pay(client_for(order.user), order_id=order.order_id, amount="99.00")

    assert response.status_code == 409
    assert response.json() == {"detail": exceptions.PAYMENT_NOT_PAYABLE.format(status="CANCELLED")}
    assert gateway_calls == []


@pytest.mark.django_db(transaction=True)
def test_a_payment_in_progress_is_409_after_the_wait(client_for, settings, gateway_calls):
    """An active charge left by a process that died (no outcome): duplicates wait, then 409."""
    settings.PAYMENTS_IN_PROGRESS_WAIT = 0.2
    order = OrderFactory()
    Charge.objects.create(
        order_id=order.order_id, user=order.user, amount=order.amount, payment_method="sim_approve"
    )

    response = pay(client_for(order.user), order_id=order.order_id, amount="99.00")

    assert response.status_code == 409
    assert response.json() == {"detail": exceptions.PAYMENT_IN_PROGRESS}
    assert gateway_calls == []


@pytest.mark.django_db(transaction=True)
def test_decline_is_402_with_the_gateways_reason_and_error_is_502(client_for):
    order = OrderFactory()
    client = client_for(order.user)

    declined = pay(client, order_id=order.order_id, amount="99.00", payment_method="sim_decline")
    failed = pay(client, order_id=order.order_id, amount="99.00", payment_method="sim_error")

    assert (declined.status_code, declined.json()) == (402, {"detail": SimulatedGateway.DECLINE_REASON})
    assert failed.status_code == 502
    assert SimulatedGateway.ERROR_REASON in failed.json()["detail"]
    assert not PaymentRecord.objects.exists()
    assert sorted(Charge.objects.values_list("status", flat=True)) == ["DECLINED", "ERROR"]


@pytest.mark.django_db(transaction=True)
def test_a_gateway_backend_that_crashes_is_a_502_not_a_500(client_for, settings):
    settings.PAYMENTS_GATEWAY_BACKEND = "payments.gateways.PaymentGateway"  # charge() not implemented
    order = OrderFactory()

    response = pay(client_for(order.user), order_id=order.order_id, amount="99.00")

    assert response.status_code == 502
    assert Charge.objects.get().status == Charge.Status.ERROR


@pytest.mark.django_db
def test_the_payment_record_is_the_callers_only(client_for):
    record = PaymentRecordFactory(amount="12.30", message_id="MSG")

    mine = client_for(record.user).get(f"/api/payments/{record.order_id}/")
    theirs = client_for(UserFactory()).get(f"/api/payments/{record.order_id}/")

    assert mine.status_code == 200
    assert mine.json() | {"pay_time": None, "created_at": None} == {
        "order_id": record.order_id,
        "user_id": record.user_id,
        "amount": "12.30",
        "pay_time": None,
        "status": "SUCCESS",
        "message_id": "MSG",
        "created_at": None,
    }
    assert theirs.status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_failure_to_send_the_message_is_503_and_releases_the_order(client_for, monkeypatch):
    from payments.checkers import payment_producer

    order = OrderFactory()
    client = client_for(order.user)

    def broker_down(*args, **kwargs):
        raise OperationalError("simulated: the broker's database is unreachable")

    monkeypatch.setattr(payment_producer, "send_message_in_transaction", broker_down)
    response = pay(client, order_id=order.order_id, amount="99.00")

    assert response.status_code == 503
    assert response.json() == {"detail": exceptions.PAYMENT_UNAVAILABLE}
    assert Charge.objects.get().status == Charge.Status.ABANDONED  # to refund
    monkeypatch.undo()
    assert pay(client, order_id=order.order_id, amount="99.00").status_code == 201


@pytest.mark.django_db
def test_paying_inside_a_transaction_fails_before_charging(gateway_calls):
    order = OrderFactory()

    with pytest.raises(RuntimeError, match="outside any transaction"):
        services.payment_pay(user=order.user, order_id=order.order_id, amount=order.amount)
    assert gateway_calls == []
    assert not Charge.objects.exists()
