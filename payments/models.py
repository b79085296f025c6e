"""Payments: the ledger of successful payments (the article's payment_record) and the
gateway charges that led to them.

``PaymentRecord`` is the article's table: one per order, the local transaction of the
payment message inserts it, and the checker looks for it. Failed attempts are not written
there: a FAILED row under the unique order_id would stop the order from ever being paid.
They are ``Charge`` rows instead (DECLINED, ERROR, ABANDONED); FAILED stays a valid status
of the article's schema.

``Charge`` is one call to the gateway. At most one charge per order is active (PENDING,
APPROVED or RECORDED: a partial unique index), which is what makes concurrent duplicate
payment requests charge once, and what a cancel checks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from payments.clock import Now, db_ago


class PaymentRecord(models.Model):
    class Status(models.TextChoices):
        SUCCESS = "SUCCESS", "success"
        FAILED = "FAILED", "failed"

    order_id = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payment_records"
    )
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    pay_time = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices)
    # The transactional message whose local transaction inserted this record.
    message_id = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["SUCCESS", "FAILED"]), name="payments_record_status_valid"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payments_record_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.order_id} {self.amount} [{self.status}]"


# Reasons of the charges closed ERROR without the gateway's answer (it may still have charged
# them): reconciliation keeps asking about these for PAYMENTS_CHARGE_RECHECK_WINDOW, and an
# approval found later makes them ABANDONED (to refund). The recheck index names them.
CHARGE_RECONCILED = "reconciled: "  # every move made by reconciliation says so in its reason
CHARGE_RECONCILED_NOT_FOUND = CHARGE_RECONCILED + "the gateway has no record of this charge"
CHARGE_GATEWAY_TIMED_OUT = "the gateway did not answer in time: the charge may have been made"
CHARGE_OUTCOME_UNKNOWN_REASONS = (CHARGE_RECONCILED_NOT_FOUND, CHARGE_GATEWAY_TIMED_OUT)


class ChargeQuerySet(models.QuerySet):
    def active(self) -> ChargeQuerySet:
        return self.filter(status__in=Charge.ACTIVE)

    def to_refund(self) -> ChargeQuerySet:
        """Approved by the gateway but never recorded: the money must go back (and has not
        been yet: no refund of it)."""
        return self.filter(status=Charge.Status.ABANDONED, refund__isnull=True)

    def unsettled(self) -> ChargeQuerySet:
        """PENDING or APPROVED: a payment is still working on it, or its process died."""
        return self.filter(status__in=Charge.UNSETTLED)

    def stale(self, *, older_than: float, leased_before: Optional[datetime] = None) -> ChargeQuerySet:
        """Unsettled, unchanged for ``older_than`` seconds and not leased by a reconciliation
        in that time (nor since ``leased_before``, the start of the current pass). Ages are
        the database's: compared in SQL against ``Now()``."""
        cutoff = db_ago(older_than)
        return self.unsettled().filter(updated_at__lt=cutoff).filter(_lease_expired(cutoff, leased_before))

    def closed_without_answer(self) -> ChargeQuerySet:
        """ERROR charges closed without the gateway's answer: it may have charged them."""
        return self.filter(status=Charge.Status.ERROR, reason__in=CHARGE_OUTCOME_UNKNOWN_REASONS)

    def to_recheck(
        self, *, older_than: float, window: float, leased_before: Optional[datetime] = None
    ) -> ChargeQuerySet:
        """Closed without the gateway's answer less than ``window`` seconds ago, more than
        ``older_than`` ago, and not leased by a reconciliation in the last ``older_than``
        seconds (nor since ``leased_before``): each is asked again at most once per
        threshold, and only within the window (served by the ``payments_charge_recheck``
        partial index)."""
        cutoff = db_ago(older_than)
        return (
            self.closed_without_answer()
            .filter(updated_at__lt=cutoff, updated_at__gte=db_ago(window))
            .filter(_lease_expired(cutoff, leased_before))
        )

    def with_idempotency_key(self, key: str) -> ChargeQuerySet:
        """The charge whose gateway call used ``key`` (see ``Charge.idempotency_key``)."""
        charge_id = Charge.id_of_idempotency_key(key)
        return self.filter(pk=charge_id) if charge_id is not None else self.none()


def _lease_expired(cutoff: models.Expression, leased_before: Optional[datetime]) -> Q:
    """Never leased, or leased before ``cutoff`` (and before ``leased_before`` when given)."""
    expired = Q(reconciled_at__lt=cutoff)
    if leased_before is not None:
        expired &= Q(reconciled_at__lt=leased_before)
    return Q(reconciled_at__isnull=True) | expired


