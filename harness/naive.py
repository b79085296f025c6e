"""The naive design our users would otherwise write, for comparison only.

The payment is committed, then ``transaction.on_commit`` publishes one Celery task per
consumer, each running the same domain service as the txbroker consumer of that group.
Celery's defaults: the task is acknowledged when it starts (no ``acks_late``), no retry.

What it loses: a process that dies between the commit and the publish loses all three
effects; a worker killed mid-task loses that task (already acknowledged); a Redis that
restarts loses every queued task; a failing handler is not retried. Its handlers are the
same idempotent services, so a redelivery does not double points, but nothing guards the
SMS against a task published twice.

A poison payment (``poison_message`` in TXBROKER_FAULTS, picked by order id) kills the
worker in each of its three tasks. Acknowledged on start, each task is simply gone: its
effect is lost and nothing records it. With ``acks_late`` alone Celery acknowledges a task
whose worker died just the same (lost too); with ``task_reject_on_worker_lost`` as well
(this project's setting for its own tasks) it requeues it, and a poison task comes back
forever, killing a pool process each time: nothing counts its attempts.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Optional

from celery import shared_task
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from config.errors import DomainError
from notifications.services import sms_notify_payment
from orders.models import Order
from orders.selectors import order_get
from orders.services import order_mark_paid
from payments.events import PaymentSucceeded
from payments.gateways import get_gateway
from payments.models import PaymentRecord
from points.services import points_award_for_payment
from txbroker.faults import fault_error, fault_point, poison_point

logger = logging.getLogger("harness.naive")

NAIVE_TASKS = ("harness.naive_mark_paid", "harness.naive_award_points", "harness.naive_send_sms")


class NaivePaymentRefused(DomainError):
    """Answered ``{"detail": reason}`` with ``status`` (``config.api.exception_handler``)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status


def naive_payment_pay(
    *, user: AbstractBaseUser, order_id: str, amount: Decimal, payment_method: Optional[str] = None
) -> PaymentRecord:
    """Charge, record the payment, and publish three tasks after the commit."""
    order = order_get(user=user, order_id=order_id)
    if order is None:
        raise NaivePaymentRefused(404, "order not found")
    if amount != order.amount:
        raise NaivePaymentRefused(400, "amount mismatch")
    existing = PaymentRecord.objects.filter(order_id=order_id).first()
    if existing is not None:
        return existing
    if order.status != Order.Status.CREATED:
        raise NaivePaymentRefused(409, f"order is {order.status}")
    gateway = get_gateway()
    result = gateway.charge(
        order_id=order_id,
        amount=order.amount,
        payment_method=payment_method or gateway.default_payment_method,
        idempotency_key=f"naive-{order_id}",
    )
    if not result.approved:
        raise NaivePaymentRefused(402, result.reason or "declined")
    event = PaymentSucceeded(order_id=order_id, user_id=user.pk, amount=order.amount, pay_time=timezone.now())
    with transaction.atomic():
        record = PaymentRecord.objects.create(
            order_id=order_id,
            user_id=user.pk,
            amount=order.amount,
            pay_time=event.pay_time,
            status=PaymentRecord.Status.SUCCESS,
        )
        transaction.on_commit(lambda: _publish(event.as_body()))
    return record


def _publish(body: dict) -> None:
    # The process may die here: committed, not yet published (the outbox problem).
    fault_point("after_local_transaction")
    for task in (naive_mark_paid, naive_award_points, naive_send_sms):
        task.delay(body)


def _run(service, body: dict) -> None:
    event = PaymentSucceeded.from_body(body)
    poison_point(event.order_id)
    # Every naive attempt is a first attempt: there is no retry.
    fault_error("handler_first_attempt_error")
    with transaction.atomic():
        service(event)
        fault_point("handler_before_commit")
    fault_point("handler_after_commit")


@shared_task(name="harness.naive_mark_paid", acks_late=False, ignore_result=True)
def naive_mark_paid(body: dict) -> None:
    _run(lambda e: order_mark_paid(order_id=e.order_id), body)


@shared_task(name="harness.naive_award_points", acks_late=False, ignore_result=True)
def naive_award_points(body: dict) -> None:
    _run(lambda e: points_award_for_payment(order_id=e.order_id, user_id=e.user_id, amount=e.amount), body)


@shared_task(name="harness.naive_send_sms", acks_late=False, ignore_result=True)
def naive_send_sms(body: dict) -> None:
    _run(lambda e: sms_notify_payment(order_id=e.order_id, user_id=e.user_id, amount=e.amount), body)
