"""Charge reconciliation, in this process: stale PENDING/APPROVED charges are settled with
the gateway and completed by the payment's own message; young charges, charges whose
message exists and charges check-back gave up on are left alone; concurrent runs settle
each charge once; a live payment racing reconciliation never records twice.

The killed-producer scenarios, with real worker and beat processes, are in
``test_reconcile_crash.py``."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from notifications.tests.factories import NotificationProfileFactory
from orders.models import Order
from orders.tests.factories import OrderFactory
from payments import services
from payments.checkers import payment_producer
from payments.events import PRODUCER_GROUP, TAG, TOPIC
from payments.gateways import ChargeResult, SimulatedGateway
from payments.models import Charge, PaymentRecord
from payments.schedule import RECONCILE_TASK_NAME, ensure_periodic_tasks
from payments.selectors import payment_blocks_cancel
from payments.services import ReconcileOutcome, charge_reconcile_stale
from payments.tasks import charge_reconcile
from payments.tests.factories import ChargeFactory
from payments.tests.fixtures import effects
from payments.tests.gateways import BlockingGateway, CountingLookupGateway, LateBlockingGateway
from txbroker import LocalTransactionState, OutgoingMessage, checkback, delivery, messages_with_key
from txbroker.tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

STALE = 120  # seconds: older than the 60 s threshold the tests reconcile with


def check_pass_now():
    """A check pass as if every HALF message's transaction timeout had passed."""
    from txbroker.models import Message

    Message.objects.filter(state="HALF").update(next_check_at=timezone.now() - timedelta(seconds=1))
    return checkback.check_pass()


def unsettled_charge(
    *, status: str, method: str = "sim_approve", age: float = STALE, order: Order | None = None
) -> Charge:
    """A charge left as a payment whose process died leaves it, ``age`` seconds ago."""
    order = order or OrderFactory()
    charge = ChargeFactory(
        order_id=order.order_id, user=order.user, amount=order.amount, status=status, payment_method=method
    )
    since = timezone.now() - timedelta(seconds=age)
    Charge.objects.filter(pk=charge.pk).update(created_at=since, updated_at=since)
    charge.refresh_from_db()
    return charge


def half_message_of(charge: Charge, answer: LocalTransactionState) -> str:
    """A payment message for the charge whose local transaction answers ``answer`` and does
    nothing else (as a producer that died or was refused would leave it)."""
    sent = payment_producer.send_message_in_transaction(
        OutgoingMessage(
            topic=TOPIC, tag=TAG, keys=(charge.order_id,), body={}, properties={"charge_id": str(charge.pk)}
        ),
        lambda message, arg: answer,
    )
    return sent.msg_id


def message_states(order_id: str) -> list[str]:
    return sorted(m.state for m in messages_with_key(order_id, producer_group=PRODUCER_GROUP))


@pytest.fixture
def counting_gateway(settings):
    settings.PAYMENTS_GATEWAY_BACKEND = "payments.tests.gateways.CountingLookupGateway"
    CountingLookupGateway.lookups.clear()
    yield CountingLookupGateway.lookups
    CountingLookupGateway.lookups.clear()


# --- the gateway's lookup ---------------------------------------------------------------------
def test_simulated_lookup_gives_the_answer_the_charge_got_in_any_process():
    gateway = SimulatedGateway()
    approved = unsettled_charge(status=Charge.Status.PENDING, method="sim_approve")
    declined = unsettled_charge(status=Charge.Status.PENDING, method="sim_decline")
    failed = unsettled_charge(status=Charge.Status.PENDING, method="sim_error")

    charged = gateway.charge(
        order_id=approved.order_id,
        amount=approved.amount,
        payment_method="sim_approve",
        idempotency_key=approved.idempotency_key,
    )

    assert gateway.lookup(idempotency_key=approved.idempotency_key) == charged
    assert charged.reference == SimulatedGateway.reference_of(approved.idempotency_key)
    assert gateway.lookup(idempotency_key=declined.idempotency_key) == ChargeResult(
        approved=False, reason=SimulatedGateway.DECLINE_REASON
    )
    assert gateway.lookup(idempotency_key=failed.idempotency_key) is None  # an error charges nothing
    assert gateway.lookup(idempotency_key="charge-999999999") is None
    assert gateway.lookup(idempotency_key="naive-ORDER_1") is None


# --- what is left alone -----------------------------------------------------------------------
def test_young_charges_are_left_alone(counting_gateway):
    pending = unsettled_charge(status=Charge.Status.PENDING, age=5)
    approved = unsettled_charge(status=Charge.Status.APPROVED, age=5)

    report = charge_reconcile_stale(older_than=60)

    assert report.examined == 0
    assert report.summary() == "no charge left PENDING or APPROVED for more than 60s"
    assert counting_gateway == []
    for charge in (pending, approved):
        before = (charge.status, charge.updated_at)
        charge.refresh_from_db()
        assert (charge.status, charge.updated_at, charge.reconciled_at) == (*before, None)
    assert message_states(approved.order_id) == []


