from __future__ import annotations

import factory

from orders.tests.factories import UserFactory
from points.models import PointsRecord, UserPoints


class UserPointsFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UserPoints

    user = factory.SubFactory(UserFactory)
    points = 0


class PointsRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PointsRecord

    order_id = factory.Sequence(lambda n: f"POINTS_{n:05d}")
    user = factory.SubFactory(UserFactory)
    points = 10
