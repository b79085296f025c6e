"""Reads of notifications."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from notifications.models import Notification, NotificationProfile


@dataclass(frozen=True)
class PhoneStatus:
    phone: str  # "" when none is known
    verified: bool


def notification_list(*, user: AbstractBaseUser, order_id: Optional[str] = None) -> QuerySet[Notification]:
    notifications = Notification.objects.filter(user=user)
    if order_id:
        notifications = notifications.filter(order_id=order_id)
    return notifications.order_by("-created_at", "-id")


def phone_of(*, user_id: int) -> str:
    """The user's phone number, verified or not, or "" when none is known."""
    return phone_status_of(user_id=user_id).phone


def phone_status_of(*, user_id: int) -> PhoneStatus:
    """The user's phone number and whether it is verified (payment SMS go only there)."""
    row = (
        NotificationProfile.objects.filter(user_id=user_id).values_list("phone", "phone_verified_at").first()
    )
    if row is None:
        return PhoneStatus(phone="", verified=False)
    phone, verified_at = row
    return PhoneStatus(phone=phone, verified=bool(phone) and verified_at is not None)
