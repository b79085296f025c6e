"""Points: a balance per user and one record per paid order (the idempotency key)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class UserPoints(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="points")
    points = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "user points"
        constraints = [models.CheckConstraint(condition=Q(points__gte=0), name="points_balance_not_negative")]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.points}"


class PointsRecord(models.Model):
    class Reason(models.TextChoices):
        PAYMENT = "PAYMENT", "earned by a payment"
        REFUND = "REFUND", "taken back by its refund"

    order_id = models.CharField(max_length=64)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="points_records"
    )
    points = models.BigIntegerField()
    reason = models.CharField(max_length=32, choices=Reason.choices, default=Reason.PAYMENT)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"], name="points_record_user_created")]
        constraints = [
            # One award per order and one deduction taking it back: the idempotency keys.
            models.UniqueConstraint(fields=["order_id", "reason"], name="points_record_one_per_order_reason"),
            models.CheckConstraint(
                condition=Q(reason="PAYMENT", points__gte=0) | Q(reason="REFUND", points__lte=0),
                name="points_record_sign_of_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.order_id}: {self.points:+d}"
