"""Orders: created and cancelled by their user, marked PAID by the payment message."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

# 1-64 letters, digits, ``_`` and ``-``: safe in a URL path and as a message key.
ORDER_ID_PATTERN = r"\A[A-Za-z0-9_-]{1,64}\Z"
ORDER_ID_MESSAGE = "1-64 characters: letters, digits, '_' and '-'"
order_id_validator = RegexValidator(ORDER_ID_PATTERN, ORDER_ID_MESSAGE)
_order_id = re.compile(ORDER_ID_PATTERN)


def order_id_is_valid(value: object) -> bool:
    """Whether ``value`` can be an order id (URL paths carry anything, even NUL bytes)."""
    return isinstance(value, str) and _order_id.match(value) is not None


class OrderQuerySet(models.QuerySet):
    def of_user(self, user) -> OrderQuerySet:
        return self.filter(user=user)


class Order(models.Model):
    class Status(models.TextChoices):
        CREATED = "CREATED", "created"
        PAID = "PAID", "paid"
        CANCELLED = "CANCELLED", "cancelled"
        REFUNDED = "REFUNDED", "refunded"

    order_id = models.CharField(max_length=64, unique=True, validators=[order_id_validator])
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders")
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATED)
    # True from a payment's claim of the order until that payment is released without being
    # recorded (declined, failed, abandoned): a held order cannot be cancelled. Taken and
    # released by ``orders.services`` (which payments calls under the order row lock).
    payment_hold = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    # Set explicitly by every conditional UPDATE (auto_now does not apply to .update()).
    updated_at = models.DateTimeField(default=timezone.now)

    objects = OrderQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"], name="orders_user_created")]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["CREATED", "PAID", "CANCELLED", "REFUNDED"]),
                name="orders_status_valid",
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="orders_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.order_id} {self.amount} [{self.status}]"
