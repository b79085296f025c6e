"""The ``Charge`` state machine. Every move of a charge is listed here and is one
conditional UPDATE: its WHERE clause names the status it leaves (and, for reconciliation,
the lease it holds), so a move that finds the charge elsewhere changes nothing and says so
(as ``txbroker.transitions`` does for messages).

===========================  =========================  ==========================================
move                         function                   by
===========================  =========================  ==========================================
(new) -> PENDING             ``charge_claim``           ``payment_pay``: an INSERT under the order
                                                        row lock; the order is held for it
PENDING -> APPROVED          ``charge_close``           ``payment_pay``: the gateway approved
PENDING -> DECLINED | ERROR  ``charge_close``           ``payment_pay``: declined, or the call
                                                        failed; the order's hold is released
PENDING -> APPROVED |        ``charge_reconcile_move``  reconciliation (leased); DECLINED and
DECLINED | ERROR                                        ERROR release the order's hold
APPROVED -> RECORDED         ``charge_record``          the local transaction (order row locked)
APPROVED -> ABANDONED        ``charge_abandon``         check-back's fence, a local transaction
                                                        finding the order not payable, a rolled
                                                        back message; releases the order's hold
DECLINED | ERROR ->          ``charge_abandon_late``    ``payment_pay``: the gateway approved after
ABANDONED                                               reconciliation had closed the charge
ERROR (no answer) ->         ``charge_recheck_abandon`` reconciliation's recheck (leased): the
ABANDONED                                               gateway approved after all
===========================  =========================  ==========================================

Leases (reconciliation's, no status change): ``charges_lease`` and ``charge_lease_renew``.
PENDING, APPROVED and RECORDED are active (at most one per order); a move out of them that
records nothing releases the order (``orders.services.order_release_payment_hold``), under
the order row lock taken first, so the lock order is always order row, then charge row.
ABANDONED charges were approved by the gateway and never recorded: money to refund.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Optional

from django.db import IntegrityError, router, transaction
from django.db.models import Q, QuerySet

from orders.models import Order
from orders.selectors import order_get_for_update
from orders.services import order_hold_for_payment, order_release_payment_hold
from payments.clock import Now, db_now
from payments.exceptions import (
    PAYMENT_IN_PROGRESS,
    PAYMENT_NOT_PAYABLE,
    PAYMENT_ORDER_NOT_FOUND,
    PaymentInProgress,
    PaymentNotPayable,
    PaymentOrderNotFound,
)
from payments.models import Charge

logger = logging.getLogger("payments")

CHARGE_ABANDONED_BY_CHECK = "check-back found no payment record: message rolled back"
CHARGE_ABANDONED_NOT_PAYABLE = "the order was no longer payable when the payment was recorded"
CHARGE_ABANDONED_SEND_FAILED = "sending the payment message failed"
CHARGE_ABANDONED_APPROVED_LATE = (
    "the gateway approved after reconciliation had closed the charge (the call outlasted "
    "PAYMENTS_GATEWAY_TIMEOUT)"
)
# The moves out of the active statuses that record nothing (the only ones that release).
CLOSED_UNPAID = (Charge.Status.DECLINED, Charge.Status.ERROR)


def charge_claim(*, order: Order, payment_method: str) -> Charge:
    """Insert the order's one active charge, and hold the order, under the order row lock."""
    with transaction.atomic():
        locked = order_get_for_update(order_id=order.order_id)
        if locked is None:
            raise PaymentOrderNotFound(PAYMENT_ORDER_NOT_FOUND)
        if Charge.objects.active().filter(order_id=order.order_id).exists():
            raise PaymentInProgress(PAYMENT_IN_PROGRESS)
        if locked.status != Order.Status.CREATED:
            raise PaymentNotPayable(PAYMENT_NOT_PAYABLE.format(status=locked.status))
        order_hold_for_payment(order_id=locked.order_id)
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


def _move(charges: QuerySet[Charge], *, order_id: str, status: str, release: bool, **changes: Any) -> bool:
    """The one UPDATE every move is: ``charges`` (the charge, filtered by what the move
    leaves) to ``status``. A move out of the active statuses (``release``) takes the order
    row lock first and releases the order's hold in the same transaction."""
    changes = {"status": status, "updated_at": Now(), **changes}
    if not release:
        return bool(charges.update(**changes))
    with transaction.atomic():
        order_get_for_update(order_id=order_id)
        moved = charges.update(**changes)
        if moved:
            order_release_payment_hold(order_id=order_id)
    return bool(moved)


