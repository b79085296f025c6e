"""The payment message, its local transaction and its checker: the one way a payment is
recorded (``payments.services.payment_pay`` and reconciliation both send through
``payment_message_send``).

Why the checker's answer is authoritative (``payment_check_transaction``): it takes the
order row lock before looking for the record, so it waits for a local transaction that is
inserting it and then sees it (COMMIT). When it finds no record it moves the message's
charge APPROVED -> ABANDONED under that lock before answering ROLLBACK, and the local
transaction records only an APPROVED charge: a local transaction that starts late (after
the check-back gave up on it) can no longer record the payment, so a ROLLBACK answer is
never contradicted by a record appearing later. ABANDONED charges are money to refund.

Should reconciliation and a slow ``payment_pay`` both send a message for one APPROVED
charge, the second one's local transaction and checker find the charge recorded by the
other message and answer ROLLBACK, so the payment is delivered once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from orders.models import Order
from orders.payment_timeout import order_payment_timer_recall
from orders.selectors import order_get_for_update
from payments import conf
from payments.charges import (
    CHARGE_ABANDONED_BY_CHECK,
    CHARGE_ABANDONED_NOT_PAYABLE,
    charge_abandon,
    charge_record,
)
from payments.events import TAG, TOPIC, PaymentSucceeded
from payments.models import Charge, PaymentRecord
from payments.selectors import payment_success_get
from txbroker import LocalTransactionState, MessageView, OutgoingMessage, SendResult

logger = logging.getLogger("payments")


@dataclass(frozen=True)
class PaymentIntent:
    """The local transaction's argument: what to record, and for which charge."""

    charge_id: int
    event: PaymentSucceeded


def payment_message_send(*, charge: Charge) -> SendResult:
    """Send the payment message of an APPROVED charge; its local transaction records the
    payment. The one way a payment is recorded: ``payment_pay`` and reconciliation both
    send through here."""
    from payments.checkers import payment_producer  # it names this module's checker

    event = PaymentSucceeded(
        order_id=charge.order_id, user_id=charge.user_id, amount=charge.amount, pay_time=timezone.now()
    )
    message = OutgoingMessage(
        topic=TOPIC,
        tag=TAG,
        keys=(charge.order_id,),
        body=event.as_body(),
        properties={"charge_id": str(charge.pk)},
        # The order's message group: its refund message comes after it in every consumer group.
        message_group=charge.order_id,
    )
    sent = payment_producer.send_message_in_transaction(
        message, payment_record_local_transaction, PaymentIntent(charge_id=charge.pk, event=event)
    )
    if sent.local_transaction_state == LocalTransactionState.COMMIT:
        # Paid: the order's payment timer is not needed any more. Recalled after both
        # transactions, never inside the local one (which holds the order row lock, while
        # a running timer holds its delivery's and waits for the order's). Should this
        # process die first, the timer finds the order held by this payment and does nothing.
        order_payment_timer_recall(order_id=charge.order_id)
    return sent


def payment_charge_settle(*, order_id: str, charge_id: Optional[int], reason: str) -> bool:
    """True when the order has a SUCCESS record. Otherwise make sure the charge can never
    be recorded (APPROVED -> ABANDONED) and return False.

    Must run inside ``transaction.atomic()``: it takes the order row lock first, so it
    waits for a local transaction that holds it, and its answer cannot be contradicted by
    a local transaction that starts later (that one only records an APPROVED charge).
    """
    order_get_for_update(order_id=order_id)
    if PaymentRecord.objects.filter(order_id=order_id, status=PaymentRecord.Status.SUCCESS).exists():
        return True
    if charge_id is not None:
        charge_abandon(charge_id=charge_id, order_id=order_id, reason=reason)
    return False


