from __future__ import annotations

from django.contrib import admin

from config.admin import ReadOnlyAdmin
from orders.models import Order


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    """Read-only: orders change through their services (the API and the payment message)."""

    list_display = ["order_id", "user", "amount", "status", "created_at", "updated_at"]
    list_filter = ["status"]
    search_fields = ["order_id", "user__username"]
    date_hierarchy = "created_at"
    list_select_related = ["user"]
