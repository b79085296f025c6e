from __future__ import annotations

from django.contrib import admin

from points.models import PointsRecord, UserPoints


class ReadOnlyAdmin(admin.ModelAdmin):
    """Points change only through the points consumer."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UserPoints)
class UserPointsAdmin(ReadOnlyAdmin):
    list_display = ["user", "points", "updated_at"]
    search_fields = ["user__username"]
    list_select_related = ["user"]


@admin.register(PointsRecord)
class PointsRecordAdmin(ReadOnlyAdmin):
    list_display = ["order_id", "user", "points", "reason", "created_at"]
    list_filter = ["reason"]
    search_fields = ["order_id", "user__username"]
    list_select_related = ["user"]
