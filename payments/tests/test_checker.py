"""The checker and the local transaction: authoritative answers, also when check-back
races the producer."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from orders.models import Order
from orders.selectors import order_get_for_update
from orders.tests.factories import OrderFactory
from payments import charges, exceptions, recording
from payments.checkers import PRODUCER_GROUP
from payments.events import TAG, TOPIC, PaymentSucceeded
from payments.models import Charge, PaymentRecord
from payments.recording import PaymentIntent, payment_check_transaction, payment_record_local_transaction
from payments.tests.factories import ChargeFactory, PaymentRecordFactory
from payments.tests.fixtures import effects
from txbroker import LocalTransactionState, MessageView, checkback
from txbroker.tests.processes import wait_for

COMMIT, ROLLBACK, UNKNOWN = (
    LocalTransactionState.COMMIT,
    LocalTransactionState.ROLLBACK,
    LocalTransactionState.UNKNOWN,
)


def check_pass_now():
    """A check pass as if every HALF message's transaction timeout had passed."""
    from txbroker.models import Message

    Message.objects.filter(state="HALF").update(next_check_at=timezone.now() - timedelta(seconds=1))
    return checkback.check_pass()


def view(order_id: str, charge: Charge | None = None, msg_id: str = "M1") -> MessageView:
    return MessageView(
        msg_id=msg_id,
        topic=TOPIC,
        tag=TAG,
        keys=(order_id,),
        body={},
        properties={"charge_id": str(charge.pk)} if charge else {},
        producer_group=PRODUCER_GROUP,
        created_at=timezone.now(),
    )


def intent(order: Order, charge: Charge) -> PaymentIntent:
    event = PaymentSucceeded(
        order_id=order.order_id, user_id=order.user_id, amount=order.amount, pay_time=timezone.now()
    )
    return PaymentIntent(charge_id=charge.pk, event=event)


# --- the checker ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_checker_commits_when_a_success_record_exists():
    record = PaymentRecordFactory()
    OrderFactory(order_id=record.order_id, user=record.user)

    assert payment_check_transaction(view(record.order_id)) == COMMIT


@pytest.mark.django_db
def test_checker_rolls_back_when_no_record_exists_and_fences_the_charge():
    order = OrderFactory()
    charge = ChargeFactory(order_id=order.order_id, user=order.user, status=Charge.Status.APPROVED)

    assert payment_check_transaction(view(order.order_id, charge)) == ROLLBACK

    charge.refresh_from_db()
    assert charge.status == Charge.Status.ABANDONED
    assert charge.reason == charges.CHARGE_ABANDONED_BY_CHECK
    # A local transaction that starts after that answer can no longer record the payment.
    assert payment_record_local_transaction(view(order.order_id, charge), intent(order, charge)) == ROLLBACK
    assert not PaymentRecord.objects.filter(order_id=order.order_id).exists()


@pytest.mark.django_db
def test_checker_answers_unknown_when_the_database_cannot_tell(monkeypatch):
    order = OrderFactory()

    def unreachable(**kwargs):
        raise OperationalError("simulated: the database is unreachable")

    monkeypatch.setattr(recording, "order_get_for_update", unreachable)

    assert payment_check_transaction(view(order.order_id)) == UNKNOWN


@pytest.mark.django_db(transaction=True)
def test_checker_waits_for_a_local_transaction_that_holds_the_order_lock():
    """Check-back asks while the local transaction is inserting the record: the checker
    waits on the order row lock and then sees the record, so it never answers ROLLBACK
    for a payment that is being recorded."""
    order = OrderFactory()
    charge = ChargeFactory(order_id=order.order_id, user=order.user)
    inserted, finish = threading.Event(), threading.Event()
    answers = []

    def local_transaction() -> None:
        try:
            with transaction.atomic():
                order_get_for_update(order_id=order.order_id)
                recording.payment_record_insert(event=intent(order, charge).event, message_id="M1")
                inserted.set()
                finish.wait(timeout=30)
        finally:
            connection.close()

    def check() -> None:
        try:
            answers.append(payment_check_transaction(view(order.order_id, charge)))
        finally:
            connection.close()

    producer = threading.Thread(target=local_transaction)
    producer.start()
    assert inserted.wait(timeout=10)
    checker = threading.Thread(target=check)
    checker.start()
    wait_for(lock_waiters, timeout=10, what="the checker waiting on the order row lock")
    assert answers == []
    finish.set()
    producer.join(timeout=10)
    checker.join(timeout=10)

    assert answers == [COMMIT]
    charge.refresh_from_db()
    assert charge.status == Charge.Status.APPROVED  # not fenced: it was being recorded


def lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


# --- the local transaction --------------------------------------------------------------------
@pytest.mark.django_db
def test_local_transaction_records_the_payment_and_the_charge():
    order = OrderFactory()
    charge = ChargeFactory(order_id=order.order_id, user=order.user)

    assert (
        payment_record_local_transaction(view(order.order_id, charge, "MSG1"), intent(order, charge))
        == COMMIT
    )

    record = PaymentRecord.objects.get(order_id=order.order_id)
    assert (record.status, record.amount, record.message_id) == ("SUCCESS", order.amount, "MSG1")
    charge.refresh_from_db()
    assert charge.status == Charge.Status.RECORDED


@pytest.mark.django_db
def test_local_transaction_treats_a_duplicate_key_as_already_succeeded():
    order = OrderFactory()
    PaymentRecordFactory(order_id=order.order_id, user=order.user)
    charge = ChargeFactory(order_id="OTHER", user=order.user)

    assert payment_record_local_transaction(view(order.order_id, charge), intent(order, charge)) == COMMIT
    assert PaymentRecord.objects.filter(order_id=order.order_id).count() == 1


@pytest.mark.django_db
def test_a_second_message_of_a_recorded_charge_rolls_back_in_its_local_transaction_and_check():
    """Reconciliation and a payment that outlasted its threshold both sent a message for
    one charge: the one that did not record the payment is refused, so it is delivered once."""
    order = OrderFactory()
    charge = ChargeFactory(order_id=order.order_id, user=order.user)

    assert (
        payment_record_local_transaction(view(order.order_id, charge, "M1"), intent(order, charge)) == COMMIT
    )
    assert (
        payment_record_local_transaction(view(order.order_id, charge, "M2"), intent(order, charge))
        == ROLLBACK
    )
    assert payment_check_transaction(view(order.order_id, charge, "M2")) == ROLLBACK
    assert payment_check_transaction(view(order.order_id, charge, "M1")) == COMMIT
    assert PaymentRecord.objects.filter(order_id=order.order_id).count() == 1
    charge.refresh_from_db()
    assert charge.status == Charge.Status.RECORDED


@pytest.mark.django_db
def test_local_transaction_rolls_back_when_the_order_is_no_longer_payable():
    order = OrderFactory(status=Order.Status.CANCELLED)
    charge = ChargeFactory(order_id=order.order_id, user=order.user)

    assert payment_record_local_transaction(view(order.order_id, charge), intent(order, charge)) == ROLLBACK

    charge.refresh_from_db()
    assert charge.status == Charge.Status.ABANDONED
    assert not PaymentRecord.objects.exists()


@pytest.mark.django_db
def test_local_transaction_answers_unknown_on_a_database_error(monkeypatch, settings):
    settings.PAYMENTS_RECORD_RETRY_SECONDS = 0  # no second try (test_record_retry.py has them)
    order = OrderFactory()
    charge = ChargeFactory(order_id=order.order_id, user=order.user)

    def broken_insert(**kwargs):
        raise OperationalError("simulated")

    monkeypatch.setattr(recording, "payment_record_insert", broken_insert)

    assert payment_record_local_transaction(view(order.order_id, charge), intent(order, charge)) == UNKNOWN
    charge.refresh_from_db()
    assert charge.status == Charge.Status.APPROVED  # rolled back with the failed insert


@pytest.mark.django_db(transaction=True)
def test_check_back_before_a_late_local_transaction_wins_and_the_payment_answers_409(
    monkeypatch, client_for, broker_env
):
    """The producer stalls between storing the half message and its local transaction,
    long enough for check-back to ask: no record, ROLLBACK. The late local transaction
    then finds its charge abandoned and answers ROLLBACK too: never a record for a
    rolled-back message."""
    order = OrderFactory()
    original = recording.payment_record_local_transaction

    def stalled(message, arg):
        report = check_pass_now()
        assert report.outcomes["ROLLED_BACK"] == 1
        return original(message, arg)

    monkeypatch.setattr(recording, "payment_record_local_transaction", stalled)
    client = client_for(order.user)
    body = {"order_id": order.order_id, "amount": "99.00"}

    response = client.post("/api/payments/", body, format="json")

    assert response.status_code == 409
    assert response.json() == {"detail": exceptions.PAYMENT_NOT_RECORDED}
    state = effects(order.order_id)
    assert state["messages"] == ["ROLLED_BACK"]
    assert state["records"] == []
    assert state["charges"] == ["ABANDONED"]
    assert state["order"] == "CREATED"
    monkeypatch.undo()
    assert client.post("/api/payments/", body, format="json").status_code == 201
