"""The article's flow and its failure scenarios, over HTTP, with a real Celery worker
process consuming on the test PostgreSQL database and Redis."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from notifications.tests.factories import NotificationProfileFactory
from orders.selectors import order_held_by_payment
from orders.tests.factories import OrderFactory, UserFactory
from payments import exceptions, recording
from payments.gateways import SimulatedGateway
from payments.tests.fixtures import effects, wait_settled
from txbroker import checkback
from txbroker.models import Message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

ALL_SUCCEEDED = {
    "notification_consumer_group": "SUCCEEDED",
    "order_consumer_group": "SUCCEEDED",
    "points_consumer_group": "SUCCEEDED",
}


def check_pass_now():
    """A check pass as if every HALF message's transaction timeout had passed."""
    from txbroker.models import Message

    Message.objects.filter(state="HALF").update(next_check_at=timezone.now() - timedelta(seconds=1))
    return checkback.check_pass()


def pay(client, order, **extra):
    body = {"order_id": order.order_id, "amount": f"{Decimal(order.amount):.2f}", **extra}
    return client.post("/api/payments/", body, format="json")


@pytest.fixture
def buyer():
    user = UserFactory(username="buyer")
    NotificationProfileFactory(user=user, phone="+8613800138000")
    return user


def test_normal_flow_order_paid_points_and_one_sms(app_worker, client_for, buyer, gateway_calls):
    order = OrderFactory(order_id="ORDER_001", user=buyer, amount="99.00")

    response = pay(client_for(buyer), order)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["order_id"] == "ORDER_001"
    assert body["amount"] == "99.00"
    assert body["status"] == "SUCCESS"
    assert body["transaction_state"] == "COMMIT"
    message = Message.objects.get(pk=body["message_id"])
    assert (message.topic, message.tag, message.keys, message.producer_group) == (
        "payment_success_topic",
        "pay",
        ["ORDER_001"],
        "payment_producer_group",
    )
    assert message.body["amount"] == "99.00"
    assert message.body["user_id"] == buyer.pk
    state = wait_settled("ORDER_001")
    assert state["records"] == ["SUCCESS"]
    assert state["order"] == "PAID"
    assert state["points"] == 99
    assert state["points_records"] == [99]
    assert state["notifications"] == ["SENT"]
    assert state["deliveries"] == ALL_SUCCEEDED
    assert [s.to for s in app_worker.sms("ORDER_001")] == ["+8613800138000"]
    assert len(SimulatedGateway.approved_calls("ORDER_001")) == 1
    # The caller sees it all through the API.
    client = client_for(buyer)
    assert client.get("/api/orders/ORDER_001/").json()["status"] == "PAID"
    assert client.get("/api/payments/ORDER_001/").json()["status"] == "SUCCESS"
    assert client.get("/api/points/me/").json() == {"user_id": buyer.pk, "points": 99}
    assert client.get("/api/notifications/?order_id=ORDER_001").json()["results"][0]["status"] == "SENT"


def test_points_round_down_and_user_without_phone_is_skipped(app_worker, client_for):
    user = UserFactory()
    order = OrderFactory(user=user, amount="99.90")

    assert pay(client_for(user), order).status_code == 201

    state = wait_settled(order.order_id)
    assert state["points"] == 99
    assert state["notifications"] == ["SKIPPED"]
    assert app_worker.sms() == []


# --- scenario 1: the gateway declines -------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "status", "charge"), [("sim_decline", 402, "DECLINED"), ("sim_error", 502, "ERROR")]
)
def test_declined_or_failed_charge_sends_nothing_and_order_stays_payable(
    app_worker, client_for, buyer, method, status, charge
):
    order = OrderFactory(user=buyer)
    client = client_for(buyer)

    response = pay(client, order, payment_method=method)

    assert response.status_code == status
    assert response.json()["detail"] == (
        SimulatedGateway.DECLINE_REASON
        if method == "sim_decline"
        else exceptions.PAYMENT_GATEWAY_FAILED.format(reason=SimulatedGateway.ERROR_REASON)
    )
    assert effects(order.order_id) | {"points": None} == {
        "order": "CREATED",
        "records": [],
        "charges": [charge],
        "messages": [],
        "deliveries": {},
        "attempts": {},
        "points_records": [],
        "points": None,
        "notifications": [],
    }
    assert not order_held_by_payment(order_id=order.order_id)  # released: cancellable again
    # The order can be paid again, and then everything happens once.
    assert pay(client, order).status_code == 201
    assert order_held_by_payment(order_id=order.order_id)  # a recorded payment keeps it
    state = wait_settled(order.order_id)
    assert state["order"] == "PAID"
    assert state["charges"] == sorted([charge, "RECORDED"])
    assert state["points_records"] == [99]
    assert len(app_worker.sms(order.order_id)) == 1


