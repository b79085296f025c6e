"""Charge reconciliation: the article's gap, closed (see ``payments.services``; every
move of a charge is in ``payments.charges``).

The gateway is charged before the payment's half message is stored, so a process that dies
in between leaves its charge PENDING or APPROVED and its order claimed. One run of
``charge_reconcile_stale`` (a beat task every PAYMENTS_CHARGE_RECONCILE_INTERVAL, or
``manage.py payments_reconcile``) does two things:

1. settle the charges left PENDING or APPROVED for longer than
   PAYMENTS_CHARGE_RECONCILE_AFTER. A PENDING one: ask the gateway (``lookup`` by idempotency
   key). Declined -> DECLINED; approved -> APPROVED, then as below; not found -> ERROR (the
   order is payable again), but only once the charge is older than PAYMENTS_GATEWAY_TIMEOUT:
   younger, its gateway call may still be in flight and approve later, so it stays PENDING
   and a later run asks again (IN_FLIGHT). An APPROVED one with no payment message: send it
   exactly as ``payment_pay`` does (same local transaction, same checker), so the order is
   PAID and points and the SMS follow. A charge whose message exists is check-back's
   business; one whose message was rolled back stays unrecorded (ABANDONED, to refund).
2. recheck the charges closed ERROR without the gateway's answer (not found by step 1, or a
   payment's timed-out call), each at most once per threshold, for
   PAYMENTS_CHARGE_RECHECK_WINDOW after they were closed. An approval found now is money no
   payment shows for: the charge becomes ABANDONED (to refund), whether or not the paying
   process survived to mark it itself.

Why leases: charges are claimed in batches (``SELECT ... FOR UPDATE SKIP LOCKED``) and their
``reconciled_at`` set, in that transaction, to the database's time; every later move is one
conditional UPDATE requiring both the expected status and that exact lease, so concurrent
runs never handle one charge twice and a run that lost its lease changes nothing (RACED).

Why the database's clock (``payments.clock``): web, worker and beat hosts disagree about the
time. Every age here (staleness, leases, the gateway timeout) is compared in SQL against the
database server's ``Now()``; a host whose clock is minutes off changes nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from django.db import router, transaction
from django.db.models import Q
from django.template.defaultfilters import pluralize

from payments import conf
from payments.charges import (
    charge_lease_renew,
    charge_recheck_abandon,
    charge_reconcile_move,
    charges_lease,
)
from payments.checkers import PRODUCER_GROUP
from payments.clock import db_ago, db_now
from payments.gateways import PaymentGateway, gateway_timeout, get_gateway
from payments.models import CHARGE_RECONCILED, CHARGE_RECONCILED_NOT_FOUND, Charge
from payments.recording import payment_charge_settle, payment_message_send
from txbroker import LocalTransactionState, messages_with_key

logger = logging.getLogger("payments")

__all__ = [
    "CHARGE_RECONCILED",
    "CHARGE_RECONCILED_NOT_FOUND",
    "ChargeReconcileReport",
    "ReconcileOutcome",
    "charge_recheck_window",
    "charge_reconcile_after",
    "charge_reconcile_stale",
]

CHARGE_RECONCILED_DECLINED = CHARGE_RECONCILED + "declined at the gateway: {reason}"
CHARGE_RECONCILED_APPROVED = CHARGE_RECONCILED + "found PENDING, approved at the gateway"
CHARGE_RECONCILED_SENT = CHARGE_RECONCILED + "found {found} with no payment message; message sent"
CHARGE_RECONCILED_ROLLED_BACK = CHARGE_RECONCILED + "its payment message was rolled back"
CHARGE_RECONCILED_APPROVED_LATE = (
    CHARGE_RECONCILED + "approved at the gateway after the charge was closed without its answer: to refund"
)
CHARGE_RECONCILE_INSIDE_ATOMIC = (
    "charge_reconcile_stale() was called inside transaction.atomic(): call it outside any "
    "transaction (each charge's moves and message commit on their own)"
)
CHARGE_RECONCILE_NEGATIVE_AGE = "older_than must be a number of seconds >= 0, not {value!r}"


class ReconcileOutcome:
    """What reconciliation did with one charge (the report counts these)."""

    # settling a stale PENDING / APPROVED charge
    COMPLETED = "completed"  # payment message sent and the payment recorded
    SENT_TO_CHECK_BACK = "sent_check_back_settles"  # message sent, left HALF (UNKNOWN)
    DECLINED = "declined"  # PENDING -> DECLINED: the gateway declined it
    NOT_FOUND = "not_found"  # PENDING -> ERROR: the gateway never saw it, and the call is over
    IN_FLIGHT = "in_flight"  # PENDING, unknown to the gateway, its call may still run: later
    ABANDONED = "abandoned"  # never to be recorded (message rolled back): to refund
    LEFT_TO_CHECK_BACK = "left_to_check_back"  # its message exists: check-back settles it
    # rechecking a charge closed without the gateway's answer
    APPROVED_LATE = "approved_late"  # ERROR -> ABANDONED: the gateway approved it after all
    STILL_NOT_CHARGED = "still_not_charged"  # no approval at the gateway: asked again later
    # either
    GATEWAY_UNAVAILABLE = "gateway_unavailable"  # lookup failed: tried again next run
    SEND_FAILED = "send_failed"  # sending raised: tried again next run
    RACED = "raced"  # settled by someone else first: nothing done


@dataclass
class ChargeReconcileReport:
    older_than: float
    dry_run: bool = False
    examined: int = 0  # stale PENDING / APPROVED charges
    outcomes: Counter = field(default_factory=Counter)
    rechecked: int = 0  # charges closed without the gateway's answer, asked again
    recheck_outcomes: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        if self.examined:
            verb = "would settle" if self.dry_run else "reconciled"
            text = f"{verb} {self.examined} charge{pluralize(self.examined)} older than {self.older_than:g}s: {_listed(self.outcomes)}"
        else:
            text = f"no charge left PENDING or APPROVED for more than {self.older_than:g}s"
        if self.rechecked:
            verb = "would recheck" if self.dry_run else "rechecked"
            text += (
                f"; {verb} {self.rechecked} charge{pluralize(self.rechecked)} closed without the gateway's answer: "
                f"{_listed(self.recheck_outcomes)}"
            )
        if self.dry_run and (self.examined or self.rechecked):
            text = f"dry run, nothing changed: {text}"
        return text

    @property
    def noteworthy(self) -> bool:
        """Something was settled or found approved late (a recheck finding nothing is not)."""
        return bool(self.examined) or any(
            kind != ReconcileOutcome.STILL_NOT_CHARGED for kind in self.recheck_outcomes
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "older_than": self.older_than,
            "dry_run": self.dry_run,
            "examined": self.examined,
            "outcomes": dict(self.outcomes),
            "rechecked": self.rechecked,
            "recheck_outcomes": dict(self.recheck_outcomes),
        }


def _listed(outcomes: Counter) -> str:
    return ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(outcomes.items()))


def charge_reconcile_after() -> float:
    """PAYMENTS_CHARGE_RECONCILE_AFTER: the age past which a PENDING/APPROVED charge is stale."""
    return conf.seconds("PAYMENTS_CHARGE_RECONCILE_AFTER")


def charge_recheck_window() -> float:
    """PAYMENTS_CHARGE_RECHECK_WINDOW (seconds, default one day): how long after closing a
    charge without the gateway's answer reconciliation keeps asking the gateway about it."""
    return conf.seconds("PAYMENTS_CHARGE_RECHECK_WINDOW")


