from __future__ import annotations

from django.contrib import admin

from notifications.models import Notification, NotificationProfile


@admin.register(NotificationProfile)
class NotificationProfileAdmin(admin.ModelAdmin):
    """Editable: an operator may set a user's phone number."""

    list_display = ["user", "phone", "updated_at"]
    search_fields = ["user__username", "phone"]
    list_select_related = ["user"]
    readonly_fields = ["updated_at"]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    """Read-only: notifications are written by the notification consumer only."""

    list_display = ["order_id", "user", "channel", "recipient", "status", "sent_at", "created_at"]
    list_filter = ["status", "channel"]
    search_fields = ["order_id", "recipient", "user__username"]
    list_select_related = ["user"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