# --- scenario 2: recording the payment fails --------------------------------------------------
def test_recording_failure_rolls_the_message_back_and_nothing_happens_downstream(
    app_worker, client_for, buyer, monkeypatch
):
    order = OrderFactory(user=buyer)
    client = client_for(buyer)

    def broken_insert(**kwargs):
        raise OperationalError("simulated: the payment_record insert failed")

    monkeypatch.setattr(recording, "payment_record_insert", broken_insert)
    response = pay(client, order)

    # The local transaction answered UNKNOWN (a database error): check-back decides.
    assert response.status_code == 202
    assert response.json()["status"] == "PENDING"
    assert response.json()["transaction_state"] == "UNKNOWN"
    msg_id = response.json()["message_id"]
    assert Message.objects.get(pk=msg_id).state == "HALF"

    report = check_pass_now()

    assert report.outcomes["ROLLED_BACK"] == 1
    state = effects(order.order_id)
    assert state["messages"] == ["ROLLED_BACK"]
    assert state["deliveries"] == {}
    assert state["records"] == []
    assert state["order"] == "CREATED"
    assert state["charges"] == ["ABANDONED"]  # approved, never recorded: to refund
    assert state["points_records"] == [] and state["notifications"] == []
    # The worker has nothing to do for it; once recording works again the order pays.
    monkeypatch.undo()
    assert pay(client, order).status_code == 201
    state = wait_settled(order.order_id)
    assert state["messages"] == ["COMMITTED", "ROLLED_BACK"]
    assert state["points_records"] == [99]
    assert state["notifications"] == ["SENT"]
    assert len(app_worker.sms(order.order_id)) == 1


# --- scenario 4: a consumer fails its first attempts ---------------------------------------------
FLAKY_SMS = {
    "FLAKY_SMS_FAILURES": "2",
    "NOTIFICATIONS_SMS_BACKEND": "notifications.tests.backends.FlakyFileSmsBackend",
}


@pytest.mark.parametrize("worker_env", [FLAKY_SMS], ids=["sms-fails-twice"])
def test_consumer_failing_its_first_attempts_is_retried_until_success_effects_once(
    worker_env, app_worker, beat, client_for, buyer
):
    """The SMS provider fails the first two sends: the delivery is retried (the sweep run by
    beat re-enqueues it after the retry delay) until it succeeds, and the SMS goes once."""
    order = OrderFactory(user=buyer)

    assert pay(client_for(buyer), order).status_code == 201

    state = wait_settled(order.order_id)
    assert state["deliveries"] == ALL_SUCCEEDED
    assert state["attempts"] == {
        "notification_consumer_group": 3,
        "order_consumer_group": 1,
        "points_consumer_group": 1,
    }
    assert state["notifications"] == ["SENT"]
    assert len(app_worker.sms(order.order_id)) == 1
    assert state["points_records"] == [99] and state["points"] == 99
    assert state["order"] == "PAID"


# --- idempotency ----------------------------------------------------------------------------
def test_repeated_payment_answers_the_same_body_and_charges_once(app_worker, client_for, buyer):
    order = OrderFactory(user=buyer)
    client = client_for(buyer)

    first = pay(client, order)
    again = pay(client, order)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    wait_settled(order.order_id)
    after_paid = pay(client, order)
    assert after_paid.status_code == 200
    assert after_paid.json() == first.json()
    state = wait_settled(order.order_id)
    assert len(SimulatedGateway.approved_calls(order.order_id)) == 1
    assert state["records"] == ["SUCCESS"]
    assert state["charges"] == ["RECORDED"]
    assert state["messages"] == ["COMMITTED"]
    assert state["points_records"] == [99] and state["points"] == 99
    assert len(app_worker.sms(order.order_id)) == 1


def test_concurrent_duplicate_payments_charge_record_and_send_once(app_worker, client_for, buyer, settings):
    settings.PAYMENTS_GATEWAY_BACKEND = "payments.tests.gateways.SlowGateway"
    order = OrderFactory(user=buyer)
    clients = [client_for(buyer), client_for(buyer)]
    start = threading.Barrier(2)
    responses = [None, None]

    def request(index: int) -> None:
        try:
            start.wait(timeout=10)
            responses[index] = pay(clients[index], order)
        finally:
            connection.close()

    threads = [threading.Thread(target=request, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(r.status_code for r in responses) == [200, 201]
    assert responses[0].json() == responses[1].json()
    state = wait_settled(order.order_id)
    assert len(SimulatedGateway.approved_calls(order.order_id)) == 1
    assert len(SimulatedGateway.calls) == 1
    assert state["records"] == ["SUCCESS"]
    assert state["charges"] == ["RECORDED"]
    assert state["messages"] == ["COMMITTED"]
    assert state["deliveries"] == ALL_SUCCEEDED
    assert state["points_records"] == [99] and state["points"] == 99
    assert state["notifications"] == ["SENT"]
    assert len(app_worker.sms(order.order_id)) == 1