def charge_reconcile_stale(
    *,
    older_than: Optional[float] = None,
    dry_run: bool = False,
    batch_size: Optional[int] = None,
    progress: Optional[Callable[[ChargeReconcileReport], None]] = None,
) -> ChargeReconcileReport:
    """Settle the charges left PENDING or APPROVED for more than ``older_than`` seconds
    (default PAYMENTS_CHARGE_RECONCILE_AFTER), then recheck the charges closed without the
    gateway's answer (module doc). ``dry_run`` asks the gateway and the broker but changes
    nothing. Must be called outside any transaction.
    """
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError(CHARGE_RECONCILE_INSIDE_ATOMIC)
    older_than = charge_reconcile_after() if older_than is None else older_than
    if not older_than >= 0:
        raise ValueError(CHARGE_RECONCILE_NEGATIVE_AGE.format(value=older_than))
    batch_size = batch_size or int(conf.setting("PAYMENTS_CHARGE_RECONCILE_BATCH_SIZE"))
    gateway = get_gateway()
    report = ChargeReconcileReport(older_than=older_than, dry_run=dry_run)
    # A charge leased by this pass is leased after its start (database time), so the pass
    # never claims it twice, even with older_than=0.
    started = db_now(using=router.db_for_write(Charge))
    stale = Charge.objects.stale(older_than=older_than, leased_before=started)
    closed = Charge.objects.to_recheck(
        older_than=older_than, window=charge_recheck_window(), leased_before=started
    )

    def settle(charge: Charge) -> None:
        report.examined += 1
        report.outcomes[_charge_reconcile(charge=charge, gateway=gateway, dry_run=dry_run)] += 1

    def recheck(charge: Charge) -> None:
        report.rechecked += 1
        report.recheck_outcomes[_charge_recheck(charge=charge, gateway=gateway, dry_run=dry_run)] += 1

    for candidates, handle in ((stale, settle), (closed, recheck)):
        if dry_run:
            for charge in candidates.order_by("updated_at", "pk").iterator():
                handle(charge)
            continue
        while True:
            charges = charges_lease(candidates=candidates, batch_size=batch_size)
            for charge in charges:
                handle(charge)
            if progress is not None and charges:
                progress(report)
            if len(charges) < batch_size:
                break
    return report