def test_a_charge_whose_message_exists_is_left_to_check_back_then_stays_abandoned():
    charge = unsettled_charge(status=Charge.Status.APPROVED)
    half_message_of(charge, LocalTransactionState.UNKNOWN)

    report = charge_reconcile_stale(older_than=60)

    assert report.outcomes == {ReconcileOutcome.LEFT_TO_CHECK_BACK: 1}
    charge.refresh_from_db()
    assert charge.status == Charge.Status.APPROVED
    assert message_states(charge.order_id) == ["HALF"]

    # Check-back finds no record: ROLLED_BACK, and the checker fences the charge.
    check_pass_now()
    charge.refresh_from_db()
    assert charge.status == Charge.Status.ABANDONED
    assert charge.reason == services.CHARGE_ABANDONED_BY_CHECK

    # Never reconciled again: nothing sent, nothing recorded, still to refund.
    assert charge_reconcile_stale(older_than=0).examined == 0
    charge.refresh_from_db()
    assert charge.status == Charge.Status.ABANDONED
    assert message_states(charge.order_id) == ["ROLLED_BACK"]
    assert not PaymentRecord.objects.exists()


def test_an_approved_charge_whose_message_was_rolled_back_is_abandoned_not_sent_again():
    charge = unsettled_charge(status=Charge.Status.APPROVED)
    half_message_of(charge, LocalTransactionState.ROLLBACK)  # rolled back, charge not fenced

    report = charge_reconcile_stale(older_than=60)

    assert report.outcomes == {ReconcileOutcome.ABANDONED: 1}
    charge.refresh_from_db()
    assert (charge.status, charge.reason) == (Charge.Status.ABANDONED, services.CHARGE_RECONCILED_ROLLED_BACK)
    assert message_states(charge.order_id) == ["ROLLED_BACK"]
    assert not PaymentRecord.objects.exists()


# --- what is settled --------------------------------------------------------------------------
def test_a_pending_charge_the_gateway_declined_frees_the_order(client_for):
    charge = unsettled_charge(status=Charge.Status.PENDING, method="sim_decline")

    report = charge_reconcile_stale(older_than=60)

    assert report.outcomes == {ReconcileOutcome.DECLINED: 1}
    charge.refresh_from_db()
    assert charge.status == Charge.Status.DECLINED
    assert charge.reason == services.CHARGE_RECONCILED_DECLINED.format(reason=SimulatedGateway.DECLINE_REASON)
    assert message_states(charge.order_id) == []
    # The order is payable again, and pays.
    answer = client_for(charge.user).post(
        "/api/payments/", {"order_id": charge.order_id, "amount": "99.00"}, format="json"
    )
    assert answer.status_code == 201


def test_a_pending_charge_the_gateway_never_saw_is_an_error_and_frees_the_order():
    charge = unsettled_charge(status=Charge.Status.PENDING, method="sim_error")

    report = charge_reconcile_stale(older_than=60)

    assert report.outcomes == {ReconcileOutcome.NOT_FOUND: 1}
    charge.refresh_from_db()
    assert (charge.status, charge.reason) == (Charge.Status.ERROR, services.CHARGE_RECONCILED_NOT_FOUND)
    assert not payment_blocks_cancel(order_id=charge.order_id)


def test_a_pending_charge_the_gateway_approved_is_completed_as_payment_pay_completes_it(
    sms_outbox, gateway_calls
):
    charge = unsettled_charge(status=Charge.Status.PENDING, method="sim_approve")
    NotificationProfileFactory(user=charge.user)

    report = charge_reconcile_stale(older_than=60)

    assert report.outcomes == {ReconcileOutcome.COMPLETED: 1}
    assert report.summary() == "reconciled 1 charge(s) older than 60s: 1 completed"
    charge.refresh_from_db()
    assert charge.status == Charge.Status.RECORDED
    assert charge.reference == SimulatedGateway.reference_of(charge.idempotency_key)
    assert charge.reason == services.CHARGE_RECONCILED_SENT.format(found="PENDING")
    record = PaymentRecord.objects.get(order_id=charge.order_id)
    (message,) = messages_with_key(charge.order_id)
    assert (message.msg_id, message.state, message.producer_group) == (
        record.message_id,
        "COMMITTED",
        PRODUCER_GROUP,
    )
    assert (message.topic, message.tag, message.properties) == (TOPIC, TAG, {"charge_id": str(charge.pk)})
    assert gateway_calls == []  # reconciliation asks the gateway, it never charges

    delivery.deliver_due()
    state = effects(charge.order_id)
    assert state["order"] == "PAID"
    assert state["points_records"] == [99]
    assert state["notifications"] == ["SENT"]
    assert len(sms_outbox) == 1


