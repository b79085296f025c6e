"""The payment, the article's flow made safe.

The walk of one ``payment_pay``:

1. validate: the order exists and is the caller's, the amount is the order's;
   an order already paid answers with its record (a repeat is idempotent);
2. claim the order: under the order row lock the order must be CREATED and have no active
   charge; a PENDING ``Charge`` is inserted (one active charge per order, a partial unique
   index). A concurrent duplicate waits (PAYMENTS_IN_PROGRESS_WAIT) for the holder: once
   the payment is recorded it answers 200 with the same body; if the holder was declined
   or failed, the claim is free again and the duplicate makes its own attempt; still
   claimed at the deadline, it answers 409 (in progress);
3. charge through the gateway (outside any transaction). Decline or error: the charge is
   closed (DECLINED / ERROR), nothing is sent, the order stays CREATED and payable. A call
   that timed out is closed ERROR too, with a reason saying the gateway may have charged:
   reconciliation keeps asking, and marks a late approval ABANDONED (to refund);
4. approved: ``send_message_in_transaction`` (payment_success_topic, tag pay, key = order
   id). Its local transaction, ``payment_record_local_transaction``, locks the order row,
   moves the charge APPROVED -> RECORDED and inserts the SUCCESS ``PaymentRecord``.

Why the gateway is charged once for concurrent duplicates: only the holder of the active
charge calls the gateway, and there is at most one active charge per order (checked
under the order row lock, guaranteed by the partial unique index).

Why the checker's answer is authoritative (``payment_check_transaction``): it takes the
order row lock before looking for the record, so it waits for a local transaction that is
inserting it and then sees it (COMMIT). When it finds no record it moves the message's
charge APPROVED -> ABANDONED under that lock before answering ROLLBACK, and the local
transaction records only an APPROVED charge: a local transaction that starts late (after
the check-back gave up on it) can no longer record the payment, so a ROLLBACK answer is
never contradicted by a record appearing later. ABANDONED charges are money to refund.

The article's gap, closed by reconciliation (``payments.reconciliation``): the gateway is
charged before the half message is stored. If the process dies between the two, the charge
stays PENDING or APPROVED and the order stays claimed (so it is never charged twice).
``charge_reconcile_stale``, a beat task, settles the charges left so longer than
PAYMENTS_CHARGE_RECONCILE_AFTER: it asks the gateway, completes an approved payment through
this module's message, local transaction and checker, or frees the order when nothing was
charged (only once the charge is older than PAYMENTS_GATEWAY_TIMEOUT: a younger call may
still be in flight).

Races with a live ``payment_pay`` (a charge older than the threshold whose process is only
slow): when reconciliation settled a PENDING charge first, ``payment_pay`` finds it no longer
PENDING when the gateway answers and sends nothing (an approval that reconciliation had
closed as not found becomes ABANDONED: to refund; reconciliation marks it too, should this
process die first). Should both still send a message for one APPROVED charge, the second
one's local transaction and checker find the charge recorded by the other message and
answer ROLLBACK, so the payment is delivered once.

Times of charges are the database's (``payments.clock``): hosts' clocks may disagree.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from importlib import import_module
from typing import Any, Optional

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from orders.models import Order
from orders.selectors import order_get, order_get_for_update
from payments.clock import Now
from payments.events import TAG, TOPIC, PaymentSucceeded
from payments.gateways import GatewayError, GatewayTimeout, get_gateway
from payments.models import CHARGE_GATEWAY_TIMED_OUT, Charge, PaymentRecord
from payments.selectors import payment_success_get
from txbroker import LocalTransactionState, MessageView, OutgoingMessage, SendResult

logger = logging.getLogger("payments")

PAYMENT_ORDER_NOT_FOUND = "order not found"
PAYMENT_AMOUNT_MISMATCH = "does not match the order amount {expected}"
PAYMENT_NOT_PAYABLE = "the order is {status}: only a CREATED order can be paid"
PAYMENT_IN_PROGRESS = "a payment for this order is in progress; retry later"
PAYMENT_GATEWAY_FAILED = "the payment gateway failed: {reason}"
PAYMENT_NOT_RECORDED = (
    "the payment could not be recorded (the order changed, or its check-back gave up on it); "
    "the charge is marked for refund"
)
PAYMENT_UNAVAILABLE = "the payment could not be completed; the charge is marked for refund"
PAYMENT_INSIDE_ATOMIC = (
    "payment_pay() was called inside transaction.atomic(): call it outside any transaction "
    "(its claim, its message and its local transaction each commit on their own)"
)
CHARGE_ABANDONED_BY_CHECK = "check-back found no payment record: message rolled back"
CHARGE_ABANDONED_NOT_PAYABLE = "the order was no longer payable when the payment was recorded"
CHARGE_ABANDONED_SEND_FAILED = "sending the payment message failed"
CHARGE_ABANDONED_APPROVED_LATE = (
    "the gateway approved after reconciliation had closed the charge (the call outlasted "
    "PAYMENTS_GATEWAY_TIMEOUT)"
)

# How often a duplicate request looks again while another request holds the order's charge.
IN_PROGRESS_POLL_SECONDS = 0.05


class PaymentError(Exception):
    """Base class of the payments app's errors."""