def _charge_reconcile(*, charge: Charge, gateway: PaymentGateway, dry_run: bool) -> str:
    """Settle one leased stale charge; return its ``ReconcileOutcome``."""
    found = charge.status
    if found == Charge.Status.PENDING:
        try:
            result = gateway.lookup(idempotency_key=charge.idempotency_key)
        except Exception:
            logger.warning(
                "reconciliation: the gateway could not tell what became of charge %s (order %s); "
                "trying again later",
                charge.pk,
                charge.order_id,
                exc_info=True,
            )
            return ReconcileOutcome.GATEWAY_UNAVAILABLE
        if result is None:
            return _charge_close_not_found(charge=charge, dry_run=dry_run)
        if not result.approved:
            reason = CHARGE_RECONCILED_DECLINED.format(reason=result.reason or "declined")
            if dry_run or charge_reconcile_move(charge, status=Charge.Status.DECLINED, reason=reason):
                return ReconcileOutcome.DECLINED
            return ReconcileOutcome.RACED
        if not dry_run and not charge_reconcile_move(
            charge,
            status=Charge.Status.APPROVED,
            reason=CHARGE_RECONCILED_APPROVED,
            reference=result.reference,
        ):
            return ReconcileOutcome.RACED

    # APPROVED: was its payment message sent?
    order_messages = messages_with_key(charge.order_id, producer_group=PRODUCER_GROUP)
    own = [m for m in order_messages if m.properties.get("charge_id") == str(charge.pk)]
    unsettled = [m for m in order_messages if m.state in ("HALF", "COMMITTED")]
    unsettled += [m for m in own if m.state == "DISCARDED"]  # parked: an operator resumes it
    if unsettled:
        logger.info(
            "reconciliation: charge %s (order %s) is APPROVED and message %s is %s: left to check-back",
            charge.pk,
            charge.order_id,
            unsettled[0].msg_id,
            unsettled[0].state,
        )
        return ReconcileOutcome.LEFT_TO_CHECK_BACK
    if own:
        # Its message was rolled back: the checker's answer stands, the charge is never recorded.
        if dry_run:
            return ReconcileOutcome.ABANDONED
        with transaction.atomic():
            paid = payment_charge_settle(
                order_id=charge.order_id, charge_id=charge.pk, reason=CHARGE_RECONCILED_ROLLED_BACK
            )
        logger.warning(
            "reconciliation: charge %s of order %s: message rolled back, ABANDONED",
            charge.pk,
            charge.order_id,
        )
        return ReconcileOutcome.RACED if paid else ReconcileOutcome.ABANDONED
    if dry_run:
        return ReconcileOutcome.COMPLETED
    # Renew the lease just before sending, so that only one run sends for this charge.
    if not charge_lease_renew(charge=charge, reason=CHARGE_RECONCILED_SENT.format(found=found)):
        return ReconcileOutcome.RACED
    logger.warning(
        "reconciliation: charge %s of order %s found %s with no payment message: sending it",
        charge.pk,
        charge.order_id,
        found,
    )
    try:
        sent = payment_message_send(charge=charge)
    except Exception:
        logger.exception("reconciliation: sending the payment message of order %s failed", charge.order_id)
        return ReconcileOutcome.SEND_FAILED
    state = sent.local_transaction_state
    if state == LocalTransactionState.COMMIT:
        return ReconcileOutcome.COMPLETED
    if state == LocalTransactionState.ROLLBACK:
        status = Charge.objects.filter(pk=charge.pk).values_list("status", flat=True).first()
        return ReconcileOutcome.ABANDONED if status == Charge.Status.ABANDONED else ReconcileOutcome.RACED
    return ReconcileOutcome.SENT_TO_CHECK_BACK


