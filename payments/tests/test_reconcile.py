"""Charge reconciliation, in this process: stale PENDING/APPROVED charges are settled with
the gateway and completed by the payment's own message; young charges, charges whose
message exists and charges check-back gave up on are left alone; a charge the gateway does
not know is closed only once its call cannot be in flight any more; charges closed without
the gateway's answer are rechecked, and a late approval is marked for refund; concurrent
runs settle each charge once; a live payment racing reconciliation never records twice.

The killed-producer scenarios, with real worker and beat processes, are in
``test_reconcile_crash.py``."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from notifications.tests.factories import NotificationProfileFactory
from orders.models import Order
from orders.selectors import order_held_by_payment
from orders.tests.factories import OrderFactory
from payments import charges, exceptions, reconciliation, services
from payments.checkers import PRODUCER_GROUP, payment_producer
from payments.clock import db_now
from payments.events import TAG, TOPIC
from payments.gateways import ChargeResult, GatewayTimeout, SimulatedGateway
from payments.models import Charge, PaymentRecord, SimulatedGatewayCharge
from payments.reconciliation import ReconcileOutcome, charge_reconcile_stale
from payments.schedule import RECONCILE_TASK_NAME, ensure_periodic_tasks
from payments.tasks import charge_reconcile
from payments.tests.factories import ChargeFactory
from payments.tests.fixtures import age_by, effects, gateway_charge, pay_in_a_thread
from payments.tests.gateways import BlockingGateway, CountingLookupGateway, HeldAnswerGateway
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
    *,
    status: str,
    method: str = "sim_approve",
    age: float = STALE,
    order: Order | None = None,
    at_gateway: bool = True,
) -> Charge:
    """A charge left as a payment whose process died leaves it, ``age`` seconds ago (database
    time). ``at_gateway``: its gateway call ran (the gateway's books say what it did)."""
    order = order or OrderFactory()
    charge = ChargeFactory(
        order_id=order.order_id, user=order.user, amount=order.amount, status=status, payment_method=method
    )
    if at_gateway:
        gateway_charge(charge)
    age_by(charge, seconds=age)
    return charge


def closed_without_answer(
    *, reason: str = reconciliation.CHARGE_RECONCILED_NOT_FOUND, age: float = STALE
) -> Charge:
    """A charge closed ERROR without the gateway's answer ``age`` seconds ago; the gateway
    has nothing for it (yet)."""
    charge = unsettled_charge(status=Charge.Status.ERROR, age=age, at_gateway=False)
    Charge.objects.filter(pk=charge.pk).update(reason=reason)
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
def test_simulated_lookup_answers_what_the_gateway_recorded_and_nothing_before():
    gateway = SimulatedGateway()
    approved = unsettled_charge(status=Charge.Status.PENDING, method="sim_approve", at_gateway=False)
    declined = unsettled_charge(status=Charge.Status.PENDING, method="sim_decline", at_gateway=False)
    failed = unsettled_charge(status=Charge.Status.PENDING, method="sim_error", at_gateway=False)
    for charge in (approved, declined, failed):  # charge() never ran: the gateway knows nothing
        assert gateway.lookup(idempotency_key=charge.idempotency_key) is None

    charged = gateway.charge(
        order_id=approved.order_id,
        amount=approved.amount,
        payment_method="sim_approve",
        idempotency_key=approved.idempotency_key,
    )
    gateway_charge(declined)
    gateway_charge(failed)

    assert gateway.lookup(idempotency_key=approved.idempotency_key) == charged
    assert charged.reference == SimulatedGateway.reference_of(approved.idempotency_key)
    assert gateway.lookup(idempotency_key=declined.idempotency_key) == ChargeResult(
        approved=False, reason=SimulatedGateway.DECLINE_REASON
    )
    assert gateway.lookup(idempotency_key=failed.idempotency_key) is None  # an error charges nothing
    assert gateway.lookup(idempotency_key="charge-999999999") is None
    assert gateway.lookup(idempotency_key="naive-ORDER_1") is None
    # One charge per key: a repeated call answers what the first recorded.
    again = gateway.charge(
        order_id=approved.order_id,
        amount=approved.amount,
        payment_method="sim_decline",
        idempotency_key=approved.idempotency_key,
    )
    assert again == charged
    assert SimulatedGatewayCharge.objects.filter(idempotency_key=approved.idempotency_key).count() == 1


def test_the_gateways_books_survive_the_callers_rollback():
    """The gateway is another system: a charge made inside the caller's transaction stays
    charged when that transaction rolls back."""
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has one writer: the gateway's own connection would wait for the caller")
    charge = unsettled_charge(status=Charge.Status.PENDING, at_gateway=False)

    with pytest.raises(RuntimeError, match="caller fails"), transaction.atomic():
        SimulatedGateway().charge(
            order_id=charge.order_id,
            amount=charge.amount,
            payment_method="sim_approve",
            idempotency_key=charge.idempotency_key,
        )
        raise RuntimeError("the caller fails after the charge")

    assert SimulatedGateway().lookup(idempotency_key=charge.idempotency_key) == ChargeResult(
        approved=True, reference=SimulatedGateway.reference_of(charge.idempotency_key)
    )


def test_a_call_is_unknown_to_the_gateway_until_its_latency_has_passed(settings):
    settings.PAYMENTS_SIMULATED_GATEWAY_LATENCY = 1.5
    charge = unsettled_charge(status=Charge.Status.PENDING, at_gateway=False)
    gateway = SimulatedGateway()
    answers: list = []

    def call() -> None:
        try:
            answers.append(
                gateway.charge(
                    order_id=charge.order_id,
                    amount=charge.amount,
                    payment_method="sim_approve",
                    idempotency_key=charge.idempotency_key,
                )
            )
        finally:
            connection.close()

    thread = threading.Thread(target=call)
    thread.start()
    wait_for(lambda: SimulatedGateway.calls, what="the call")
    assert gateway.lookup(idempotency_key=charge.idempotency_key) is None  # in flight
    thread.join(timeout=30)

    assert answers == [gateway.lookup(idempotency_key=charge.idempotency_key)]
    assert answers[0].approved


def test_a_call_longer_than_the_gateway_timeout_times_out_but_may_have_charged(settings):
    """The caller gives up after PAYMENTS_GATEWAY_TIMEOUT; the gateway charged anyway."""
    settings.PAYMENTS_SIMULATED_GATEWAY_LATENCY = 1.0
    settings.PAYMENTS_GATEWAY_TIMEOUT = 0.2
    charge = unsettled_charge(status=Charge.Status.PENDING, at_gateway=False)
    gateway = SimulatedGateway()

    with pytest.raises(GatewayTimeout, match=r"within 0\.2s"):
        gateway.charge(
            order_id=charge.order_id,
            amount=charge.amount,
            payment_method="sim_approve",
            idempotency_key=charge.idempotency_key,
        )

    assert gateway.lookup(idempotency_key=charge.idempotency_key).approved


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
    assert charge.reason == charges.CHARGE_ABANDONED_BY_CHECK

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
    assert (charge.status, charge.reason) == (
        Charge.Status.ABANDONED,
        reconciliation.CHARGE_RECONCILED_ROLLED_BACK,
    )
    assert message_states(charge.order_id) == ["ROLLED_BACK"]
    assert not PaymentRecord.objects.exists()


# --- what is settled --------------------------------------------------------------------------
def test_a_pending_charge_the_gateway_declined_frees_the_order(client_for):
    charge = unsettled_charge(status=Charge.Status.PENDING, method="sim_decline")

    report = charge_reconcile_stale(older_than=60)

    assert report.outcomes == {ReconcileOutcome.DECLINED: 1}
    charge.refresh_from_db()
    assert charge.status == Charge.Status.DECLINED
    assert charge.reason == reconciliation.CHARGE_RECONCILED_DECLINED.format(
        reason=SimulatedGateway.DECLINE_REASON
    )
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
    assert (charge.status, charge.reason) == (Charge.Status.ERROR, reconciliation.CHARGE_RECONCILED_NOT_FOUND)
    assert not order_held_by_payment(order_id=charge.order_id)


def test_a_pending_charge_the_gateway_approved_is_completed_as_payment_pay_completes_it(
    sms_outbox, gateway_calls
):
    charge = unsettled_charge(status=Charge.Status.PENDING, method="sim_approve")
    NotificationProfileFactory(user=charge.user)

    report = charge_reconcile_stale(older_than=60)

    assert report.outcomes == {ReconcileOutcome.COMPLETED: 1}
    assert report.summary() == "reconciled 1 charge older than 60s: 1 completed"
    charge.refresh_from_db()
    assert charge.status == Charge.Status.RECORDED
    assert charge.reference == SimulatedGateway.reference_of(charge.idempotency_key)
    assert charge.reason == reconciliation.CHARGE_RECONCILED_SENT.format(found="PENDING")
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
    assert charge.reason == reconciliation.CHARGE_RECONCILED_SENT.format(found="APPROVED")
    assert message_states(order.order_id) == ["COMMITTED", "ROLLED_BACK"]
    assert PaymentRecord.objects.filter(order_id=order.order_id).count() == 1


# --- a charge the gateway does not know ------------------------------------------------------
def test_a_charge_unknown_to_the_gateway_stays_pending_while_its_call_may_be_in_flight(settings):
    """Younger than PAYMENTS_GATEWAY_TIMEOUT (database time), a charge the gateway has no
    record of may still be approved by a call in flight: it stays PENDING and is asked
    again later; once its call is over, not found is final."""
    settings.PAYMENTS_GATEWAY_TIMEOUT = 30
    late = unsettled_charge(status=Charge.Status.PENDING, age=5, at_gateway=False)
    lost = unsettled_charge(status=Charge.Status.PENDING, age=5, at_gateway=False)

    report = charge_reconcile_stale(older_than=1)

    assert report.outcomes == {ReconcileOutcome.IN_FLIGHT: 2}
    assert report.summary() == "reconciled 2 charges older than 1s: 2 in flight"
    for charge in (late, lost):
        charge.refresh_from_db()
        assert (charge.status, charge.reason) == (Charge.Status.PENDING, "")
        assert charge.reconciled_at is not None  # leased: asked again only past the threshold
    assert charge_reconcile_stale(older_than=60).examined == 0

    gateway_charge(late)  # its call completes: approved
    age_by(lost, seconds=31)  # the other one's call is over, whatever it was
    report = charge_reconcile_stale(older_than=0)

    assert report.outcomes == {ReconcileOutcome.COMPLETED: 1, ReconcileOutcome.NOT_FOUND: 1}
    late.refresh_from_db()
    lost.refresh_from_db()
    assert late.status == Charge.Status.RECORDED
    assert (lost.status, lost.reason) == (Charge.Status.ERROR, reconciliation.CHARGE_RECONCILED_NOT_FOUND)


def test_dry_run_tells_in_flight_from_not_found(settings):
    settings.PAYMENTS_GATEWAY_TIMEOUT = 30
    unsettled_charge(status=Charge.Status.PENDING, age=5, at_gateway=False)
    unsettled_charge(status=Charge.Status.PENDING, age=STALE, at_gateway=False)

    report = charge_reconcile_stale(older_than=1, dry_run=True)

    assert report.outcomes == {ReconcileOutcome.IN_FLIGHT: 1, ReconcileOutcome.NOT_FOUND: 1}
    assert set(Charge.objects.values_list("status", "reconciled_at")) == {(Charge.Status.PENDING, None)}


# --- charges closed without the gateway's answer, rechecked -----------------------------------
def test_an_approval_found_after_reconciliation_closed_the_charge_marks_it_for_refund(client_for):
    charge = unsettled_charge(status=Charge.Status.PENDING, at_gateway=False)
    assert charge_reconcile_stale(older_than=60).outcomes == {ReconcileOutcome.NOT_FOUND: 1}
    charge.refresh_from_db()
    assert (charge.status, charge.reason) == (Charge.Status.ERROR, reconciliation.CHARGE_RECONCILED_NOT_FOUND)

    gateway_charge(charge)  # the gateway approves it after all
    report = charge_reconcile_stale(older_than=0)

    assert (report.examined, report.recheck_outcomes) == (0, {ReconcileOutcome.APPROVED_LATE: 1})
    assert report.summary() == (
        "no charge left PENDING or APPROVED for more than 0s; "
        "rechecked 1 charge closed without the gateway's answer: 1 approved late"
    )
    charge.refresh_from_db()
    assert (charge.status, charge.reason, charge.reference) == (
        Charge.Status.ABANDONED,
        reconciliation.CHARGE_RECONCILED_APPROVED_LATE,
        SimulatedGateway.reference_of(charge.idempotency_key),
    )
    assert Charge.objects.to_refund().get() == charge
    assert message_states(charge.order_id) == []
    assert not PaymentRecord.objects.exists()
    # Never asked again; the order is payable.
    assert charge_reconcile_stale(older_than=0).rechecked == 0
    answer = client_for(charge.user).post(
        "/api/payments/", {"order_id": charge.order_id, "amount": "99.00"}, format="json"
    )
    assert answer.status_code == 201
    assert sorted(effects(charge.order_id)["charges"]) == ["ABANDONED", "RECORDED"]


def test_closed_charges_are_rechecked_once_per_threshold_and_only_within_the_window(
    settings, counting_gateway
):
    settings.PAYMENTS_CHARGE_RECHECK_WINDOW = 600
    fresh = closed_without_answer(age=5)
    recent = closed_without_answer(age=120)
    timed_out = closed_without_answer(reason=services.CHARGE_GATEWAY_TIMED_OUT, age=120)
    expired = closed_without_answer(age=700)  # closed longer ago than the window
    unsettled_charge(status=Charge.Status.ERROR, at_gateway=False)  # a plain error: nothing charged

    report = charge_reconcile_stale(older_than=60)

    assert (report.examined, report.rechecked) == (0, 2)
    assert report.recheck_outcomes == {ReconcileOutcome.STILL_NOT_CHARGED: 2}
    assert sorted(counting_gateway) == sorted([recent.idempotency_key, timed_out.idempotency_key])
    # Leased: not asked again within the threshold; the fresh one once closed long enough.
    assert charge_reconcile_stale(older_than=60).rechecked == 0
    age_by(fresh, seconds=120, closed=True)
    assert charge_reconcile_stale(older_than=60).recheck_outcomes == {ReconcileOutcome.STILL_NOT_CHARGED: 1}
    assert counting_gateway[-1] == fresh.idempotency_key
    assert len(counting_gateway) == 3
    for charge in (fresh, recent, timed_out, expired):
        before = charge.reason
        charge.refresh_from_db()
        assert (charge.status, charge.reason) == (Charge.Status.ERROR, before)
    expired.refresh_from_db()
    assert expired.reconciled_at is None


def test_a_timed_out_payment_the_gateway_approved_is_marked_for_refund(settings, client_for):
    """The payment's gateway call times out (502), the gateway charged anyway: the charge
    was closed not knowing; reconciliation's recheck finds the approval, ABANDONED."""
    settings.PAYMENTS_SIMULATED_GATEWAY_LATENCY = 0.6
    settings.PAYMENTS_GATEWAY_TIMEOUT = 0.2
    order = OrderFactory()

    answer = client_for(order.user).post(
        "/api/payments/", {"order_id": order.order_id, "amount": "99.00"}, format="json"
    )

    assert answer.status_code == 502
    charge = Charge.objects.get(order_id=order.order_id)
    assert (charge.status, charge.reason) == (Charge.Status.ERROR, services.CHARGE_GATEWAY_TIMED_OUT)
    assert charge_reconcile_stale(older_than=0).recheck_outcomes == {ReconcileOutcome.APPROVED_LATE: 1}
    charge.refresh_from_db()
    assert (charge.status, charge.reason) == (
        Charge.Status.ABANDONED,
        reconciliation.CHARGE_RECONCILED_APPROVED_LATE,
    )
    assert not PaymentRecord.objects.exists()
    assert not order_held_by_payment(order_id=order.order_id)


def test_reconciliation_scans_are_served_by_their_partial_indexes():
    """Neither pass reads the whole charges table: each filter matches a partial index."""
    if connection.vendor != "postgresql":
        pytest.skip("plans are PostgreSQL's")
    started = db_now()
    stale = Charge.objects.stale(older_than=60, leased_before=started).order_by("updated_at", "pk")
    closed = Charge.objects.to_recheck(older_than=60, window=86400, leased_before=started).order_by(
        "updated_at", "pk"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # an empty table would be read anyway
        assert "payments_charge_unsettled" in stale.explain()
        assert "payments_charge_recheck" in closed.explain()


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
        "rechecked": 0,
        "recheck_outcomes": {},
        "refunds": {"examined": 0, "outcomes": {}},
    }


# --- concurrency ------------------------------------------------------------------------------
def test_concurrent_runs_settle_each_charge_once(counting_gateway):
    approvals = [unsettled_charge(status=Charge.Status.PENDING) for _ in range(6)]
    declines = [unsettled_charge(status=Charge.Status.PENDING, method="sim_decline") for _ in range(3)]
    approved = [unsettled_charge(status=Charge.Status.APPROVED) for _ in range(3)]
    late = [closed_without_answer() for _ in range(3)]
    for charge in late:
        gateway_charge(charge)  # approved after reconciliation closed it
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
    assert sum(r.rechecked for r in reports) == 3
    assert sum((r.recheck_outcomes for r in reports), start=Counter()) == {ReconcileOutcome.APPROVED_LATE: 3}
    asked = approvals + declines + late
    assert sorted(counting_gateway) == sorted(c.idempotency_key for c in asked)  # each asked once
    for charge in approvals + approved:
        assert message_states(charge.order_id) == ["COMMITTED"]
        assert PaymentRecord.objects.filter(order_id=charge.order_id).count() == 1
    assert Charge.objects.filter(status=Charge.Status.RECORDED).count() == 9
    assert Charge.objects.filter(status=Charge.Status.DECLINED).count() == 3
    assert Charge.objects.filter(status=Charge.Status.ABANDONED).count() == 3


# --- a live payment racing reconciliation -----------------------------------------------------
def test_reconciliation_completing_a_slow_payment_first_records_it_once(settings, client_for, gateway_calls):
    """The gateway charged but its answer is slow to come back, past the threshold:
    reconciliation finds the charge PENDING, the gateway says approved, it sends the
    message. The slow payment then finds its charge no longer PENDING, sends nothing, and
    answers with the record."""
    settings.PAYMENTS_GATEWAY_BACKEND = "payments.tests.gateways.HeldAnswerGateway"
    HeldAnswerGateway.arm()
    order = OrderFactory()
    thread, answers = pay_in_a_thread(client_for(order.user), order)
    try:
        assert HeldAnswerGateway.entered.wait(timeout=10)
        wait_for(lambda: Charge.objects.filter(order_id=order.order_id).exists(), what="the claim")

        assert charge_reconcile_stale(older_than=0).outcomes == {ReconcileOutcome.COMPLETED: 1}
    finally:
        HeldAnswerGateway.release.set()
        thread.join(timeout=30)

    assert answers[0].status_code == 201, answers[0].json()
    record = PaymentRecord.objects.get(order_id=order.order_id)
    assert answers[0].json()["message_id"] == record.message_id
    assert message_states(order.order_id) == ["COMMITTED"]
    assert len(SimulatedGateway.approved_calls(order.order_id)) == 1
    assert list(Charge.objects.filter(order_id=order.order_id).values_list("status", flat=True)) == [
        Charge.Status.RECORDED
    ]


def test_reconciliation_leaves_a_charge_in_flight_and_the_payment_completes_normally(settings, client_for):
    """The gateway call outlasts the threshold but not PAYMENTS_GATEWAY_TIMEOUT: the gateway
    has no record yet, so reconciliation leaves the charge PENDING (in flight); the payment
    then records it as usual."""
    settings.PAYMENTS_GATEWAY_BACKEND = "payments.tests.gateways.BlockingGateway"
    settings.PAYMENTS_GATEWAY_TIMEOUT = 30
    BlockingGateway.arm()
    order = OrderFactory()
    thread, answers = pay_in_a_thread(client_for(order.user), order)
    try:
        assert BlockingGateway.entered.wait(timeout=10)
        wait_for(lambda: Charge.objects.filter(order_id=order.order_id).exists(), what="the claim")

        assert charge_reconcile_stale(older_than=0).outcomes == {ReconcileOutcome.IN_FLIGHT: 1}
        assert Charge.objects.get(order_id=order.order_id).status == Charge.Status.PENDING
    finally:
        BlockingGateway.release.set()
        thread.join(timeout=30)

    assert answers[0].status_code == 201, answers[0].json()
    charge = Charge.objects.get(order_id=order.order_id)
    assert (charge.status, charge.reason) == (Charge.Status.RECORDED, "")
    assert PaymentRecord.objects.get(order_id=order.order_id).message_id == answers[0].json()["message_id"]
    assert message_states(order.order_id) == ["COMMITTED"]


def test_an_approval_after_reconciliation_closed_the_charge_is_marked_for_refund(settings, client_for):
    """The call outlasts PAYMENTS_GATEWAY_TIMEOUT (0 here): reconciliation asked before the
    gateway had the charge (not found: ERROR, the order is free); the gateway then approves.
    Money moved with no payment: the surviving payment marks it ABANDONED, and 503."""
    settings.PAYMENTS_GATEWAY_BACKEND = "payments.tests.gateways.BlockingGateway"
    settings.PAYMENTS_GATEWAY_TIMEOUT = 0
    BlockingGateway.arm()
    order = OrderFactory()
    thread, answers = pay_in_a_thread(client_for(order.user), order)
    try:
        assert BlockingGateway.entered.wait(timeout=10)
        wait_for(lambda: Charge.objects.filter(order_id=order.order_id).exists(), what="the claim")

        assert charge_reconcile_stale(older_than=0).outcomes == {ReconcileOutcome.NOT_FOUND: 1}
    finally:
        BlockingGateway.release.set()
        thread.join(timeout=30)

    assert answers[0].status_code == 503
    assert answers[0].json() == {"detail": exceptions.PAYMENT_UNAVAILABLE}
    charge = Charge.objects.get(order_id=order.order_id)
    assert (charge.status, charge.reason) == (
        Charge.Status.ABANDONED,
        charges.CHARGE_ABANDONED_APPROVED_LATE,
    )
    assert message_states(order.order_id) == []
    assert not order_held_by_payment(order_id=order.order_id)


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
        "dry run, nothing changed: would settle 3 charges older than 60s: 2 completed, 1 declined"
    ]
    assert list(Charge.objects.order_by("pk").values()) == before
    assert all(message_states(c.order_id) == [] for c in charges)

    out = StoringOutput()
    call_command("payments_reconcile", "--older-than", "60", stdout=out)

    assert out.lines() == ["reconciled 3 charges older than 60s: 2 completed, 1 declined"]
    assert PaymentRecord.objects.count() == 2


def test_command_reports_charges_in_flight_and_late_approvals(settings):
    settings.PAYMENTS_GATEWAY_TIMEOUT = 30
    unsettled_charge(status=Charge.Status.PENDING, age=20, at_gateway=False)  # its call may still run
    gateway_charge(closed_without_answer())  # approved after it was closed
    out = StoringOutput()

    call_command("payments_reconcile", "--older-than", "10", stdout=out)

    assert out.lines() == [
        "reconciled 1 charge older than 10s: 1 in flight; "
        "rechecked 1 charge closed without the gateway's answer: 1 approved late"
    ]


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
