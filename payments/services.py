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

How a payment is recorded, and why the checker's answer is authoritative:
``payments.recording``. Every move of a charge: ``payments.charges``.

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
process die first). Should both still send a message for one APPROVED charge, ``payments.recording`` delivers
the payment once.

Times of charges are the database's (``payments.clock``): hosts' clocks may disagree.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Optional

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from orders.selectors import order_get
from payments import conf
from payments.charges import (
    CHARGE_ABANDONED_SEND_FAILED,
    charge_abandon_late,
    charge_claim,
    charge_close,
)
from payments.exceptions import (
    PAYMENT_AMOUNT_MISMATCH,
    PAYMENT_GATEWAY_FAILED,
    PAYMENT_IN_PROGRESS,
    PAYMENT_INSIDE_ATOMIC,
    PAYMENT_NOT_RECORDED,
    PAYMENT_ORDER_NOT_FOUND,
    PAYMENT_UNAVAILABLE,
    PaymentAmountMismatch,
    PaymentDeclined,
    PaymentGatewayFailed,
    PaymentInProgress,
    PaymentNotRecorded,
    PaymentOrderNotFound,
    PaymentUnavailable,
)
from payments.gateways import GatewayError, GatewayTimeout, get_gateway
from payments.models import CHARGE_GATEWAY_TIMED_OUT, Charge, PaymentRecord
from payments.recording import payment_charge_settle, payment_message_send
from payments.selectors import payment_success_get
from txbroker import LocalTransactionState

logger = logging.getLogger("payments")

# How often a duplicate request looks again while another request holds the order's charge.
IN_PROGRESS_POLL_SECONDS = 0.05


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


def payment_pay(
    *, user: AbstractBaseUser, order_id: str, amount: Decimal, payment_method: Optional[str] = None
) -> PaymentOutcome:
    """Pay the user's order (see the module doc). Must be called outside any transaction."""
    if transaction.get_connection().in_atomic_block:
        # Fail before charging: the half message must commit before the local transaction.
        raise RuntimeError(PAYMENT_INSIDE_ATOMIC)
    gateway = get_gateway()
    method = payment_method or gateway.default_payment_method
    deadline = time.monotonic() + conf.seconds("PAYMENTS_IN_PROGRESS_WAIT")
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
            charge = charge_claim(order=order, payment_method=method)
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
        charge_close(charge=charge, status=Charge.Status.ERROR, reason=reason)
        raise PaymentGatewayFailed(PAYMENT_GATEWAY_FAILED.format(reason=exc)) from exc
    if not result.approved:
        charge_close(charge=charge, status=Charge.Status.DECLINED, reason=result.reason)
        raise PaymentDeclined(result.reason or "declined")
    if not charge_close(charge=charge, status=Charge.Status.APPROVED, reference=result.reference):
        # The gateway call outlasted PAYMENTS_CHARGE_RECONCILE_AFTER and reconciliation
        # settled the charge meanwhile: the message is its to send, or it closed the charge.
        return _payment_after_reconciliation(order_id=order_id, charge_id=charge.pk)

    try:
        sent = payment_message_send(charge=charge)
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


def _payment_after_reconciliation(*, order_id: str, charge_id: int) -> PaymentOutcome:
    """The gateway approved a charge that reconciliation settled first.

    Closed as not found (the call outlasted PAYMENTS_GATEWAY_TIMEOUT, so reconciliation took
    it for never made): the money moved with no payment to show for it, so the charge
    becomes ABANDONED (to refund; reconciliation's recheck does the same if this process
    dies first). Approved by reconciliation: it sends the message; answer with the record
    once there, else 409.
    """
    if charge_abandon_late(charge_id=charge_id, order_id=order_id):
        logger.error(
            "charge %s of order %s approved after reconciliation closed it: to refund", charge_id, order_id
        )
        raise PaymentUnavailable(PAYMENT_UNAVAILABLE)
    record = payment_success_get(order_id=order_id)
    if record is None:
        raise PaymentInProgress(PAYMENT_IN_PROGRESS)
    return PaymentOutcome.of_record(record, created=True)
