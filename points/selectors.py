"""Reads of points."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from points.models import PointsRecord, UserPoints


def points_balance(*, user: AbstractBaseUser) -> int:
    """The user's points (0 before the first award)."""
    return UserPoints.objects.filter(user=user).values_list("points", flat=True).first() or 0


def points_record_list(*, user: AbstractBaseUser) -> QuerySet[PointsRecord]:
    return PointsRecord.objects.filter(user=user).order_by("-created_at", "-id")
