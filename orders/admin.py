from __future__ import annotations

from django.contrib import admin

from orders.models import Order


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    """Read-only: orders change through their services (the API and the payment message)."""

    list_display = ["order_id", "user", "amount", "status", "created_at", "updated_at"]
    list_filter = ["status"]
    search_fields = ["order_id", "user__username"]
    date_hierarchy = "created_at"
    list_select_related = ["user"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
