"""The article's known gap, closed: a producer process SIGKILLed while the gateway charges,
or right after the gateway approved, leaves its charge PENDING or APPROVED with no half
message. Reconciliation, run by a real beat process on a real worker, settles it: the
payment is completed (order PAID, points once, one SMS) or the order is free again.

And the faults around it, with real processes: the gateway's books answer alike in every
process; a gateway call still in flight past the reconciliation threshold is left alone
(its payment completes, or reconciliation completes it once the payer died); a call that
outlives the gateway timeout too is closed as not found meanwhile, and its late approval is
marked for refund although the payer died; reconciliation run on a host whose clock is five
minutes ahead or behind (``faketime``) goes by the database's clock."""

from __future__ import annotations

import json
import signal
import sys
import time

import pytest

from notifications.tests.factories import NotificationProfileFactory
from orders.tests.factories import OrderFactory, UserFactory
from payments import reconciliation
from payments.gateways import SimulatedGateway
from payments.models import Charge, PaymentRecord, SimulatedGatewayCharge
from payments.schedule import ensure_periodic_tasks
from payments.tests.factories import ChargeFactory
from payments.tests.fixtures import age_by, effects, gateway_charge, pay_in_a_thread, wait_settled
from payments.tests.gateways import BlockingGateway
from txbroker.tests.processes import start_beat, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.slow]

PAY_IN_A_PRODUCER_PROCESS = """
import os, signal
from decimal import Decimal
from django.contrib.auth import get_user_model
from payments import gateways, services
if {die_after_approval!r}:
    def die_before_the_half_message(**kwargs):
        print("approved: the process dies before storing the half message", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    services.payment_message_send = die_before_the_half_message
if {die_on_the_answer!r}:
    gateway_charge = gateways.SimulatedGateway.charge
    def die_on_the_answer(self, **kwargs):
        answer = gateway_charge(self, **kwargs)
        print(f"the gateway answered approved={{answer.approved}}: the process dies first", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    gateways.SimulatedGateway.charge = die_on_the_answer
user = get_user_model().objects.get(pk={user_id})
outcome = services.payment_pay(
    user=user, order_id={order_id!r}, amount=Decimal({amount!r}), payment_method={method!r}
)
print(f"the producer survived: {{outcome.status}}", flush=True)
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


def producer(
    processes,
    order,
    *,
    method: str = "sim_approve",
    die_after_approval: bool = False,
    die_on_the_answer: bool = False,
    **env,
):
    """A payment in a child process. ``die_after_approval``: SIGKILLed once its charge is
    APPROVED, before the half message; ``die_on_the_answer``: SIGKILLed as soon as the
    gateway's answer arrives, before the payment acts on it."""
    code = PAY_IN_A_PRODUCER_PROCESS.format(
        user_id=order.user_id,
        order_id=order.order_id,
        amount=str(order.amount),
        method=method,
        die_after_approval=die_after_approval,
        die_on_the_answer=die_on_the_answer,
    )
    return processes("producer", [sys.executable, "manage.py", "shell", "-c", code], **env)


def kill_while_the_gateway_charges(processes, order, *, method: str) -> None:
    proc = producer(
        processes, order, method=method, PAYMENTS_GATEWAY_BACKEND="payments.tests.gateways.HangingGateway"
    )
    wait_for(lambda: "the answer is held" in proc.log(), timeout=60, what="the gateway charging")
    proc.kill()  # SIGKILL, the gateway call in progress
    assert proc.popen.returncode == -signal.SIGKILL


