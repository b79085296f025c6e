"""Read-only admin: points change only through the points consumer."""

from __future__ import annotations

from django.contrib import admin

from config.admin import ReadOnlyAdmin
from points.models import PointsRecord, UserPoints


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