def test_an_approved_charge_without_message_is_completed_after_an_earlier_rolled_back_attempt():
    order = OrderFactory()
    earlier = unsettled_charge(status=Charge.Status.ABANDONED, order=order)
    half_message_of(earlier, LocalTransactionState.ROLLBACK)
    charge = unsettled_charge(status=Charge.Status.APPROVED, order=order)

    report = charge_reconcile_stale(older_than=60)

    assert report.outcomes == {ReconcileOutcome.COMPLETED: 1}
    charge.refresh_from_db()
    assert charge.status == Charge.Status.RECORDED
    assert charge.reason == services.CHARGE_RECONCILED_SENT.format(found="APPROVED")
    assert message_states(order.order_id) == ["COMMITTED", "ROLLED_BACK"]
    assert PaymentRecord.objects.filter(order_id=order.order_id).count() == 1


def test_an_unreachable_gateway_leaves_the_charge_for_a_later_run(settings):
    settings.PAYMENTS_GATEWAY_BACKEND = "payments.tests.gateways.UnreachableLookupGateway"
    charge = unsettled_charge(status=Charge.Status.PENDING)

    assert charge_reconcile_stale(older_than=60).outcomes == {ReconcileOutcome.GATEWAY_UNAVAILABLE: 1}
    charge.refresh_from_db()
    assert charge.status == Charge.Status.PENDING
    assert charge.reconciled_at is not None
    # Leased: another run within the threshold leaves it; a later one asks again.
    assert charge_reconcile_stale(older_than=60).examined == 0
    assert charge_reconcile_stale(older_than=0).outcomes == {ReconcileOutcome.GATEWAY_UNAVAILABLE: 1}


def test_the_task_runs_one_pass_with_the_configured_threshold(settings):
    settings.PAYMENTS_CHARGE_RECONCILE_AFTER = 60
    unsettled_charge(status=Charge.Status.PENDING, method="sim_decline")
    unsettled_charge(status=Charge.Status.PENDING, age=5)

    assert charge_reconcile() == {
        "older_than": 60.0,
        "dry_run": False,
        "examined": 1,
        "outcomes": {ReconcileOutcome.DECLINED: 1},
    }


# --- concurrency ------------------------------------------------------------------------------
def test_concurrent_runs_settle_each_charge_once(counting_gateway):
    approvals = [unsettled_charge(status=Charge.Status.PENDING) for _ in range(6)]
    declines = [unsettled_charge(status=Charge.Status.PENDING, method="sim_decline") for _ in range(3)]
    approved = [unsettled_charge(status=Charge.Status.APPROVED) for _ in range(3)]
    reports, errors = [], []
    start = threading.Barrier(4)

    def run() -> None:
        try:
            start.wait(timeout=10)
            reports.append(charge_reconcile_stale(older_than=60, batch_size=2))
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sum(r.examined for r in reports) == 12
    assert sum((r.outcomes for r in reports), start=Counter()) == {
        ReconcileOutcome.COMPLETED: 9,
        ReconcileOutcome.DECLINED: 3,
    }
    pending = approvals + declines
    assert sorted(counting_gateway) == sorted(c.idempotency_key for c in pending)  # each asked once
    for charge in approvals + approved:
        assert message_states(charge.order_id) == ["COMMITTED"]
        assert PaymentRecord.objects.filter(order_id=charge.order_id).count() == 1
    assert Charge.objects.filter(status=Charge.Status.RECORDED).count() == 9
    assert Charge.objects.filter(status=Charge.Status.DECLINED).count() == 3


# --- a live payment racing reconciliation -----------------------------------------------------
def pay_in_a_thread(client, order) -> tuple[threading.Thread, list]:
    answers: list = []

    def pay() -> None:
        try:
            answers.append(
                client.post("/api/payments/", {"order_id": order.order_id, "amount": "99.00"}, format="json")
            )
        finally:
            connection.close()

    thread = threading.Thread(target=pay)
    thread.start()
    return thread, answers