class PaymentOrderNotFound(PaymentError):
    pass


class PaymentAmountMismatch(PaymentError):
    pass


class PaymentNotPayable(PaymentError):
    pass


class PaymentInProgress(PaymentNotPayable):
    pass


class PaymentNotRecorded(PaymentNotPayable):
    pass


class PaymentDeclined(PaymentError):
    pass


class PaymentGatewayFailed(PaymentError):
    pass


class PaymentUnavailable(PaymentError):
    pass


@dataclass(frozen=True)
class PaymentOutcome:
    order_id: str
    amount: Decimal
    status: str  # SUCCESS, or PENDING while check-back settles it
    message_id: str
    transaction_state: str  # COMMIT, or UNKNOWN
    # False when the order had already been paid (a repeated request): nothing was charged.
    created: bool

    @classmethod
    def of_record(cls, record: PaymentRecord, *, created: bool) -> PaymentOutcome:
        return cls(
            order_id=record.order_id,
            amount=record.amount,
            status=record.status,
            message_id=record.message_id,
            transaction_state=LocalTransactionState.COMMIT.value,
            created=created,
        )


@dataclass(frozen=True)
class PaymentIntent:
    """The local transaction's argument: what to record, and for which charge."""

    charge_id: int
    event: PaymentSucceeded


