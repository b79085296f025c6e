"""Writes of notifications: the payment SMS, and the user's phone number."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from notifications.backends import SmsRejected, get_sms_backend
from notifications.models import Notification, NotificationProfile, phone_validator
from notifications.selectors import phone_of

PAYMENT_SMS_TEXT = "Payment of {amount} CNY for order {order_id} received. Thank you!"
SKIPPED_NO_PHONE = "the user has no phone number"


def sms_notify_payment(*, order_id: str, user_id: int, amount: Decimal) -> Notification:
    """Send the payment SMS of an order, once, and record it (SENT, SKIPPED or FAILED).

    Runs in the consumer's transaction, which also marks the delivery done. A redelivery
    after that transaction committed finds the Notification and sends nothing. A backend
    failure raises: nothing is recorded and the delivery is retried.

    The one window left: the SMS is sent before the transaction commits (an SMS cannot be
    rolled back). If the process dies between the provider accepting the SMS and the
    commit, the delivery is retried and the SMS is sent a second time. At-least-once is
    the best a provider without idempotency keys allows; the README says so too.
    """
    existing = Notification.objects.filter(order_id=order_id, channel=Notification.Channel.SMS).first()
    if existing is not None:
        return existing
    text = PAYMENT_SMS_TEXT.format(amount=f"{amount:.2f}", order_id=order_id)
    phone = phone_of(user_id=user_id)
    fields = {"order_id": order_id, "user_id": user_id, "channel": Notification.Channel.SMS, "text": text}
    if not phone:
        return Notification.objects.create(
            **fields, status=Notification.Status.SKIPPED, detail=SKIPPED_NO_PHONE
        )
    try:
        provider_id = get_sms_backend().send(to=phone, text=text)
    except SmsRejected as exc:
        return Notification.objects.create(
            **fields, recipient=phone, status=Notification.Status.FAILED, detail=str(exc)[:255]
        )
    return Notification.objects.create(
        **fields,
        recipient=phone,
        status=Notification.Status.SENT,
        detail=provider_id[:255],
        sent_at=timezone.now(),
    )


def phone_set(*, user: AbstractBaseUser, phone: str) -> NotificationProfile:
    """Set (or clear, with "") the user's phone number."""
    if phone:
        phone_validator(phone)
    profile, _ = NotificationProfile.objects.update_or_create(
        user=user, defaults={"phone": phone, "updated_at": timezone.now()}
    )
    return profile
