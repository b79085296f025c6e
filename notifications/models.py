"""Notifications: the user's phone number, and one SMS per paid order."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

phone_validator = RegexValidator(r"\A\+?[0-9]{6,15}\Z", "6-15 digits, optionally after a leading '+'")


class NotificationProfile(models.Model):
    """Where to reach a user. No row, an empty phone or one not verified yet: payment SMS
    are SKIPPED.

    A number is verified by the code sent to it when it was set: only a hash of the code is
    kept (bound to the user and the number), with its expiry and the wrong guesses so far.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_profile"
    )
    phone = models.CharField(max_length=16, blank=True, default="", validators=[phone_validator])
    phone_verified_at = models.DateTimeField(null=True, blank=True)
    code_hash = models.CharField(max_length=64, blank=True, default="")
    code_expires_at = models.DateTimeField(null=True, blank=True)
    code_attempts = models.PositiveSmallIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(phone_verified_at__isnull=True) | ~Q(phone=""), name="notif_verified_has_phone"
            ),
            models.CheckConstraint(
                condition=Q(code_hash="") | Q(code_expires_at__isnull=False), name="notif_code_expires"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.phone or '-'}{'' if self.verified else ' (unverified)'}"

    @property
    def verified(self) -> bool:
        return bool(self.phone) and self.phone_verified_at is not None


class Notification(models.Model):
    class Channel(models.TextChoices):
        SMS = "sms", "SMS"

    class Kind(models.TextChoices):
        PAYMENT = "PAYMENT", "payment received"
        REFUND = "REFUND", "payment refunded"

    class Status(models.TextChoices):
        SENT = "SENT", "sent"
        SKIPPED = "SKIPPED", "skipped (no verified phone number)"
        FAILED = "FAILED", "failed (rejected by the provider)"

    order_id = models.CharField(max_length=64)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.SMS)
    # Which event of the order it tells: one notification per order, channel and kind.
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PAYMENT)
    recipient = models.CharField(max_length=32, blank=True, default="")
    text = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices)
    # The provider's id of a sent message, or why it was skipped or failed.
    detail = models.CharField(max_length=255, blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"], name="notif_user_created")]
        constraints = [
            models.UniqueConstraint(
                fields=["order_id", "channel", "kind"], name="notif_one_per_order_channel_kind"
            ),
            models.CheckConstraint(condition=Q(kind__in=["PAYMENT", "REFUND"]), name="notif_kind_valid"),
            models.CheckConstraint(
                condition=Q(status__in=["SENT", "SKIPPED", "FAILED"]), name="notif_status_valid"
            ),
            models.CheckConstraint(condition=Q(channel__in=["sms"]), name="notif_channel_valid"),
            models.CheckConstraint(
                condition=~Q(status="SENT") | Q(sent_at__isnull=False), name="notif_sent_has_time"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.order_id} {self.kind} {self.channel} -> {self.recipient or '-'} [{self.status}]"
