from __future__ import annotations

from decimal import Decimal

import factory
from django.utils import timezone

from orders.tests.factories import UserFactory
from payments.models import Charge, PaymentRecord


class PaymentRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PaymentRecord

    order_id = factory.Sequence(lambda n: f"PAID_{n:05d}")
    user = factory.SubFactory(UserFactory)
    amount = Decimal("99.00")
    pay_time = factory.LazyFunction(timezone.now)
    status = PaymentRecord.Status.SUCCESS


class ChargeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Charge

    order_id = factory.Sequence(lambda n: f"CHARGED_{n:05d}")
    user = factory.SubFactory(UserFactory)
    amount = Decimal("99.00")
    payment_method = "sim_approve"
    status = Charge.Status.APPROVED