def test_reconciliation_completing_a_slow_payment_first_records_it_once(settings, client_for, gateway_calls):
    """The gateway call outlasts the threshold: reconciliation finds the charge PENDING,
    the gateway says approved, it sends the message. The slow payment then finds its charge
    no longer PENDING, sends nothing, and answers with the record."""
    settings.PAYMENTS_GATEWAY_BACKEND = "payments.tests.gateways.BlockingGateway"
    BlockingGateway.arm()
    order = OrderFactory()
    thread, answers = pay_in_a_thread(client_for(order.user), order)
    try:
        assert BlockingGateway.entered.wait(timeout=10)
        wait_for(lambda: Charge.objects.filter(order_id=order.order_id).exists(), what="the claim")

        assert charge_reconcile_stale(older_than=0).outcomes == {ReconcileOutcome.COMPLETED: 1}
    finally:
        BlockingGateway.release.set()
        thread.join(timeout=30)

    assert answers[0].status_code == 201, answers[0].json()
    record = PaymentRecord.objects.get(order_id=order.order_id)
    assert answers[0].json()["message_id"] == record.message_id
    assert message_states(order.order_id) == ["COMMITTED"]
    assert len(SimulatedGateway.approved_calls(order.order_id)) == 1
    assert list(Charge.objects.filter(order_id=order.order_id).values_list("status", flat=True)) == [
        Charge.Status.RECORDED
    ]


def test_an_approval_after_reconciliation_closed_the_charge_is_marked_for_refund(settings, client_for):
    """Reconciliation asked before the gateway had the charge (not found: ERROR, the order
    is free); the gateway then approves. Money moved with no payment: ABANDONED, and 503."""
    settings.PAYMENTS_GATEWAY_BACKEND = "payments.tests.gateways.LateBlockingGateway"
    LateBlockingGateway.arm()
    order = OrderFactory()
    thread, answers = pay_in_a_thread(client_for(order.user), order)
    try:
        assert LateBlockingGateway.entered.wait(timeout=10)
        wait_for(lambda: Charge.objects.filter(order_id=order.order_id).exists(), what="the claim")

        assert charge_reconcile_stale(older_than=0).outcomes == {ReconcileOutcome.NOT_FOUND: 1}
    finally:
        LateBlockingGateway.release.set()
        thread.join(timeout=30)

    assert answers[0].status_code == 503
    assert answers[0].json() == {"detail": services.PAYMENT_UNAVAILABLE}
    charge = Charge.objects.get(order_id=order.order_id)
    assert (charge.status, charge.reason) == (
        Charge.Status.ABANDONED,
        services.CHARGE_ABANDONED_APPROVED_LATE,
    )
    assert message_states(order.order_id) == []
    assert not payment_blocks_cancel(order_id=order.order_id)


# --- the command and the schedule -------------------------------------------------------------
def test_command_dry_run_changes_nothing_then_the_run_settles():
    charges = [
        unsettled_charge(status=Charge.Status.PENDING),
        unsettled_charge(status=Charge.Status.PENDING, method="sim_decline"),
        unsettled_charge(status=Charge.Status.APPROVED),
        unsettled_charge(status=Charge.Status.APPROVED, age=5),
    ]
    before = list(Charge.objects.order_by("pk").values())
    out = StoringOutput()

    call_command("payments_reconcile", "--dry-run", "--older-than", "60", stdout=out)

    assert out.lines() == [
        "dry run, nothing changed: would settle 3 charge(s) older than 60s: 2 completed, 1 declined"
    ]
    assert list(Charge.objects.order_by("pk").values()) == before
    assert all(message_states(c.order_id) == [] for c in charges)

    out = StoringOutput()
    call_command("payments_reconcile", "--older-than", "60", stdout=out)

    assert out.lines() == ["reconciled 3 charge(s) older than 60s: 2 completed, 1 declined"]
    assert PaymentRecord.objects.count() == 2


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "inf"])
def test_command_refuses_a_bad_older_than(value):
    with pytest.raises(CommandError, match="--older-than must be a number of seconds >= 0"):
        call_command("payments_reconcile", "--older-than", value)


def test_command_reports_when_there_is_nothing_to_do(settings):
    settings.PAYMENTS_CHARGE_RECONCILE_AFTER = 45
    out = StoringOutput()

    call_command("payments_reconcile", stdout=out)

    assert out.lines() == ["no charge left PENDING or APPROVED for more than 45s"]


def test_the_periodic_task_is_created_once_and_synced_on_request(settings):
    from django_celery_beat.models import PeriodicTask

    ensure_periodic_tasks()  # migrate's post_migrate created it; a flushed database may not have it
    assert ensure_periodic_tasks() == []
    task = PeriodicTask.objects.get(name=RECONCILE_TASK_NAME)
    assert task.task == "payments.charge_reconcile"
    assert task.interval.every == 30

    settings.PAYMENTS_CHARGE_RECONCILE_INTERVAL = 5
    assert ensure_periodic_tasks() == []  # an admin's interval is kept unless asked
    assert ensure_periodic_tasks(sync=True) == [f"synced {RECONCILE_TASK_NAME} to every 5s"]
    assert PeriodicTask.objects.get(name=RECONCILE_TASK_NAME).interval.every == 5


class StoringOutput(StringIO):
    def lines(self) -> list[str]:
        return self.getvalue().splitlines()
