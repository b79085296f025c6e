"""The article's known gap, closed: a producer process SIGKILLed while the gateway charges,
or right after the gateway approved, leaves its charge PENDING or APPROVED with no half
message. Reconciliation, run by a real beat process on a real worker, settles it: the
payment is completed (order PAID, points once, one SMS) or the order is free again."""

from __future__ import annotations

import signal
import sys

import pytest

from notifications.tests.factories import NotificationProfileFactory
from orders.tests.factories import OrderFactory, UserFactory
from payments import services
from payments.models import Charge
from payments.schedule import ensure_periodic_tasks
from payments.tests.fixtures import effects, wait_settled
from txbroker.tests.processes import start_beat, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.slow]

PAY_IN_A_PRODUCER_PROCESS = """
import os, signal
from decimal import Decimal
from django.contrib.auth import get_user_model
from payments import services
if {die_after_approval!r}:
    def die_before_the_half_message(**kwargs):
        print("approved: the process dies before storing the half message", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    services._payment_message_send = die_before_the_half_message
user = get_user_model().objects.get(pk={user_id})
services.payment_pay(user=user, order_id={order_id!r}, amount=Decimal({amount!r}), payment_method={method!r})
print("the producer survived", flush=True)
"""


@pytest.fixture
def worker_env() -> dict[str, str]:
    """The worker reconciles charges left unsettled for more than a second."""
    return {"PAYMENTS_CHARGE_RECONCILE_AFTER": "1"}


@pytest.fixture
def reconciling_beat(settings, transactional_db, broker_env, tmp_path):
    """Beat with the reconciliation task every second (started once the producer is dead)."""
    settings.PAYMENTS_CHARGE_RECONCILE_INTERVAL = 1
    ensure_periodic_tasks(sync=True)
    proc = start_beat(tmp_path)
    yield proc
    proc.stop()


@pytest.fixture
def order():
    user = UserFactory()
    NotificationProfileFactory(user=user)
    return OrderFactory(user=user, amount="99.00")


def producer(processes, order, *, method: str = "sim_approve", die_after_approval: bool = False, **env):
    code = PAY_IN_A_PRODUCER_PROCESS.format(
        user_id=order.user_id,
        order_id=order.order_id,
        amount=str(order.amount),
        method=method,
        die_after_approval=die_after_approval,
    )
    return processes("producer", [sys.executable, "manage.py", "shell", "-c", code], **env)


def kill_while_the_gateway_charges(processes, order, *, method: str) -> None:
    proc = producer(
        processes, order, method=method, PAYMENTS_GATEWAY_BACKEND="payments.tests.gateways.HangingGateway"
    )
    wait_for(lambda: "gateway charging charge-" in proc.log(), timeout=60, what="the gateway call")
    proc.kill()  # SIGKILL, the gateway call in progress
    assert proc.popen.returncode == -signal.SIGKILL


def test_killed_while_the_gateway_charges_is_completed_by_reconciliation(
    processes, app_worker, order, request
):
    kill_while_the_gateway_charges(processes, order, method="sim_approve")
    state = effects(order.order_id)
    assert (state["charges"], state["messages"], state["order"]) == (["PENDING"], [], "CREATED")

    request.getfixturevalue("reconciling_beat")
    wait_for(lambda: effects(order.order_id)["order"] == "PAID", what="the order PAID by reconciliation")
    state = wait_settled(order.order_id)

    assert state["charges"] == ["RECORDED"]
    assert state["records"] == ["SUCCESS"]
    assert state["messages"] == ["COMMITTED"]
    assert state["points_records"] == [99] and state["points"] == 99
    assert state["notifications"] == ["SENT"]
    wait_for(lambda: app_worker.sms(order.order_id), what="the SMS")
    assert len(app_worker.sms(order.order_id)) == 1
    charge = Charge.objects.get(order_id=order.order_id)
    assert charge.reason == services.CHARGE_RECONCILED_SENT.format(found="PENDING")


def test_killed_after_the_gateway_approved_is_completed_by_reconciliation(
    processes, app_worker, order, request
):
    proc = producer(processes, order, die_after_approval=True)
    proc.popen.wait(timeout=60)
    assert proc.popen.returncode == -signal.SIGKILL, proc.log()[-3000:]
    state = effects(order.order_id)
    assert (state["charges"], state["messages"], state["order"]) == (["APPROVED"], [], "CREATED")

    request.getfixturevalue("reconciling_beat")
    wait_for(lambda: effects(order.order_id)["order"] == "PAID", what="the order PAID by reconciliation")
    state = wait_settled(order.order_id)

    assert state["charges"] == ["RECORDED"]
    assert state["records"] == ["SUCCESS"]
    assert state["messages"] == ["COMMITTED"]
    assert set(state["deliveries"].values()) == {"SUCCEEDED"}
    assert state["points_records"] == [99] and state["points"] == 99
    wait_for(lambda: app_worker.sms(order.order_id), what="the SMS")
    assert len(app_worker.sms(order.order_id)) == 1
    charge = Charge.objects.get(order_id=order.order_id)
    assert charge.reason == services.CHARGE_RECONCILED_SENT.format(found="APPROVED")


def test_killed_while_the_gateway_declines_frees_the_order_which_then_pays_once(
    processes, app_worker, order, request, client_for
):
    kill_while_the_gateway_charges(processes, order, method="sim_decline")

    request.getfixturevalue("reconciling_beat")
    wait_for(
        lambda: effects(order.order_id)["charges"] == ["DECLINED"],
        what="the charge DECLINED by reconciliation",
    )
    state = effects(order.order_id)
    assert (state["order"], state["messages"], state["records"]) == ("CREATED", [], [])

    answer = client_for(order.user).post(
        "/api/payments/", {"order_id": order.order_id, "amount": "99.00"}, format="json"
    )
    assert answer.status_code == 201, answer.json()
    state = wait_settled(order.order_id)
    assert state["order"] == "PAID"
    assert state["charges"] == ["DECLINED", "RECORDED"]
    assert state["points_records"] == [99]
    wait_for(lambda: app_worker.sms(order.order_id), what="the SMS")
    assert len(app_worker.sms(order.order_id)) == 1
