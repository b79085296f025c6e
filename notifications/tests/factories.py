from __future__ import annotations

import factory
from django.utils import timezone

from notifications.models import NotificationProfile
from orders.tests.factories import UserFactory


class NotificationProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = NotificationProfile

    user = factory.SubFactory(UserFactory)
    phone = factory.Sequence(lambda n: f"+86139{n:08d}")
    # Verified, so payment SMS go to it (``unverified=True``: set, its code not entered yet).
    phone_verified_at = factory.LazyFunction(timezone.now)

    class Params:
        unverified = factory.Trait(phone_verified_at=None)