def payment_pay(
    *, user: AbstractBaseUser, order_id: str, amount: Decimal, payment_method: Optional[str] = None
) -> PaymentOutcome:
    """Pay the user's order (see the module doc). Must be called outside any transaction."""
    if transaction.get_connection().in_atomic_block:
        # Fail before charging: the half message must commit before the local transaction.
        raise RuntimeError(PAYMENT_INSIDE_ATOMIC)
    gateway = get_gateway()
    method = payment_method or gateway.default_payment_method
    deadline = time.monotonic() + float(getattr(settings, "PAYMENTS_IN_PROGRESS_WAIT", 10.0))
    while True:
        order = order_get(user=user, order_id=order_id)
        if order is None:
            raise PaymentOrderNotFound(PAYMENT_ORDER_NOT_FOUND)
        if amount != order.amount:
            raise PaymentAmountMismatch(PAYMENT_AMOUNT_MISMATCH.format(expected=f"{order.amount:.2f}"))
        record = payment_success_get(order_id=order_id)
        if record is not None:
            return PaymentOutcome.of_record(record, created=False)
        try:
            charge = _charge_claim(order=order, payment_method=method)
            break
        except PaymentInProgress:
            # Another request holds the order's charge: wait for its outcome.
            if time.monotonic() >= deadline:
                raise
            time.sleep(IN_PROGRESS_POLL_SECONDS)

    try:
        result = gateway.charge(
            order_id=order_id,
            amount=order.amount,
            payment_method=method,
            idempotency_key=charge.idempotency_key,
        )
    except Exception as exc:
        if not isinstance(exc, GatewayError):
            logger.exception("gateway backend raised for order %s (treated as a gateway error)", order_id)
        # A timeout closes the charge without knowing whether the gateway charged: its
        # reason makes reconciliation keep asking, and mark a late approval for refund.
        reason = CHARGE_GATEWAY_TIMED_OUT if isinstance(exc, GatewayTimeout) else str(exc)
        _charge_close(charge_id=charge.pk, status=Charge.Status.ERROR, reason=reason)
        raise PaymentGatewayFailed(PAYMENT_GATEWAY_FAILED.format(reason=exc)) from exc
    if not result.approved:
        _charge_close(charge_id=charge.pk, status=Charge.Status.DECLINED, reason=result.reason)
        raise PaymentDeclined(result.reason or "declined")
    if not _charge_close(charge_id=charge.pk, status=Charge.Status.APPROVED, reference=result.reference):
        # The gateway call outlasted PAYMENTS_CHARGE_RECONCILE_AFTER and reconciliation
        # settled the charge meanwhile: the message is its to send, or it closed the charge.
        return _payment_after_reconciliation(order_id=order_id, charge_id=charge.pk)

    try:
        sent = _payment_message_send(charge=charge)
    except Exception as exc:
        # The half message may or may not be stored. Settle the charge the way check-back
        # would, so that the order does not stay claimed when no half message exists.
        logger.exception("sending the payment message of order %s failed", order_id)
        with transaction.atomic():
            paid = payment_charge_settle(
                order_id=order_id, charge_id=charge.pk, reason=CHARGE_ABANDONED_SEND_FAILED
            )
        if not paid:
            raise PaymentUnavailable(PAYMENT_UNAVAILABLE) from exc
        record = payment_success_get(order_id=order_id)
        return PaymentOutcome(
            order_id=order_id,
            amount=order.amount,
            status=record.status,
            message_id=record.message_id,
            transaction_state=LocalTransactionState.UNKNOWN.value,
            created=True,
        )

    state = sent.local_transaction_state
    if state == LocalTransactionState.COMMIT:
        record = payment_success_get(order_id=order_id)
        return PaymentOutcome.of_record(record, created=record.message_id == sent.msg_id)
    if state == LocalTransactionState.ROLLBACK:
        record = payment_success_get(order_id=order_id)
        if record is not None:
            # This charge was recorded by reconciliation's message: the payment succeeded.
            return PaymentOutcome.of_record(record, created=True)
        raise PaymentNotRecorded(PAYMENT_NOT_RECORDED)
    return PaymentOutcome(
        order_id=order_id,
        amount=order.amount,
        status="PENDING",
        message_id=sent.msg_id,
        transaction_state=LocalTransactionState.UNKNOWN.value,
        created=True,
    )


def _charge_claim(*, order: Order, payment_method: str) -> Charge:
    """Insert the order's one active charge, under the order row lock."""
    with transaction.atomic():
        locked = order_get_for_update(order_id=order.order_id)
        if locked is None:
            raise PaymentOrderNotFound(PAYMENT_ORDER_NOT_FOUND)
        if Charge.objects.active().filter(order_id=order.order_id).exists():
            raise PaymentInProgress(PAYMENT_IN_PROGRESS)
        if locked.status != Order.Status.CREATED:
            raise PaymentNotPayable(PAYMENT_NOT_PAYABLE.format(status=locked.status))
        try:
            with transaction.atomic():
                # created_at / updated_at: the database's clock (db_default), read back.
                return Charge.objects.create(
                    order_id=locked.order_id,
                    user_id=locked.user_id,
                    amount=locked.amount,
                    payment_method=payment_method,
                    status=Charge.Status.PENDING,
                )
        except IntegrityError:
            # The partial unique index: unreachable under the row lock, but it is the rule.
            raise PaymentInProgress(PAYMENT_IN_PROGRESS) from None


def _charge_close(*, charge_id: int, status: str, reference: str = "", reason: str = "") -> bool:
    """PENDING -> APPROVED | DECLINED | ERROR (a conditional UPDATE). False when the charge
    was no longer PENDING: reconciliation settled it while the gateway was answering."""
    moved = Charge.objects.filter(pk=charge_id, status=Charge.Status.PENDING).update(
        status=status, reference=reference[:128], reason=reason[:255], updated_at=Now()
    )
    if not moved:
        logger.warning(
            "charge %s was no longer PENDING when the gateway answered %s (settled by reconciliation)",
            charge_id,
            status,
        )
    return bool(moved)


