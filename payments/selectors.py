"""Reads of payments."""

from __future__ import annotations

from typing import Optional

from django.contrib.auth.models import AbstractBaseUser

from orders.models import order_id_is_valid
from payments.models import PaymentRecord


def payment_record_get(*, user: AbstractBaseUser, order_id: str) -> Optional[PaymentRecord]:
    """The user's payment record for this order (None when none, or someone else's)."""
    if not order_id_is_valid(order_id):
        return None
    return PaymentRecord.objects.filter(user=user, order_id=order_id).first()


def payment_success_get(*, order_id: str) -> Optional[PaymentRecord]:
    return PaymentRecord.objects.filter(order_id=order_id, status=PaymentRecord.Status.SUCCESS).first()
