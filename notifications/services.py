"""Writes of notifications: the payment SMS, and the user's phone number and its verification."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from notifications import conf
from notifications.backends import SmsError, SmsRejected, get_sms_backend
from notifications.exceptions import (
    SMS_PROVIDER_REFUSED,
    SMS_PROVIDER_UNAVAILABLE,
    PhoneCodeUnsent,
    PhoneRefused,
    PhoneVerificationFailed,
)
from notifications.models import Notification, NotificationProfile, phone_validator
from notifications.selectors import phone_status_of

# Nothing a user typed goes into an SMS verbatim: the order is named by a reference made of
# the last characters of its id, letters, digits and '-' only.
PAYMENT_SMS_TEXT = "Payment of {amount} CNY for order {reference} received. Thank you!"
REFUND_SMS_TEXT = "Your payment of {amount} CNY for order {reference} has been refunded."
ORDER_REFERENCE_LENGTH = 8
PHONE_CODE_TEXT = "Your verification code is {code}. It expires in {minutes} minutes."
SKIPPED_NO_PHONE = "the user has no phone number"
SKIPPED_UNVERIFIED = "the user's phone number is not verified"

NO_CODE_PENDING = "No code is waiting for verification: set the phone number to get one."
CODE_EXPIRED = "The code has expired: set the phone number again to get a new one."
CODE_SPENT = "Too many wrong codes: set the phone number again to get a new one."
CODE_WRONG = "Wrong code."

_NOT_IN_REFERENCE = re.compile(r"[^A-Za-z0-9-]")


def order_reference(order_id: str) -> str:
    """How an SMS names an order: the last 8 letters, digits or '-' of its id (a fixed
    stand-in when the id has none)."""
    return _NOT_IN_REFERENCE.sub("", order_id)[-ORDER_REFERENCE_LENGTH:] or "-"


def sms_notify_payment(*, order_id: str, user_id: int, amount: Decimal) -> Notification:
    """Send the payment SMS of an order, once, and record it (SENT, SKIPPED or FAILED).

    Only to a verified number: without one the notification is SKIPPED, saying why.
    Runs in the consumer's transaction, which also marks the delivery done. A redelivery
    after that transaction committed finds the Notification and sends nothing. A backend
    failure raises: nothing is recorded and the delivery is retried.

    The one window left: the SMS is sent before the transaction commits (an SMS cannot be
    rolled back). If the process dies between the provider accepting the SMS and the
    commit, the delivery is retried and the SMS is sent a second time. At-least-once is
    the best a provider without idempotency keys allows; the README says so too.
    """
    return _sms_notify(order_id=order_id, user_id=user_id, amount=amount, kind=Notification.Kind.PAYMENT)


def sms_notify_refund(*, order_id: str, user_id: int, amount: Decimal) -> Notification:
    """Send the refund SMS of an order, once: the order's second notification (kind
    REFUND), sent, skipped or failed exactly as the payment SMS is."""
    return _sms_notify(order_id=order_id, user_id=user_id, amount=amount, kind=Notification.Kind.REFUND)


_SMS_TEXTS = {Notification.Kind.PAYMENT: PAYMENT_SMS_TEXT, Notification.Kind.REFUND: REFUND_SMS_TEXT}


def _sms_notify(*, order_id: str, user_id: int, amount: Decimal, kind: str) -> Notification:
    existing = Notification.objects.filter(
        order_id=order_id, channel=Notification.Channel.SMS, kind=kind
    ).first()
    if existing is not None:
        return existing
    text = _SMS_TEXTS[kind].format(amount=f"{amount:.2f}", reference=order_reference(order_id))
    phone = phone_status_of(user_id=user_id)
    fields = {
        "order_id": order_id,
        "user_id": user_id,
        "channel": Notification.Channel.SMS,
        "kind": kind,
        "text": text,
    }
    if not phone.verified:
        why = SKIPPED_UNVERIFIED if phone.phone else SKIPPED_NO_PHONE
        return Notification.objects.create(**fields, status=Notification.Status.SKIPPED, detail=why)
    try:
        provider_id = get_sms_backend().send(to=phone.phone, text=text)
    except SmsRejected as exc:
        return Notification.objects.create(
            **fields, recipient=phone.phone, status=Notification.Status.FAILED, detail=str(exc)[:255]
        )
    return Notification.objects.create(
        **fields,
        recipient=phone.phone,
        status=Notification.Status.SENT,
        detail=provider_id[:255],
        sent_at=timezone.now(),
    )


def phone_set(*, user: AbstractBaseUser, phone: str) -> NotificationProfile:
    """Set (or clear, with "") the user's phone number; a new number is unverified and a
    verification code is sent to it (:func:`phone_verify` confirms it).

    Setting the number it already has, verified, changes nothing and sends nothing. The code
    is sent inside the transaction: when the provider fails or refuses the number (raising
    ``SmsError`` / ``SmsRejected``), nothing changes. Codes are random (``secrets``), kept
    only as a keyed hash bound to the user and the number, expire after
    NOTIFICATIONS_PHONE_CODE_TTL seconds and take NOTIFICATIONS_PHONE_CODE_MAX_ATTEMPTS
    wrong guesses. The API throttles how often a user may have one sent.
    """
    if phone:
        phone_validator(phone)
    with transaction.atomic():
        profile, _ = NotificationProfile.objects.select_for_update().get_or_create(user=user)
        if phone == profile.phone and (profile.verified or not phone):
            return profile
        now = timezone.now()
        code = f"{secrets.randbelow(10**6):06d}" if phone else ""
        profile.phone = phone
        profile.phone_verified_at = None
        profile.code_hash = _code_hash(user_id=user.pk, phone=phone, code=code) if phone else ""
        profile.code_expires_at = now + timedelta(seconds=_code_ttl()) if phone else None
        profile.code_attempts = 0
        profile.updated_at = now
        profile.save()
        if phone:
            minutes = max(1, round(_code_ttl() / 60))
            try:
                get_sms_backend().send(to=phone, text=PHONE_CODE_TEXT.format(code=code, minutes=minutes))
            except SmsRejected as exc:
                raise PhoneRefused(SMS_PROVIDER_REFUSED) from exc
            except SmsError as exc:
                raise PhoneCodeUnsent(SMS_PROVIDER_UNAVAILABLE) from exc
    return profile


def phone_verify(*, user: AbstractBaseUser, code: str) -> NotificationProfile:
    """Verify the user's number with the code sent to it; raises
    :class:`PhoneVerificationFailed` (a wrong guess counted) otherwise."""
    with transaction.atomic():
        profile = NotificationProfile.objects.select_for_update().filter(user=user).first()
        failure = _verification_failure(profile, user_id=user.pk, code=code)
        if failure == CODE_WRONG:
            profile.code_attempts += 1
            profile.save(update_fields=["code_attempts"])
        elif failure is None:
            profile.phone_verified_at = timezone.now()
            profile.code_hash, profile.code_expires_at, profile.code_attempts = "", None, 0
            profile.save(update_fields=["phone_verified_at", "code_hash", "code_expires_at", "code_attempts"])
    # Raised after the commit: the wrong guess stays counted.
    if failure is not None:
        raise PhoneVerificationFailed(failure)
    return profile


def phone_set_verified(*, user: AbstractBaseUser, phone: str) -> NotificationProfile:
    """Set the user's number as verified, without a code: for operators (the admin) and the
    project's own tooling (the demo, the chaos and bench loads), who vouch for the number."""
    if phone:
        phone_validator(phone)
    now = timezone.now()
    profile, _ = NotificationProfile.objects.update_or_create(
        user=user,
        defaults={
            "phone": phone,
            "phone_verified_at": now if phone else None,
            "code_hash": "",
            "code_expires_at": None,
            "code_attempts": 0,
            "updated_at": now,
        },
    )
    return profile


def _verification_failure(profile: NotificationProfile | None, *, user_id: int, code: str) -> str | None:
    if profile is None or not profile.code_hash:
        return NO_CODE_PENDING
    if profile.code_attempts >= _max_attempts():
        return CODE_SPENT
    if timezone.now() >= profile.code_expires_at:
        return CODE_EXPIRED
    if not constant_time_compare(
        _code_hash(user_id=user_id, phone=profile.phone, code=code), profile.code_hash
    ):
        return CODE_WRONG
    return None


def _code_hash(*, user_id: int, phone: str, code: str) -> str:
    """A keyed hash (SECRET_KEY): a leaked table does not give the codes away, and a code
    verifies only the user and the number it was sent for."""
    return salted_hmac(
        "notifications.phone_code", f"{user_id}:{phone}:{code}", algorithm="sha256"
    ).hexdigest()


def _code_ttl() -> float:
    return float(conf.setting("NOTIFICATIONS_PHONE_CODE_TTL"))


def _max_attempts() -> int:
    return int(conf.setting("NOTIFICATIONS_PHONE_CODE_MAX_ATTEMPTS"))
