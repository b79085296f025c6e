"""Refunds: the money of an approved charge goes back to the payer.

The walk of one ``refund_order`` (the owner's ``POST /api/payments/{order_id}/refund/``):

1. validate: the order exists and is the caller's (404), its payment is recorded (409) and
   the payment message is COMMITTED (409 while its producer is still finishing it: the
   refund message must take a later place in the order's message group, see below);
2. claim the refund: a PENDING ``Refund`` of the order's RECORDED charge (one refund per
   charge, a unique key). A repeat finds it REFUNDED and answers it (200); one still
   PENDING or APPROVED answers 409 (being refunded);
3. refund through the gateway (outside any transaction; idempotent by the refund's key).
   An error deletes the PENDING claim: nothing changed (502), and a retry asks the gateway
   with the same key (a refund that happened after all is answered, not repeated);
4. PENDING -> APPROVED, then ``send_message_in_transaction`` (payment_success_topic, tag
   refund, key and ``message_group`` = order id). Its local transaction, under the order
   row lock, moves the refund APPROVED -> REFUNDED with the message's id. The checker
   (``refund_check_transaction``) does the same move: the gateway refunded, so a refund
   left APPROVED is recorded by whichever comes first, and answers COMMIT.

Why every consumer group sees pay before refund: both messages carry the order id as their
message group, and the refund message is sent only once the payment message is COMMITTED
(its sequence in the group taken), so the refund's sequence is the later one.

An ABANDONED charge (approved, never recorded: nobody consumed a payment for it) is
refunded by an operator (``refund_abandoned_charge``, the admin action) through the same
claim and gateway call; it is recorded REFUNDED without a message, with the operator.

Every move of a ``Refund`` is one conditional UPDATE (or the DELETE of a PENDING claim).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Optional

from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from orders.selectors import order_get, order_get_for_update
from payments.clock import Now, db_ago
from payments.events import TAG_REFUND, TOPIC, PaymentRefunded
from payments.exceptions import (
    PAYMENT_GATEWAY_FAILED,
    PAYMENT_INSIDE_ATOMIC,
    PAYMENT_ORDER_NOT_FOUND,
    PAYMENT_UNAVAILABLE,
    REFUND_IN_PROGRESS,
    REFUND_NOT_ABANDONED,
    REFUND_NOT_PAID,
    PaymentGatewayFailed,
    PaymentOrderNotFound,
    PaymentUnavailable,
    RefundInProgress,
    RefundNotRefundable,
)
from payments.gateways import GatewayError, get_gateway
from payments.models import Charge, Refund
from payments.selectors import payment_success_get
from txbroker import LocalTransactionState, MessageView, OutgoingMessage, messages_with_key

logger = logging.getLogger("payments")

REFUND_PRODUCER_GROUP = "refund_producer_group"
PAYMENT_PRODUCER_GROUP = "payment_producer_group"


@dataclass(frozen=True)
class RefundOutcome:
    order_id: str
    amount: Decimal
    status: str  # REFUNDED, or APPROVED while check-back records it
    message_id: str
    # False when the refund had been made before (a repeated request): nothing refunded now.
    created: bool

    @classmethod
    def of(cls, refund: Refund, *, created: bool) -> RefundOutcome:
        return cls(
            order_id=refund.order_id,
            amount=refund.amount,
            status=refund.status,
            message_id=refund.message_id,
            created=created,
        )


def refund_order(*, user: AbstractBaseUser, order_id: str, reason: str = "") -> RefundOutcome:
    """Refund the recorded payment of the user's order (see the module doc). Must be called
    outside any transaction."""
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError(PAYMENT_INSIDE_ATOMIC)
    order = order_get(user=user, order_id=order_id)
    if order is None:
        raise PaymentOrderNotFound(PAYMENT_ORDER_NOT_FOUND)
    record = payment_success_get(order_id=order_id)
    if record is None:
        raise RefundNotRefundable(REFUND_NOT_PAID)
    charge = Charge.objects.filter(order_id=order_id, status=Charge.Status.RECORDED).first()
    if charge is None:
        raise RefundNotRefundable(REFUND_NOT_PAID)
    existing = Refund.objects.filter(charge=charge).first()
    if existing is not None:
        return _refund_existing(existing)
    if not _payment_message_committed(order_id=order_id, message_id=record.message_id):
        raise RefundInProgress(REFUND_IN_PROGRESS)
    refund, created = _refund_claim(charge=charge, actor=user, reason=reason)
    if not created:
        return _refund_existing(refund)
    _refund_at_gateway(refund=refund, charge=charge)
    return _refund_message_send(refund=refund)


def refund_abandoned_charge(*, charge: Charge, operator: AbstractBaseUser, reason: str = "") -> RefundOutcome:
    """Give the money of an ABANDONED charge (approved, never recorded) back to the payer,
    recorded with the operator. Nobody consumed a payment for it: no message. A charge
    refunded before answers its refund; 409 for a charge that is not ABANDONED."""
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError(PAYMENT_INSIDE_ATOMIC)
    charge.refresh_from_db()
    if charge.status != Charge.Status.ABANDONED:
        raise RefundNotRefundable(REFUND_NOT_ABANDONED.format(status=charge.status))
    refund, created = _refund_claim(charge=charge, actor=operator, reason=reason)
    if not created:
        return _refund_existing(refund)
    _refund_at_gateway(refund=refund, charge=charge)
    refund_abandoned_record(refund=refund)
    refund.refresh_from_db()
    return RefundOutcome.of(refund, created=True)


def refund_abandoned_record(*, refund: Refund) -> bool:
    """APPROVED -> REFUNDED for the refund of an ABANDONED charge (no message: nobody
    consumed a payment for it). True when it moved now."""
    return bool(
        Refund.objects.filter(pk=refund.pk, status=Refund.Status.APPROVED).update(
            status=Refund.Status.REFUNDED, updated_at=Now()
        )
    )


def refunds_lease(*, older_than: float, batch_size: int) -> list[Refund]:
    """Lease up to ``batch_size`` refunds left PENDING or APPROVED for more than
    ``older_than`` seconds (database time) by a process that died between its steps: locked
    rows are skipped, and the lease (``updated_at`` set to now in the claiming transaction)
    makes a leased refund no candidate for anyone for another ``older_than`` seconds."""
    with transaction.atomic():
        ids = list(
            Refund.objects.filter(
                status__in=[Refund.Status.PENDING, Refund.Status.APPROVED], updated_at__lt=db_ago(older_than)
            )
            .select_for_update(skip_locked=True)
            .order_by("updated_at", "pk")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return []
        Refund.objects.filter(pk__in=ids).update(updated_at=Now())
        return list(Refund.objects.filter(pk__in=ids).select_related("charge").order_by("pk"))


def refund_complete(*, refund: Refund) -> str:
    """Finish a leased refund its process left behind, as that process would have: a
    PENDING one is refunded at the gateway (the same idempotency key: a refund the gateway
    made is answered, not repeated); an APPROVED one is recorded, through a new refund
    message unless one is still HALF (check-back records that one). Returns what was done."""
    charge = refund.charge
    if refund.status == Refund.Status.PENDING:
        try:
            _refund_at_gateway(refund=refund, charge=charge)
        except PaymentGatewayFailed:
            return "gateway_failed"  # the claim is gone: nothing changed, the owner may retry
        refund.refresh_from_db()
    if refund.status != Refund.Status.APPROVED:
        return "raced"
    if charge.status == Charge.Status.ABANDONED:
        return "recorded" if refund_abandoned_record(refund=refund) else "raced"
    pending = any(
        m.state == "HALF" and m.properties.get("refund_id") == str(refund.pk)
        for m in messages_with_key(refund.order_id, producer_group=REFUND_PRODUCER_GROUP)
    )
    if pending:
        return "left_to_check_back"
    try:
        outcome = _refund_message_send(refund=refund)
    except PaymentUnavailable:
        return "send_failed"
    return "recorded" if outcome.status == Refund.Status.REFUNDED else "left_to_check_back"


def _refund_existing(refund: Refund) -> RefundOutcome:
    if refund.status == Refund.Status.REFUNDED:
        return RefundOutcome.of(refund, created=False)
    raise RefundInProgress(REFUND_IN_PROGRESS)


def _payment_message_committed(*, order_id: str, message_id: str) -> bool:
    """True once the message that recorded the payment is COMMITTED (its place in the
    order's message group taken): a refund message sent now comes after it."""
    return any(
        m.msg_id == message_id and m.state == "COMMITTED"
        for m in messages_with_key(order_id, producer_group=PAYMENT_PRODUCER_GROUP)
    )


def _refund_claim(*, charge: Charge, actor: AbstractBaseUser, reason: str) -> tuple[Refund, bool]:
    """(new) -> PENDING: the charge's one refund (unique charge). (refund, True) when
    claimed now, (the existing one, False) when the charge has one."""
    try:
        with transaction.atomic():
            refund = Refund.objects.create(
                charge=charge,
                order_id=charge.order_id,
                user_id=charge.user_id,
                amount=charge.amount,
                reason=reason[:255],
                actor=actor,
            )
        return refund, True
    except IntegrityError:
        return Refund.objects.get(charge=charge), False


def _refund_at_gateway(*, refund: Refund, charge: Charge) -> None:
    """PENDING -> APPROVED when the gateway refunded; on any error the PENDING claim is
    deleted (nothing changed) and 502 is raised."""
    try:
        result = get_gateway().refund(
            charge_reference=charge.reference, amount=refund.amount, idempotency_key=refund.idempotency_key
        )
    except Exception as exc:
        if not isinstance(exc, GatewayError):
            logger.exception("gateway backend raised refunding order %s (a gateway error)", refund.order_id)
        Refund.objects.filter(pk=refund.pk, status=Refund.Status.PENDING).delete()
        raise PaymentGatewayFailed(PAYMENT_GATEWAY_FAILED.format(reason=exc)) from exc
    Refund.objects.filter(pk=refund.pk, status=Refund.Status.PENDING).update(
        status=Refund.Status.APPROVED, reference=result.reference, updated_at=Now()
    )


def _refund_message_send(*, refund: Refund) -> RefundOutcome:
    from payments.checkers import refund_producer  # it names this module's checker

    event = PaymentRefunded(
        order_id=refund.order_id, user_id=refund.user_id, amount=refund.amount, refund_time=timezone.now()
    )
    message = OutgoingMessage(
        topic=TOPIC,
        tag=TAG_REFUND,
        keys=(refund.order_id,),
        body=event.as_body(),
        properties={"refund_id": str(refund.pk)},
        message_group=refund.order_id,
    )
    try:
        sent = refund_producer.send_message_in_transaction(
            message, refund_record_local_transaction, refund.pk
        )
    except Exception as exc:
        # The refund stays APPROVED (the gateway refunded); a stored half message is
        # settled by check-back, which records it.
        logger.exception("sending the refund message of order %s failed", refund.order_id)
        raise PaymentUnavailable(PAYMENT_UNAVAILABLE) from exc
    refund.refresh_from_db()
    if sent.local_transaction_state == LocalTransactionState.ROLLBACK:
        raise PaymentUnavailable(PAYMENT_UNAVAILABLE)
    if refund.status != Refund.Status.REFUNDED:  # UNKNOWN: check-back records it
        return RefundOutcome(
            order_id=refund.order_id,
            amount=refund.amount,
            status=refund.status,
            message_id=sent.msg_id,
            created=True,
        )
    return RefundOutcome.of(refund, created=True)


def _refund_record(*, refund_id: int, msg_id: str) -> LocalTransactionState:
    """APPROVED -> REFUNDED with the message's id, under the order row lock; COMMIT when it
    moved now or was recorded by this message before, ROLLBACK otherwise."""
    order_id = Refund.objects.filter(pk=refund_id).values_list("order_id", flat=True).first()
    if order_id is None:
        return LocalTransactionState.ROLLBACK
    with transaction.atomic():
        order_get_for_update(order_id=order_id)
        if Refund.objects.filter(pk=refund_id, status=Refund.Status.APPROVED).update(
            status=Refund.Status.REFUNDED, message_id=msg_id, updated_at=Now()
        ):
            return LocalTransactionState.COMMIT
        recorded = Refund.objects.filter(
            pk=refund_id, status=Refund.Status.REFUNDED, message_id=msg_id
        ).exists()
    return LocalTransactionState.COMMIT if recorded else LocalTransactionState.ROLLBACK


def refund_record_local_transaction(message: MessageView, refund_id: int) -> LocalTransactionState:
    """The local transaction of the refund message: record the refund."""
    try:
        return _refund_record(refund_id=refund_id, msg_id=message.msg_id)
    except DatabaseError:
        logger.exception("recording the refund %s failed", refund_id)
        return LocalTransactionState.UNKNOWN


def refund_check_transaction(message: MessageView) -> LocalTransactionState:
    """The checker of ``refund_producer_group``: the gateway refunded before the message was
    sent, so a refund still APPROVED is recorded now (COMMIT); one recorded by this message
    answers COMMIT, anything else ROLLBACK; UNKNOWN when the database cannot tell."""
    refund_id: Optional[str] = message.properties.get("refund_id")
    if not refund_id or not refund_id.isdigit():
        return LocalTransactionState.ROLLBACK
    try:
        return _refund_record(refund_id=int(refund_id), msg_id=message.msg_id)
    except DatabaseError:
        logger.warning("check-back of refund %s could not read the database", refund_id, exc_info=True)
        return LocalTransactionState.UNKNOWN
