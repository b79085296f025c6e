"""Writes of points: one award per paid order, whatever the redeliveries."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from points.models import PointsRecord, UserPoints

POINTS_NO_AWARD_TO_TAKE_BACK = "order {order_id} has no points award to take back"


def points_for_amount(amount: Decimal) -> int:
    """1 yuan = 1 point, whole yuan, rounded down (99.90 -> 99)."""
    return int(amount.to_integral_value(rounding=ROUND_FLOOR))


def points_award_for_payment(*, order_id: str, user_id: int, amount: Decimal) -> PointsRecord:
    """Record the order's points and add them to the user's balance, once per order.

    Runs in the consumer's transaction: the record (unique order_id) and the increment
    commit together with the delivery, so a redelivery finds the record and does nothing.
    """
    existing = PointsRecord.objects.filter(order_id=order_id, reason=PointsRecord.Reason.PAYMENT).first()
    if existing is not None:
        return existing
    points = points_for_amount(amount)
    record = PointsRecord.objects.create(
        order_id=order_id, user_id=user_id, points=points, reason=PointsRecord.Reason.PAYMENT
    )
    _balance_add(user_id=user_id, points=points)
    return record


def points_take_back_for_refund(*, order_id: str, user_id: int) -> PointsRecord:
    """Record a negative record taking back exactly what the order's payment awarded, and
    subtract it from the balance, once per order (the balance stays the sum of records).

    Runs in the consumer's transaction, like the award. The award comes first (the refund
    message follows the payment message in the order's message group); without one this
    raises, so the delivery is retried, then dead-lettered with that reason.
    """
    existing = PointsRecord.objects.filter(order_id=order_id, reason=PointsRecord.Reason.REFUND).first()
    if existing is not None:
        return existing
    award = PointsRecord.objects.filter(order_id=order_id, reason=PointsRecord.Reason.PAYMENT).first()
    if award is None:
        raise LookupError(POINTS_NO_AWARD_TO_TAKE_BACK.format(order_id=order_id))
    record = PointsRecord.objects.create(
        order_id=order_id, user_id=award.user_id, points=-award.points, reason=PointsRecord.Reason.REFUND
    )
    _balance_add(user_id=award.user_id, points=-award.points)
    return record


def _balance_add(*, user_id: int, points: int) -> None:
    now = timezone.now()
    if UserPoints.objects.filter(user_id=user_id).update(points=F("points") + points, updated_at=now):
        return
    try:
        with transaction.atomic():
            UserPoints.objects.create(user_id=user_id, points=points, updated_at=now)
    except IntegrityError:
        # A concurrent first award for this user created the row: add to it.
        UserPoints.objects.filter(user_id=user_id).update(points=F("points") + points, updated_at=now)
