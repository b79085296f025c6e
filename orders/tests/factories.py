from __future__ import annotations

from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from orders.models import Order


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("test-password-123")


class OrderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Order

    order_id = factory.Sequence(lambda n: f"ORDER_{n:05d}")
    user = factory.SubFactory(UserFactory)
    amount = Decimal("99.00")
    status = Order.Status.CREATED
