"""Read-only admin: payments are written by the payment service and its transactional message only."""

from __future__ import annotations

from django.contrib import admin

from config.admin import ReadOnlyAdmin
from payments.models import Charge, PaymentRecord


@admin.register(PaymentRecord)
class PaymentRecordAdmin(ReadOnlyAdmin):
    list_display = ["order_id", "user", "amount", "status", "pay_time", "message_id"]
    list_filter = ["status"]
    search_fields = ["order_id", "message_id", "user__username"]
    date_hierarchy = "pay_time"
    list_select_related = ["user"]


@admin.register(Charge)
class ChargeAdmin(ReadOnlyAdmin):
    """ABANDONED charges were approved by the gateway but never recorded: refund them. A
    reason starting "reconciled:" is a move made by charge reconciliation."""

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
