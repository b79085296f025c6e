"""Read-only admin: payments are written by the payment service and its transactional
message only; the one action, refunding ABANDONED charges, goes through the refund service."""

from __future__ import annotations

from django.contrib import admin, messages

from config.admin import ReadOnlyAdmin
from config.errors import DomainError
from payments.models import Charge, PaymentRecord, Refund
from payments.refunds import refund_abandoned_charge

REFUND_PERMISSION = "payments.refund_charge"


@admin.register(PaymentRecord)
class PaymentRecordAdmin(ReadOnlyAdmin):
    list_display = ["order_id", "user", "amount", "status", "pay_time", "message_id"]
    list_filter = ["status"]
    search_fields = ["order_id", "message_id", "user__username"]
    date_hierarchy = "pay_time"
    list_select_related = ["user"]


@admin.register(Charge)
class ChargeAdmin(ReadOnlyAdmin):
    """ABANDONED charges were approved by the gateway but never recorded: refund them (the
    "refund" action, with the ``payments.refund_charge`` permission; recorded with the
    operator). A reason starting "reconciled:" is a move made by charge reconciliation."""

    list_display = [
        "id",
        "order_id",
        "user",
        "amount",
        "payment_method",
        "status",
        "reference",
        "reason",
        "created_at",
        "reconciled_at",
    ]
    list_filter = ["status", "payment_method"]
    search_fields = ["order_id", "reference", "user__username"]
    date_hierarchy = "created_at"
    list_select_related = ["user"]
    actions = ["refund_abandoned"]

    def has_refund_permission(self, request) -> bool:
        return request.user.has_perm(REFUND_PERMISSION)

    @admin.action(description="Refund the selected ABANDONED charges", permissions=["refund"])
    def refund_abandoned(self, request, queryset) -> None:
        refunded = 0
        for charge in queryset.order_by("pk"):
            try:
                refund_abandoned_charge(
                    charge=charge, operator=request.user, reason="refunded by an operator"
                )
            except DomainError as exc:  # one charge's answer; the others still go on
                self.message_user(request, f"charge {charge.pk}: {exc}", messages.ERROR)
            else:
                refunded += 1
        if refunded:
            self.message_user(request, f"{refunded} charge(s) refunded.", messages.SUCCESS)


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ["id", "order_id", "charge", "user", "amount", "status", "actor", "reason", "created_at"]
    list_filter = ["status"]
    search_fields = ["order_id", "reference", "message_id", "user__username", "actor__username"]
    list_select_related = ["user", "actor", "charge"]