def payment_record_local_transaction(message: MessageView, intent: PaymentIntent) -> LocalTransactionState:
    """The local transaction of the payment message: record the payment.

    COMMIT when the SUCCESS record is inserted (or already exists: the article's duplicate
    key, it already succeeded); ROLLBACK when the order is no longer payable or check-back
    already gave up on this charge; UNKNOWN on a database error (check-back settles it).

    A lost database session (a connection cut, a server restart, a lock or statement
    timeout) does not fail a payment whose process is alive: the recording is tried again
    on a new session for up to PAYMENTS_RECORD_RETRY_SECONDS (keep it well below
    TXBROKER_TRANSACTION_TIMEOUT, so that check-back never asks while it retries). Each
    try is the whole transaction under the order's row lock, so a try whose commit landed
    before the session died is found by the next one (its record, this message's).
    """
    deadline = time.monotonic() + conf.seconds("PAYMENTS_RECORD_RETRY_SECONDS")
    pause = 0.1
    while True:
        try:
            return _payment_record(message, intent)
        except (OperationalError, InterfaceError):
            if time.monotonic() + pause > deadline:
                logger.exception("recording the payment of order %s failed", intent.event.order_id)
                return LocalTransactionState.UNKNOWN
            logger.warning(
                "recording the payment of order %s lost its database session; trying again",
                intent.event.order_id,
                exc_info=True,
            )
            if not connection.in_atomic_block:  # a broken session: the next try opens a new one
                connection.close_if_unusable_or_obsolete()
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def _payment_record(message: MessageView, intent: PaymentIntent) -> LocalTransactionState:
    """One try of :func:`payment_record_local_transaction`; raises OperationalError or
    InterfaceError when the session was lost."""
    event = intent.event
    try:
        with transaction.atomic():
            order = order_get_for_update(order_id=event.order_id)
            existing = PaymentRecord.objects.filter(order_id=event.order_id).first()
            if existing is not None:
                return (
                    LocalTransactionState.COMMIT
                    if existing.status == PaymentRecord.Status.SUCCESS
                    and not _recorded_by_another_message(
                        record=existing, msg_id=message.msg_id, charge_id=intent.charge_id
                    )
                    else LocalTransactionState.ROLLBACK
                )
            if order is None or order.status != Order.Status.CREATED:
                charge_abandon(
                    charge_id=intent.charge_id, order_id=event.order_id, reason=CHARGE_ABANDONED_NOT_PAYABLE
                )
                return LocalTransactionState.ROLLBACK
            if not charge_record(charge_id=intent.charge_id):
                # Check-back found no record first and rolled the message back: that stands.
                return LocalTransactionState.ROLLBACK
            payment_record_insert(event=event, message_id=message.msg_id)
        return LocalTransactionState.COMMIT
    except IntegrityError:
        # Another insert for this order won the unique key: its status decides.
        if payment_success_get(order_id=event.order_id) is not None:
            return LocalTransactionState.COMMIT
        logger.exception("recording the payment of order %s failed", event.order_id)
        return LocalTransactionState.UNKNOWN
    except (OperationalError, InterfaceError):
        raise
    except DatabaseError:
        logger.exception("recording the payment of order %s failed", event.order_id)
        return LocalTransactionState.UNKNOWN


def _recorded_by_another_message(*, record: PaymentRecord, msg_id: str, charge_id: Optional[int]) -> bool:
    """True for a second message of one charge (reconciliation and a slow ``payment_pay``
    both sent one) once the other recorded the payment: this one must roll back, or the
    payment would be delivered twice. A record from another charge keeps the article's
    answer (duplicate key: it already succeeded)."""
    return (
        charge_id is not None
        and bool(record.message_id)
        and record.message_id != msg_id
        and Charge.objects.filter(pk=charge_id, status=Charge.Status.RECORDED).exists()
    )


def payment_record_insert(*, event: PaymentSucceeded, message_id: str) -> PaymentRecord:
    return PaymentRecord.objects.create(
        order_id=event.order_id,
        user_id=event.user_id,
        amount=event.amount,
        pay_time=event.pay_time,
        status=PaymentRecord.Status.SUCCESS,
        message_id=message_id,
    )


def payment_check_transaction(message: MessageView) -> LocalTransactionState:
    """The checker of ``payment_producer_group`` (the article's checkLocalTransaction).

    COMMIT when a SUCCESS record exists for the message's key, ROLLBACK when none exists
    (after fencing the charge, see ``payment_charge_settle``) or when it was recorded by
    another message of the same charge, UNKNOWN when the database cannot tell.
    """
    order_id = message.key
    if not order_id:
        return LocalTransactionState.ROLLBACK
    charge_property = message.properties.get("charge_id")
    charge_id = int(charge_property) if charge_property and charge_property.isdigit() else None
    try:
        with transaction.atomic():
            paid = payment_charge_settle(
                order_id=order_id, charge_id=charge_id, reason=CHARGE_ABANDONED_BY_CHECK
            )
            if paid and _recorded_by_another_message(
                record=payment_success_get(order_id=order_id), msg_id=message.msg_id, charge_id=charge_id
            ):
                paid = False
    except DatabaseError:
        logger.warning(
            "check-back of the payment of order %s could not read the database", order_id, exc_info=True
        )
        return LocalTransactionState.UNKNOWN
    return LocalTransactionState.COMMIT if paid else LocalTransactionState.ROLLBACK
