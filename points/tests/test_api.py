from __future__ import annotations

import pytest

from orders.tests.factories import UserFactory
from points.tests.factories import PointsRecordFactory, UserPointsFactory

pytestmark = pytest.mark.django_db


def test_me_shows_the_callers_points(client_for):
    balance = UserPointsFactory(points=42)
    UserPointsFactory(points=7)

    response = client_for(balance.user).get("/api/points/me/")

    assert response.status_code == 200
    assert response.json() == {"user_id": balance.user_id, "points": 42}


def test_me_is_zero_for_a_new_user(client_for):
    user = UserFactory()
    assert client_for(user).get("/api/points/me/").json() == {"user_id": user.pk, "points": 0}


def test_records_are_the_callers_only_paginated(client_for):
    user = UserFactory()
    PointsRecordFactory(user=user, order_id="MINE", points=99)
    PointsRecordFactory(order_id="THEIRS")

    body = client_for(user).get("/api/points/me/records/").json()

    assert body["count"] == 1
    record = body["results"][0]
    assert (record["order_id"], record["points"], record["reason"]) == ("MINE", 99, "PAYMENT")
