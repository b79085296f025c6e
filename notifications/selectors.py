"""Reads of notifications."""

from __future__ import annotations

from typing import Optional

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from notifications.models import Notification, NotificationProfile


def notification_list(*, user: AbstractBaseUser, order_id: Optional[str] = None) -> QuerySet[Notification]:
    notifications = Notification.objects.filter(user=user)
    if order_id:
        notifications = notifications.filter(order_id=order_id)
    return notifications.order_by("-created_at", "-id")


def phone_of(*, user_id: int) -> str:
    """The user's phone number, or "" when none is known."""
    return NotificationProfile.objects.filter(user_id=user_id).values_list("phone", flat=True).first() or ""
