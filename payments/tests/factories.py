from __future__ import annotations

from decimal import Decimal

import factory
from django.utils import timezone

from orders.models import Order
from orders.tests.factories import UserFactory
from payments.models import Charge, PaymentRecord


def hold_the_order(order_id: str) -> None:
    """What a payment's claim does: its order (if there is one) is held until the payment is
    released, so that the order cannot be cancelled meanwhile."""
    Order.objects.filter(order_id=order_id, status=Order.Status.CREATED).update(payment_hold=True)


class PaymentRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PaymentRecord
        skip_postgeneration_save = True

    order_id = factory.Sequence(lambda n: f"PAID_{n:05d}")
    user = factory.SubFactory(UserFactory)
    amount = Decimal("99.00")
    pay_time = factory.LazyFunction(timezone.now)
    status = PaymentRecord.Status.SUCCESS

    @factory.post_generation
    def held(obj, create, extracted, **kwargs) -> None:
        if create and obj.status == PaymentRecord.Status.SUCCESS:
            hold_the_order(obj.order_id)


class ChargeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Charge
        skip_postgeneration_save = True

    order_id = factory.Sequence(lambda n: f"CHARGED_{n:05d}")
    user = factory.SubFactory(UserFactory)
    amount = Decimal("99.00")
    payment_method = "sim_approve"
    status = Charge.Status.APPROVED

    @factory.post_generation
    def held(obj, create, extracted, **kwargs) -> None:
        if create and obj.status in Charge.ACTIVE:
            hold_the_order(obj.order_id)