def _payment_after_reconciliation(*, order_id: str, charge_id: int) -> PaymentOutcome:
    """The gateway approved a charge that reconciliation settled first.

    Closed as not found (the call outlasted PAYMENTS_GATEWAY_TIMEOUT, so reconciliation took
    it for never made): the money moved with no payment to show for it, so the charge
    becomes ABANDONED (to refund; reconciliation's recheck does the same if this process
    dies first). Approved by reconciliation: it sends the message; answer with the record
    once there, else 409.
    """
    refund = Charge.objects.filter(
        pk=charge_id, status__in=[Charge.Status.DECLINED, Charge.Status.ERROR]
    ).update(status=Charge.Status.ABANDONED, reason=CHARGE_ABANDONED_APPROVED_LATE, updated_at=Now())
    if refund:
        logger.error(
            "charge %s of order %s approved after reconciliation closed it: to refund", charge_id, order_id
        )
        raise PaymentUnavailable(PAYMENT_UNAVAILABLE)
    record = payment_success_get(order_id=order_id)
    if record is None:
        raise PaymentInProgress(PAYMENT_IN_PROGRESS)
    return PaymentOutcome.of_record(record, created=True)


def _payment_message_send(*, charge: Charge) -> SendResult:
    """Send the payment message of an APPROVED charge; its local transaction records the
    payment. The one way a payment is recorded: ``payment_pay`` and reconciliation both
    send through here."""
    from payments.checkers import payment_producer

    event = PaymentSucceeded(
        order_id=charge.order_id, user_id=charge.user_id, amount=charge.amount, pay_time=timezone.now()
    )
    message = OutgoingMessage(
        topic=TOPIC,
        tag=TAG,
        keys=(charge.order_id,),
        body=event.as_body(),
        properties={"charge_id": str(charge.pk)},
    )
    return payment_producer.send_message_in_transaction(
        message, payment_record_local_transaction, PaymentIntent(charge_id=charge.pk, event=event)
    )


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
        Charge.objects.filter(pk=charge_id, status=Charge.Status.APPROVED).update(
            status=Charge.Status.ABANDONED, reason=reason[:255], updated_at=Now()
        )
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
    deadline = time.monotonic() + float(getattr(settings, "PAYMENTS_RECORD_RETRY_SECONDS", 3.0))
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
                Charge.objects.filter(pk=intent.charge_id, status=Charge.Status.APPROVED).update(
                    status=Charge.Status.ABANDONED,
                    reason=CHARGE_ABANDONED_NOT_PAYABLE,
                    updated_at=Now(),
                )
                return LocalTransactionState.ROLLBACK
            recorded = Charge.objects.filter(pk=intent.charge_id, status=Charge.Status.APPROVED).update(
                status=Charge.Status.RECORDED, updated_at=Now()
            )
            if not recorded:
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


# Reconciliation lives in ``payments.reconciliation``; its names stay importable from here.
_MOVED_TO_RECONCILIATION = frozenset(
    {
        "CHARGE_RECONCILED",
        "CHARGE_RECONCILED_APPROVED",
        "CHARGE_RECONCILED_APPROVED_LATE",
        "CHARGE_RECONCILED_DECLINED",
        "CHARGE_RECONCILED_NOT_FOUND",
        "CHARGE_RECONCILED_ROLLED_BACK",
        "CHARGE_RECONCILED_SENT",
        "CHARGE_RECONCILE_INSIDE_ATOMIC",
        "CHARGE_RECONCILE_NEGATIVE_AGE",
        "ChargeReconcileReport",
        "ReconcileOutcome",
        "charge_reconcile_after",
        "charge_reconcile_stale",
    }
)


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): reconciliation imports this module, so it cannot be imported at the top.
    if name in _MOVED_TO_RECONCILIATION:
        return getattr(import_module("payments.reconciliation"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