class Charge(models.Model):
    """One charge through the gateway.

    PENDING (claimed; the gateway is being called) -> APPROVED | DECLINED | ERROR;
    APPROVED -> RECORDED (the local transaction inserted the PaymentRecord) | ABANDONED
    (check-back found no record and rolled the message back: to refund). A charge left
    PENDING or APPROVED by a process that died keeps the order claimed, on purpose: the
    money may have moved, so only a reconciliation with the gateway may release it:
    ``payments.reconciliation.charge_reconcile_stale``, run by beat, asks the gateway about
    charges left unsettled longer than PAYMENTS_CHARGE_RECONCILE_AFTER and settles them
    (its moves say "reconciled" in ``reason``). ERROR closed without the gateway's answer
    (not found by reconciliation, or a timed-out call) -> ABANDONED when the gateway turns
    out to have approved it after all (reconciliation asks again for a while).
    """

    class Status(models.TextChoices):
        PENDING = "PENDING", "pending (gateway being called)"
        APPROVED = "APPROVED", "approved, not recorded yet"
        RECORDED = "RECORDED", "recorded"
        DECLINED = "DECLINED", "declined"
        ERROR = "ERROR", "gateway error"
        ABANDONED = "ABANDONED", "approved but never recorded (to refund)"

    ACTIVE = (Status.PENDING, Status.APPROVED, Status.RECORDED)
    UNSETTLED = (Status.PENDING, Status.APPROVED)
    IDEMPOTENCY_KEY_PREFIX = "charge-"

    order_id = models.CharField(max_length=64)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="charges")
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    payment_method = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # The gateway's reference of an approved charge, or its reason for a decline or error.
    reference = models.CharField(max_length=128, blank=True, default="")
    reason = models.CharField(max_length=255, blank=True, default="")
    # Database time (see payments.clock): every age compared for a charge is the database's.
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    # When a reconciliation last claimed this charge, database time (its lease: another run
    # leaves it alone for PAYMENTS_CHARGE_RECONCILE_AFTER seconds).
    reconciled_at = models.DateTimeField(null=True, blank=True)

    objects = ChargeQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        # The admin's "refund" action on ABANDONED charges (``payments.refunds``).
        permissions = [("refund_charge", "Can refund an ABANDONED charge")]
        indexes = [
            models.Index(fields=["order_id", "-created_at"], name="payments_charge_order"),
            # Reconciliation's scan: only the few unsettled charges, never the whole table.
            models.Index(
                fields=["updated_at"],
                condition=Q(status__in=["PENDING", "APPROVED"]),
                name="payments_charge_unsettled",
            ),
            # Reconciliation's recheck of charges closed without the gateway's answer: only
            # those, never every ERROR charge.
            models.Index(
                fields=["updated_at"],
                condition=Q(status="ERROR", reason__in=list(CHARGE_OUTCOME_UNKNOWN_REASONS)),
                name="payments_charge_recheck",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["order_id"],
                condition=Q(status__in=["PENDING", "APPROVED", "RECORDED"]),
                name="payments_charge_one_active_per_order",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["PENDING", "APPROVED", "RECORDED", "DECLINED", "ERROR", "ABANDONED"]),
                name="payments_charge_status_valid",
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payments_charge_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"charge {self.pk} {self.order_id} {self.amount} [{self.status}]"

    @property
    def idempotency_key(self) -> str:
        """The key of its gateway call: a retried or looked-up call names the same charge."""
        return f"{self.IDEMPOTENCY_KEY_PREFIX}{self.pk}"

    @classmethod
    def id_of_idempotency_key(cls, key: str) -> Optional[int]:
        number = key.removeprefix(cls.IDEMPOTENCY_KEY_PREFIX)
        return int(number) if key.startswith(cls.IDEMPOTENCY_KEY_PREFIX) and number.isdigit() else None


class SimulatedGatewayCharge(models.Model):
    """One charge the simulated gateway made (approved or declined), by idempotency key.

    Written by ``SimulatedGateway.charge()`` in autocommit, outside the caller's
    transactions, as an external system's books would be: a caller's rollback or death
    never undoes it, and ``lookup()`` answers from it in any process.
    """

    idempotency_key = models.CharField(max_length=128, unique=True)
    order_id = models.CharField(max_length=64)
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    payment_method = models.CharField(max_length=32)
    approved = models.BooleanField()
    reference = models.CharField(max_length=128, blank=True, default="")
    reason = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.idempotency_key} {self.order_id} {self.amount} [{'approved' if self.approved else 'declined'}]"


class Refund(models.Model):
    """Money going back to the payer for one approved charge (one refund per charge).

    PENDING (claimed; the gateway is being asked) -> APPROVED (the gateway refunded; the
    refund message is being sent) -> REFUNDED (the refund message's local transaction, or
    its checker, recorded it). A gateway error deletes the PENDING claim: nothing changed.
    The charge is the order's RECORDED one (the owner's ``POST .../refund/``, tag refund) or
    an ABANDONED one (the admin's action: nobody consumed a payment for it, so no message).
    ``actor`` is who asked: the owner, or the operator for an ABANDONED charge.
    """

    class Status(models.TextChoices):
        PENDING = "PENDING", "pending (gateway being asked)"
        APPROVED = "APPROVED", "refunded by the gateway, not recorded yet"
        REFUNDED = "REFUNDED", "refunded"

    charge = models.OneToOneField("payments.Charge", on_delete=models.PROTECT, related_name="refund")
    order_id = models.CharField(max_length=64)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="refunds")
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reason = models.CharField(max_length=255, blank=True, default="")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="refunds_made",
        null=True,
        blank=True,
    )
    reference = models.CharField(max_length=128, blank=True, default="")
    # The refund message whose local transaction recorded it ("" for an ABANDONED charge).
    message_id = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["order_id"], name="payments_refund_order")]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["PENDING", "APPROVED", "REFUNDED"]),
                name="payments_refund_status_valid",
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="payments_refund_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"refund {self.pk} {self.order_id} {self.amount} [{self.status}]"

    @property
    def idempotency_key(self) -> str:
        return f"refund-{self.charge_id}"


class SimulatedGatewayRefund(models.Model):
    """One refund the simulated gateway made, by idempotency key (its books, like
    ``SimulatedGatewayCharge``)."""

    idempotency_key = models.CharField(max_length=128, unique=True)
    charge_reference = models.CharField(max_length=128)
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    reference = models.CharField(max_length=128)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.idempotency_key} {self.amount}"