def _charge_close_not_found(*, charge: Charge, dry_run: bool) -> str:
    """The gateway has no record of a PENDING charge: PENDING -> ERROR (the order is payable
    again) only when the charge is older than PAYMENTS_GATEWAY_TIMEOUT, database time,
    checked by the UPDATE itself. Younger, the call may still be running and approve; the
    charge stays PENDING, leased, and a later run asks again."""
    call_over = Q(created_at__lt=db_ago(gateway_timeout()))
    if dry_run:
        over = Charge.objects.filter(call_over, pk=charge.pk).exists()
        return ReconcileOutcome.NOT_FOUND if over else ReconcileOutcome.IN_FLIGHT
    if charge_reconcile_move(
        charge, status=Charge.Status.ERROR, reason=CHARGE_RECONCILED_NOT_FOUND, condition=call_over
    ):
        return ReconcileOutcome.NOT_FOUND
    if Charge.objects.filter(
        pk=charge.pk, status=Charge.Status.PENDING, reconciled_at=charge.reconciled_at
    ).exists():
        logger.info(
            "reconciliation: charge %s of order %s is unknown to the gateway but younger than "
            "PAYMENTS_GATEWAY_TIMEOUT (its call may be in flight): asking again later",
            charge.pk,
            charge.order_id,
        )
        return ReconcileOutcome.IN_FLIGHT
    return ReconcileOutcome.RACED


def _charge_recheck(*, charge: Charge, gateway: PaymentGateway, dry_run: bool) -> str:
    """Ask the gateway again about a leased charge closed without its answer; an approval
    found now moves it ERROR -> ABANDONED (to refund) in one conditional UPDATE."""
    try:
        result = gateway.lookup(idempotency_key=charge.idempotency_key)
    except Exception:
        logger.warning(
            "reconciliation: the gateway could not tell what became of closed charge %s (order %s); "
            "trying again later",
            charge.pk,
            charge.order_id,
            exc_info=True,
        )
        return ReconcileOutcome.GATEWAY_UNAVAILABLE
    if result is None or not result.approved:
        return ReconcileOutcome.STILL_NOT_CHARGED
    if dry_run:
        return ReconcileOutcome.APPROVED_LATE
    if not charge_recheck_abandon(
        charge=charge,
        leased_at=charge.reconciled_at,
        reason=CHARGE_RECONCILED_APPROVED_LATE,
        reference=result.reference,
    ):
        return ReconcileOutcome.RACED
    logger.error(
        "reconciliation: charge %s of order %s, closed as %r, was approved at the gateway: "
        "ABANDONED, to refund",
        charge.pk,
        charge.order_id,
        charge.reason,
    )
    return ReconcileOutcome.APPROVED_LATE
