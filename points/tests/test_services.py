"""Points: 1 yuan = 1 point, rounded down, awarded once per order."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

import pytest
from django.db import IntegrityError, transaction
from hypothesis import given
from hypothesis import strategies as st

from orders.tests.factories import UserFactory
from points.models import PointsRecord, UserPoints
from points.selectors import points_balance
from points.services import points_award_for_payment, points_for_amount
from points.tests.factories import PointsRecordFactory, UserPointsFactory

AMOUNTS = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999999.99"), places=2)


@pytest.mark.parametrize(
    ("amount", "points"),
    [("99.00", 99), ("99.90", 99), ("99.99", 99), ("0.99", 0), ("1.00", 1), ("99999999.99", 99999999)],
)
def test_points_are_whole_yuan_rounded_down(amount, points):
    assert points_for_amount(Decimal(amount)) == points


@given(AMOUNTS)
def test_points_never_exceed_the_amount_and_miss_less_than_one(amount):
    points = points_for_amount(amount)
    assert points == int(amount.to_integral_value(rounding=ROUND_FLOOR))
    assert 0 <= amount - points < 1


@pytest.mark.django_db
def test_award_records_and_adds_once_per_order():
    user = UserFactory()

    first = points_award_for_payment(order_id="O1", user_id=user.pk, amount=Decimal("99.90"))
    again = points_award_for_payment(order_id="O1", user_id=user.pk, amount=Decimal("99.90"))
    points_award_for_payment(order_id="O2", user_id=user.pk, amount=Decimal("10.00"))

    assert first == again
    assert (first.points, first.reason) == (99, PointsRecord.Reason.PAYMENT)
    assert points_balance(user=user) == 109
    assert PointsRecord.objects.filter(user=user).count() == 2


@pytest.mark.django_db
def test_the_database_refuses_negative_points_and_a_second_record_per_order():
    with pytest.raises(IntegrityError), transaction.atomic():
        UserPointsFactory(points=-1)
    record = PointsRecordFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        PointsRecordFactory(order_id=record.order_id)


@pytest.mark.django_db
def test_balance_is_zero_before_the_first_award():
    user = UserFactory()
    assert points_balance(user=user) == 0
    assert not UserPoints.objects.filter(user=user).exists()