def charge_close(*, charge: Charge, status: str, reference: str = "", reason: str = "") -> bool:
    """PENDING -> APPROVED | DECLINED | ERROR. False when the charge was no longer PENDING:
    reconciliation settled it while the gateway was answering."""
    moved = _move(
        Charge.objects.filter(pk=charge.pk, status=Charge.Status.PENDING),
        order_id=charge.order_id,
        status=status,
        release=status in CLOSED_UNPAID,
        reference=reference[:128],
        reason=reason[:255],
    )
    if not moved:
        logger.warning(
            "charge %s was no longer PENDING when the gateway answered %s (settled by reconciliation)",
            charge.pk,
            status,
        )
    return moved


def charge_abandon_late(*, charge_id: int, order_id: str) -> bool:
    """DECLINED | ERROR -> ABANDONED: the gateway approved a charge reconciliation had closed."""
    return _move(
        Charge.objects.filter(pk=charge_id, status__in=[Charge.Status.DECLINED, Charge.Status.ERROR]),
        order_id=order_id,
        status=Charge.Status.ABANDONED,
        release=False,  # closed already: the order may be held by a newer charge
        reason=CHARGE_ABANDONED_APPROVED_LATE,
    )


def charge_abandon(*, charge_id: int, order_id: str, reason: str) -> bool:
    """APPROVED -> ABANDONED: the charge can never be recorded. The caller holds the order
    row lock and has checked that the order has no payment record."""
    return _move(
        Charge.objects.filter(pk=charge_id, status=Charge.Status.APPROVED),
        order_id=order_id,
        status=Charge.Status.ABANDONED,
        release=True,
        reason=reason[:255],
    )


def charge_record(*, charge_id: int) -> bool:
    """APPROVED -> RECORDED, in the local transaction that inserts the payment record."""
    return bool(
        Charge.objects.filter(pk=charge_id, status=Charge.Status.APPROVED).update(
            status=Charge.Status.RECORDED, updated_at=Now()
        )
    )


def charges_lease(*, candidates: QuerySet[Charge], batch_size: int) -> list[Charge]:
    """Lease up to ``batch_size`` candidates to this reconciliation run: locked rows
    (another run's claim) are skipped, and once leased a charge is no longer a candidate for
    anyone.

    The lease is the database's time, read in the claiming transaction and written as that
    value, so the charges returned carry exactly what the moves will compare against (an
    equality a value re-computed by ``Now()`` on SQLite, with its millisecond text, would
    not always meet).
    """
    with transaction.atomic():
        ids = list(
            candidates.select_for_update(skip_locked=True)
            .order_by("updated_at", "pk")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return []
        lease = db_now(using=router.db_for_write(Charge))
        Charge.objects.filter(pk__in=ids).update(reconciled_at=lease)
        # Read back under the row locks: what this run leased, nobody else's.
        return list(Charge.objects.filter(pk__in=ids).order_by("updated_at", "pk"))


def charge_lease_renew(*, charge: Charge, reason: str) -> bool:
    """An APPROVED charge still leased to this run gets a new lease (just before its
    payment message is sent, so that only one run sends it)."""
    return bool(
        Charge.objects.filter(
            pk=charge.pk, status=Charge.Status.APPROVED, reconciled_at=charge.reconciled_at
        ).update(reconciled_at=Now(), reason=reason[:255], updated_at=Now())
    )


def charge_reconcile_move(
    charge: Charge, *, status: str, reason: str, reference: str = "", condition: Optional[Q] = None
) -> bool:
    """PENDING -> ``status``: only while the charge is PENDING, still leased to this run, and
    meets ``condition``."""
    changes: dict[str, Any] = {"reason": reason[:255]}
    if reference:
        changes["reference"] = reference[:128]
    moved = _move(
        Charge.objects.filter(
            condition or Q(), pk=charge.pk, status=Charge.Status.PENDING, reconciled_at=charge.reconciled_at
        ),
        order_id=charge.order_id,
        status=status,
        release=status in CLOSED_UNPAID,
        **changes,
    )
    if moved:
        logger.warning(
            "reconciliation: charge %s of order %s PENDING -> %s (%s)",
            charge.pk,
            charge.order_id,
            status,
            reason,
        )
        charge.status, charge.reason = status, reason
    return moved


def charge_recheck_abandon(
    *, charge: Charge, leased_at: Optional[datetime], reason: str, reference: str
) -> bool:
    """ERROR (closed without the gateway's answer, still leased) -> ABANDONED."""
    return _move(
        Charge.objects.filter(pk=charge.pk, reconciled_at=leased_at).closed_without_answer(),
        order_id=charge.order_id,
        status=Charge.Status.ABANDONED,
        release=False,  # closed already: the order may be held by a newer charge
        reason=reason,
        reference=reference[:128],
    )
