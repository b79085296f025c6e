"""Scenario 3: the producer process is killed (SIGKILL, by txbroker's fault injection)
after storing the half message, or after its local transaction committed. Check-back,
run by a real beat process on a real worker, settles the message from the checker's
answer, and the downstream effects happen once, or never when no record exists."""

from __future__ import annotations

import sys

import pytest

from notifications.tests.factories import NotificationProfileFactory
from orders.tests.factories import OrderFactory, UserFactory
from payments.tests.fixtures import effects, wait_settled
from txbroker.models import Message
from txbroker.tests.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.slow]

KILLED = 137  # what txbroker's fault points exit with, as SIGKILL would

PAY_IN_A_PRODUCER_PROCESS = """
from decimal import Decimal
from django.contrib.auth import get_user_model
from payments.services import payment_pay
user = get_user_model().objects.get(pk={user_id})
payment_pay(user=user, order_id={order_id!r}, amount=Decimal({amount!r}))
print("the producer survived: the fault point did not fire")
"""


def pay_and_die(processes, order, fault: str) -> None:
    code = PAY_IN_A_PRODUCER_PROCESS.format(
        user_id=order.user_id, order_id=order.order_id, amount=str(order.amount)
    )
    producer = processes(
        "producer", [sys.executable, "manage.py", "shell", "-c", code], TXBROKER_FAULTS=f"{fault}=1"
    )
    producer.popen.wait(timeout=60)
    assert producer.popen.returncode == KILLED, producer.log()[-3000:]
    assert f"fault injected: {fault}" in producer.log()


@pytest.fixture
def order():
    user = UserFactory()
    NotificationProfileFactory(user=user)
    return OrderFactory(user=user, amount="99.00")


def test_killed_after_half_message_is_rolled_back_by_check_back_and_nothing_happens(
    processes, app_worker, beat, order, client_for
):
    pay_and_die(processes, order, "after_half_stored")

    # The gateway charged, the half message is stored, the payment was never recorded.
    state = effects(order.order_id)
    assert state["messages"] == ["HALF"]
    assert state["records"] == []
    assert state["charges"] == ["APPROVED"]

    state = wait_settled(order.order_id)

    message = Message.objects.get(key_rows__key=order.order_id)
    assert message.state == "ROLLED_BACK"
    assert message.check_times == 1
    assert state["deliveries"] == {}
    assert state["order"] == "CREATED"
    assert state["records"] == []
    assert state["charges"] == ["ABANDONED"]  # the charge to refund
    assert state["points_records"] == [] and state["notifications"] == []
    assert app_worker.sms() == []
    # The order is payable again, and pays once.
    assert (
        client_for(order.user)
        .post("/api/payments/", {"order_id": order.order_id, "amount": "99.00"}, format="json")
        .status_code
        == 201
    )
    state = wait_settled(order.order_id)
    assert state["order"] == "PAID"
    assert state["points_records"] == [99]
    assert len(app_worker.sms(order.order_id)) == 1


def test_killed_after_local_commit_is_committed_by_check_back_and_effects_happen_once(
    processes, app_worker, beat, order
):
    pay_and_die(processes, order, "after_local_transaction")

    # The payment is recorded; the producer died before committing the message.
    state = effects(order.order_id)
    assert state["messages"] == ["HALF"]
    assert state["records"] == ["SUCCESS"]
    assert state["charges"] == ["RECORDED"]
    assert state["order"] == "CREATED"

    state = wait_settled(order.order_id)

    message = Message.objects.get(key_rows__key=order.order_id)
    assert message.state == "COMMITTED"
    assert message.check_times == 1
    assert state["deliveries"] == {
        "notification_consumer_group": "SUCCEEDED",
        "order_consumer_group": "SUCCEEDED",
        "points_consumer_group": "SUCCEEDED",
    }
    assert set(state["attempts"].values()) == {1}
    assert state["order"] == "PAID"
    assert state["points_records"] == [99] and state["points"] == 99
    assert state["notifications"] == ["SENT"]
    wait_for(lambda: app_worker.sms(order.order_id), what="the SMS")
    assert len(app_worker.sms(order.order_id)) == 1
