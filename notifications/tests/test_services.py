"""The payment SMS: once per order, SKIPPED without a verified phone, FAILED when rejected,
retried (nothing recorded) when the backend fails, quoting nothing the user chose verbatim.
Phone verification: codes sent, hashed, expiring, with limited attempts."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.utils import timezone

from notifications.backends import FileSmsBackend, SmsError
from notifications.models import Notification, NotificationProfile
from notifications.services import (
    CODE_EXPIRED,
    CODE_SPENT,
    CODE_WRONG,
    NO_CODE_PENDING,
    PAYMENT_SMS_TEXT,
    SKIPPED_NO_PHONE,
    SKIPPED_UNVERIFIED,
    PhoneVerificationFailed,
    order_reference,
    phone_set,
    phone_set_verified,
    phone_verify,
    sms_notify_payment,
)
from notifications.tests.factories import NotificationProfileFactory
from orders.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def notify(user, order_id: str = "O1") -> Notification:
    return sms_notify_payment(order_id=order_id, user_id=user.pk, amount=Decimal("99.00"))


def test_sends_one_sms_and_records_it(sms_outbox):
    profile = NotificationProfileFactory(phone="+8613800138000")

    notification = notify(profile.user)

    assert [(s.to, s.text) for s in sms_outbox] == [
        ("+8613800138000", PAYMENT_SMS_TEXT.format(amount="99.00", reference="O1"))
    ]
    assert (notification.status, notification.recipient, notification.detail) == (
        "SENT",
        "+8613800138000",
        sms_outbox[0].provider_id,
    )
    assert notification.sent_at is not None


def test_a_redelivery_after_the_record_committed_sends_nothing(sms_outbox):
    profile = NotificationProfileFactory()

    first = notify(profile.user)
    second = notify(profile.user)

    assert first == second
    assert len(sms_outbox) == 1
    assert Notification.objects.count() == 1


def test_a_user_without_a_phone_number_gets_a_skipped_record(sms_outbox):
    user = UserFactory()

    notification = notify(user)

    assert (notification.status, notification.recipient, notification.detail) == (
        "SKIPPED",
        "",
        SKIPPED_NO_PHONE,
    )
    assert sms_outbox == []


def test_a_rejected_number_is_recorded_failed_and_not_retried(settings):
    settings.NOTIFICATIONS_SMS_BACKEND = "notifications.tests.backends.RejectingSmsBackend"
    profile = NotificationProfileFactory()

    notification = notify(profile.user)

    assert notification.status == "FAILED"
    assert "rejected" in notification.detail


def test_a_backend_failure_raises_and_records_nothing(settings, tmp_path, monkeypatch):
    settings.NOTIFICATIONS_SMS_BACKEND = "notifications.tests.backends.FlakyFileSmsBackend"
    settings.NOTIFICATIONS_SMS_FILE_PATH = str(tmp_path / "sms.jsonl")
    monkeypatch.setenv("FLAKY_SMS_FAILURES", "1")
    profile = NotificationProfileFactory()

    with pytest.raises(SmsError):
        notify(profile.user)
    assert not Notification.objects.exists()

    assert notify(profile.user).status == "SENT"
    assert len(FileSmsBackend.read(tmp_path / "sms.jsonl")) == 1


def test_one_notification_per_order_and_channel_in_the_database():
    user = UserFactory()
    Notification.objects.create(order_id="O1", user=user, text="t", status="SKIPPED")
    with pytest.raises(IntegrityError):
        Notification.objects.create(order_id="O1", user=user, text="t", status="SKIPPED")


def test_phone_set_validates_and_clears(sms_outbox):
    user = UserFactory()
    assert phone_set(user=user, phone="+8613800138000").phone == "+8613800138000"
    assert phone_set(user=user, phone="").phone == ""
    with pytest.raises(ValidationError):
        phone_set(user=user, phone="call me")
    assert [s.to for s in sms_outbox] == ["+8613800138000"]  # a code; none to "" or a bad number


# --- what the payment SMS says -----------------------------------------------------------
@pytest.mark.parametrize(
    ("order_id", "reference"),
    [
        ("O1", "O1"),
        ("ORD-0123456789ABCDEF01234567", "01234567"),
        ("Call_+1-555_now_FREE_prize_at_evil_example_com" + "_" * 10, "amplecom"),
        ("____", "-"),
    ],
)
def test_order_reference_is_short_and_plain(order_id, reference):
    assert order_reference(order_id) == reference


def test_the_sms_quotes_no_user_chosen_order_id_verbatim(sms_outbox):
    profile = NotificationProfileFactory()
    order_id = "Your_account_is_locked-call_555-0100_now-" + "x" * 23

    sms_notify_payment(order_id=order_id, user_id=profile.user.pk, amount=Decimal("1.00"))

    (sms,) = sms_outbox
    assert order_id not in sms.text
    assert "call" not in sms.text and "locked" not in sms.text
    assert sms.text == "Payment of 1.00 CNY for order xxxxxxxx received. Thank you!"


# --- unverified numbers --------------------------------------------------------------------
def test_an_unverified_number_gets_no_payment_sms_and_a_skipped_record_saying_why(sms_outbox):
    profile = NotificationProfileFactory(unverified=True)

    notification = notify(profile.user)

    assert (notification.status, notification.recipient, notification.detail) == (
        "SKIPPED",
        "",
        SKIPPED_UNVERIFIED,
    )
    assert sms_outbox == []
    assert notify(profile.user) == notification  # still one per order


# --- verification ----------------------------------------------------------------------------
def code_sent(sms_outbox, phone: str) -> str:
    (sms,) = [s for s in sms_outbox if s.to == phone]
    return re.search(r"\b([0-9]{6})\b", sms.text).group(1)


def test_setting_a_number_sends_a_random_code_kept_only_hashed(sms_outbox):
    user = UserFactory()

    profile = phone_set(user=user, phone="+8613800138000")

    code = code_sent(sms_outbox, "+8613800138000")
    assert sms_outbox[0].text == f"Your verification code is {code}. It expires in 10 minutes."
    assert not profile.verified
    assert code not in profile.code_hash and len(profile.code_hash) == 64
    assert profile.code_expires_at > timezone.now() + timedelta(minutes=9)


def test_the_right_code_verifies_the_number_and_payment_sms_go_to_it(sms_outbox):
    user = UserFactory()
    phone_set(user=user, phone="+8613800138000")

    profile = phone_verify(user=user, code=code_sent(sms_outbox, "+8613800138000"))

    assert profile.verified
    assert profile.code_hash == ""
    assert notify(user).status == "SENT"
    with pytest.raises(PhoneVerificationFailed, match=NO_CODE_PENDING):  # a code works once
        phone_verify(user=user, code="000000")


def test_a_wrong_code_is_counted_and_the_code_is_spent_after_the_maximum(settings, sms_outbox):
    settings.NOTIFICATIONS_PHONE_CODE_MAX_ATTEMPTS = 3
    user = UserFactory()
    phone_set(user=user, phone="+8613800138000")
    code = code_sent(sms_outbox, "+8613800138000")
    wrong = f"{(int(code) + 1) % 10**6:06d}"

    for _ in range(3):
        with pytest.raises(PhoneVerificationFailed, match=CODE_WRONG):
            phone_verify(user=user, code=wrong)
    with pytest.raises(PhoneVerificationFailed, match=CODE_SPENT):
        phone_verify(user=user, code=code)  # even the right one

    assert NotificationProfile.objects.get(user=user).code_attempts == 3
    assert not phone_set(user=user, phone="+8613800138000").verified  # again: a new code
    assert phone_verify(user=user, code=code_sent(sms_outbox[1:], "+8613800138000")).verified


def test_an_expired_code_is_refused():
    user = UserFactory()
    phone_set(user=user, phone="+8613800138000")
    NotificationProfile.objects.filter(user=user).update(
        code_expires_at=timezone.now() - timedelta(seconds=1)
    )

    with pytest.raises(PhoneVerificationFailed, match=CODE_EXPIRED):
        phone_verify(user=user, code="123456")


def test_a_code_verifies_only_the_number_it_was_sent_to(sms_outbox):
    user = UserFactory()
    phone_set(user=user, phone="+8613800138000")
    first_code = code_sent(sms_outbox, "+8613800138000")
    phone_set(user=user, phone="+8613900139000")
    second_code = code_sent(sms_outbox, "+8613900139000")

    if first_code != second_code:
        with pytest.raises(PhoneVerificationFailed, match=CODE_WRONG):
            phone_verify(user=user, code=first_code)
    assert phone_verify(user=user, code=second_code).phone == "+8613900139000"


def test_changing_a_verified_number_unverifies_it_and_setting_it_again_does_nothing(sms_outbox):
    profile = NotificationProfileFactory(phone="+8613800138000")

    assert phone_set(user=profile.user, phone="+8613800138000").verified  # the same: unchanged
    assert sms_outbox == []
    changed = phone_set(user=profile.user, phone="+8613900139000")

    assert not changed.verified
    assert notify(profile.user).status == "SKIPPED"
    assert [s.to for s in sms_outbox] == ["+8613900139000"]


def test_nothing_changes_when_the_code_cannot_be_sent(settings, tmp_path, monkeypatch):
    profile = NotificationProfileFactory(phone="+8613800138000")
    settings.NOTIFICATIONS_SMS_BACKEND = "notifications.tests.backends.FlakyFileSmsBackend"
    settings.NOTIFICATIONS_SMS_FILE_PATH = str(tmp_path / "sms.jsonl")
    monkeypatch.setenv("FLAKY_SMS_FAILURES", "1")

    with pytest.raises(SmsError):
        phone_set(user=profile.user, phone="+8613900139000")

    profile.refresh_from_db()
    assert (profile.phone, profile.verified) == ("+8613800138000", True)


def test_operators_set_numbers_verified():
    user = UserFactory()
    assert phone_set_verified(user=user, phone="+8613800138000").verified
    assert not phone_set_verified(user=user, phone="").verified


def test_a_verified_profile_has_a_number_in_the_database():
    profile = NotificationProfileFactory()
    with pytest.raises(IntegrityError):
        NotificationProfile.objects.filter(pk=profile.pk).update(phone="")
