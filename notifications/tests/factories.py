from __future__ import annotations

import factory

from notifications.models import NotificationProfile
from orders.tests.factories import UserFactory


class NotificationProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = NotificationProfile

    user = factory.SubFactory(UserFactory)
    phone = factory.Sequence(lambda n: f"+86139{n:08d}")
