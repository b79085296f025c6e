from __future__ import annotations

from django.contrib import admin

from config.admin import ReadOnlyAdmin
from notifications.models import Notification, NotificationProfile
from notifications.services import phone_set_verified


@admin.register(NotificationProfile)
class NotificationProfileAdmin(admin.ModelAdmin):
    """Editable: an operator may set a user's phone number, and vouches for it (it is
    saved verified, no code sent). Codes are never shown."""

    list_display = ["user", "phone", "phone_verified_at", "updated_at"]
    list_filter = [("phone_verified_at", admin.EmptyFieldListFilter)]
    search_fields = ["user__username", "phone"]
    list_select_related = ["user"]
    fields = ["user", "phone", "phone_verified_at", "updated_at"]
    readonly_fields = ["phone_verified_at", "updated_at"]

    def save_model(self, request, obj: NotificationProfile, form, change) -> None:
        profile = phone_set_verified(user=obj.user, phone=obj.phone)
        obj.pk = profile.pk  # the admin's log entry and redirect name the saved row

    def get_readonly_fields(self, request, obj=None) -> list[str]:
        return [*self.readonly_fields, "user"] if obj is not None else self.readonly_fields


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """Read-only: notifications are written by the notification consumer only."""

    list_display = ["order_id", "user", "channel", "recipient", "status", "sent_at", "created_at"]
    list_filter = ["status", "channel"]
    search_fields = ["order_id", "recipient", "user__username"]
    list_select_related = ["user"]