def test_killed_while_the_gateways_answer_is_on_its_way_is_completed_by_reconciliation(
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
    assert charge.reason == reconciliation.CHARGE_RECONCILED_SENT.format(found="PENDING")


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
    assert charge.reason == reconciliation.CHARGE_RECONCILED_SENT.format(found="APPROVED")


def test_killed_while_the_gateways_decline_is_on_its_way_frees_the_order_which_then_pays_once(
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


# --- the gateway's books, from any process -----------------------------------------------------
GATEWAY_IN_A_PROCESS = """
from decimal import Decimal
from payments.gateways import SimulatedGateway
gateway = SimulatedGateway()
if {charge!r}:
    gateway.charge(order_id={order_id!r}, amount=Decimal({amount!r}), payment_method="sim_approve",
                   idempotency_key={key!r})
print("lookup:", gateway.lookup(idempotency_key={key!r}), flush=True)
"""


def gateway_in_a_process(processes, name: str, charge: Charge, *, do_charge: bool = False) -> str:
    """Ask the simulated gateway about the charge from another process (charging it first
    with ``do_charge``); return that process's answer line."""
    code = GATEWAY_IN_A_PROCESS.format(
        charge=do_charge, order_id=charge.order_id, amount=str(charge.amount), key=charge.idempotency_key
    )
    proc = processes(name, [sys.executable, "manage.py", "shell", "-c", code])
    assert proc.popen.wait(timeout=60) == 0, proc.log()[-3000:]
    return next(line for line in proc.log().splitlines() if line.startswith("lookup: "))


def test_the_gateway_answers_alike_in_every_process(processes):
    """None while ``charge()`` never ran for the key; after it ran (in any process) the
    answer it recorded, with its reference."""
    mine, theirs = ChargeFactory(status=Charge.Status.PENDING), ChargeFactory(status=Charge.Status.PENDING)
    gateway = SimulatedGateway()

    assert gateway_in_a_process(processes, "lookup-before", mine) == "lookup: None"
    gateway_charge(mine)  # charged here
    approved = gateway.lookup(idempotency_key=mine.idempotency_key)
    assert approved.approved
    assert approved.reference == SimulatedGateway.reference_of(mine.idempotency_key)
    assert gateway_in_a_process(processes, "lookup-after", mine) == f"lookup: {approved}"

    assert gateway.lookup(idempotency_key=theirs.idempotency_key) is None
    answer = gateway_in_a_process(processes, "charge-there", theirs, do_charge=True)  # charged there
    assert answer == f"lookup: {gateway.lookup(idempotency_key=theirs.idempotency_key)}"
    assert gateway.lookup(idempotency_key=theirs.idempotency_key).approved


# --- a gateway call still in flight ------------------------------------------------------------
# Reconciliation every second for charges older than 4 s; the call takes 6.5 s. The first look
# at the charge falls in [4 s, 5 s) and leases it for 4 s, so the next look comes after the
# call has answered: reconciliation never looks in the millisecond between the gateway's
# record and the payment's own move (which would be a legitimate race, but another test).
IN_FLIGHT_WORKER_ENV = {"PAYMENTS_CHARGE_RECONCILE_AFTER": "4", "PAYMENTS_GATEWAY_TIMEOUT": "30"}
IN_FLIGHT_LATENCY = "6.5"


def examined_while_pending(order) -> bool:
    return Charge.objects.filter(
        order_id=order.order_id, status=Charge.Status.PENDING, reconciled_at__isnull=False
    ).exists()


@pytest.mark.parametrize("worker_env", [IN_FLIGHT_WORKER_ENV])
def test_a_call_in_flight_past_the_threshold_is_left_pending_and_the_payment_completes(
    processes, app_worker, order, request
):
    request.getfixturevalue("reconciling_beat")
    proc = producer(processes, order, PAYMENTS_SIMULATED_GATEWAY_LATENCY=IN_FLIGHT_LATENCY)

    wait_for(lambda: examined_while_pending(order), timeout=30, what="reconciliation looking at the charge")
    assert not SimulatedGatewayCharge.objects.filter(order_id=order.order_id).exists()  # still in flight
    assert proc.popen.wait(timeout=60) == 0, proc.log()[-3000:]
    assert "the producer survived: SUCCESS" in proc.log()
    state = wait_settled(order.order_id)

    assert (state["order"], state["charges"], state["records"]) == ("PAID", ["RECORDED"], ["SUCCESS"])
    assert state["messages"] == ["COMMITTED"]
    assert state["points_records"] == [99] and state["notifications"] == ["SENT"]
    charge = Charge.objects.get(order_id=order.order_id)
    assert charge.reason == ""  # recorded by its payment; reconciliation only looked
    wait_for(lambda: app_worker.sms(order.order_id), what="the SMS")
    assert len(app_worker.sms(order.order_id)) == 1
    assert "1 in flight" in app_worker.proc.log()


@pytest.mark.parametrize("worker_env", [IN_FLIGHT_WORKER_ENV])
def test_a_call_in_flight_then_the_payer_killed_after_approval_is_completed_by_reconciliation(
    processes, app_worker, order, request
):
    request.getfixturevalue("reconciling_beat")
    proc = producer(
        processes, order, die_after_approval=True, PAYMENTS_SIMULATED_GATEWAY_LATENCY=IN_FLIGHT_LATENCY
    )

    wait_for(lambda: examined_while_pending(order), timeout=30, what="reconciliation looking at the charge")
    proc.popen.wait(timeout=60)
    assert proc.popen.returncode == -signal.SIGKILL, proc.log()[-3000:]
    wait_for(lambda: effects(order.order_id)["order"] == "PAID", what="the order PAID by reconciliation")
    state = wait_settled(order.order_id)

    assert (state["charges"], state["records"], state["messages"]) == (
        ["RECORDED"],
        ["SUCCESS"],
        ["COMMITTED"],
    )
    assert state["points_records"] == [99] and state["points"] == 99
    assert state["notifications"] == ["SENT"]
    charge = Charge.objects.get(order_id=order.order_id)
    assert charge.reason == reconciliation.CHARGE_RECONCILED_SENT.format(found="APPROVED")
    wait_for(lambda: app_worker.sms(order.order_id), what="the SMS")
    assert len(app_worker.sms(order.order_id)) == 1


# --- a gateway call that outlives the gateway timeout too --------------------------------------
@pytest.mark.parametrize(
    "worker_env", [{"PAYMENTS_CHARGE_RECONCILE_AFTER": "1", "PAYMENTS_GATEWAY_TIMEOUT": "2"}]
)
def test_an_approval_after_the_gateway_timeout_is_abandoned_although_the_payer_died(
    processes, app_worker, order, request, client_for
):
    """Reconciliation takes gateway calls to last at most 2 s; this one takes 7 s (the
    payer's client waits 30 s). Meanwhile reconciliation closes the charge as not found and
    frees the order; the gateway then approves and the payer dies on the answer, before it
    can mark anything. Reconciliation's recheck finds the approval: ABANDONED, to refund."""
    request.getfixturevalue("reconciling_beat")
    proc = producer(
        processes,
        order,
        die_on_the_answer=True,
        PAYMENTS_SIMULATED_GATEWAY_LATENCY="7",
        PAYMENTS_GATEWAY_TIMEOUT="30",
    )

    wait_for(
        lambda: Charge.objects.filter(
            order_id=order.order_id,
            status=Charge.Status.ERROR,
            reason=reconciliation.CHARGE_RECONCILED_NOT_FOUND,
        ).exists(),
        timeout=30,
        what="reconciliation closing the charge as not found",
    )
    assert proc.alive()  # the call is still in flight
    proc.popen.wait(timeout=60)
    assert proc.popen.returncode == -signal.SIGKILL, proc.log()[-3000:]
    assert "the gateway answered approved=True" in proc.log()
    wait_for(
        lambda: effects(order.order_id)["charges"] == ["ABANDONED"],
        what="the late approval marked ABANDONED by reconciliation",
    )

    charge = Charge.objects.get(order_id=order.order_id)
    assert (charge.reason, charge.reference) == (
        reconciliation.CHARGE_RECONCILED_APPROVED_LATE,
        SimulatedGateway.reference_of(charge.idempotency_key),
    )
    state = effects(order.order_id)
    assert (state["order"], state["records"], state["messages"]) == ("CREATED", [], [])
    # Nothing recorded: the order is payable again, and pays once.
    answer = client_for(order.user).post(
        "/api/payments/", {"order_id": order.order_id, "amount": "99.00"}, format="json"
    )
    assert answer.status_code == 201, answer.json()
    state = wait_settled(order.order_id)
    assert (state["order"], state["charges"], state["points_records"]) == (
        "PAID",
        ["ABANDONED", "RECORDED"],
        [99],
    )
    wait_for(lambda: app_worker.sms(order.order_id), what="the SMS")
    assert len(app_worker.sms(order.order_id)) == 1


# --- a host whose clock is off -----------------------------------------------------------------
RECONCILE_IN_A_PROCESS = """
import json, time
from payments.tasks import charge_reconcile
print("clock:", time.time(), flush=True)
print("report:", json.dumps(charge_reconcile()), flush=True)
"""


def reconcile_with_a_shifted_clock(processes, *, name: str, shift: str) -> dict:
    """One reconciliation pass (the beat task's, default threshold of 60 s) in a process
    whose wall clock is shifted by ``shift`` (``faketime``); checks the shift took."""
    # FAKETIME_DONT_FAKE_MONOTONIC: timeouts keep working. With it, libfaketime 0.9.10 makes
    # time.sleep() fail with EINVAL; nothing on this path sleeps.
    argv = ["faketime", "-f", shift, sys.executable, "manage.py", "shell", "-c", RECONCILE_IN_A_PROCESS]
    proc = processes(name, argv, FAKETIME_DONT_FAKE_MONOTONIC="1", PAYMENTS_CHARGE_RECONCILE_AFTER="60")
    assert proc.popen.wait(timeout=60) == 0, proc.log()[-3000:]
    lines = proc.log().splitlines()
    clock = float(next(line for line in lines if line.startswith("clock: ")).split()[1])
    assert abs(clock - time.time() - float(shift.rstrip("s"))) < 60, "faketime did not shift the clock"
    return json.loads(next(line for line in lines if line.startswith("report: ")).removeprefix("report: "))


def test_a_host_five_minutes_ahead_leaves_a_fresh_charge_of_a_live_payment_alone(
    processes, settings, client_for
):
    """By its own clock the charge is five minutes old, past the 60 s threshold and the
    gateway timeout; by the database's it is seconds old, its call in flight."""
    settings.PAYMENTS_GATEWAY_BACKEND = "payments.tests.gateways.BlockingGateway"
    BlockingGateway.arm()
    order = OrderFactory()
    thread, answers = pay_in_a_thread(client_for(order.user), order)
    try:
        assert BlockingGateway.entered.wait(timeout=10)
        charge = wait_for(lambda: Charge.objects.filter(order_id=order.order_id).first(), what="the claim")

        report = reconcile_with_a_shifted_clock(processes, name="reconcile-ahead", shift="+300s")

        assert (report["examined"], report["rechecked"]) == (0, 0)
        leftalone = Charge.objects.get(pk=charge.pk)
        assert (leftalone.status, leftalone.updated_at, leftalone.reconciled_at) == (
            Charge.Status.PENDING,
            charge.updated_at,
            None,
        )
    finally:
        BlockingGateway.release.set()
        thread.join(timeout=30)

    assert answers[0].status_code == 201, answers[0].json()
    charge.refresh_from_db()
    assert (charge.status, charge.reason) == (Charge.Status.RECORDED, "")


def test_a_host_five_minutes_behind_settles_a_stale_charge_on_time(processes):
    """By its own clock the charge is not even created yet; by the database's it has been
    left PENDING for two minutes by a dead payment, the gateway approved it: completed."""
    user = UserFactory()
    order = OrderFactory(user=user)
    charge = ChargeFactory(
        order_id=order.order_id, user=user, amount=order.amount, status=Charge.Status.PENDING
    )
    gateway_charge(charge)
    age_by(charge, seconds=120)

    report = reconcile_with_a_shifted_clock(processes, name="reconcile-behind", shift="-300s")

    assert (report["examined"], report["outcomes"]) == (1, {"completed": 1})
    charge.refresh_from_db()
    assert (charge.status, charge.reason) == (
        Charge.Status.RECORDED,
        reconciliation.CHARGE_RECONCILED_SENT.format(found="PENDING"),
    )
    assert PaymentRecord.objects.filter(order_id=order.order_id).count() == 1
    assert effects(order.order_id)["messages"] == ["COMMITTED"]
