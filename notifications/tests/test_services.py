"""The payment SMS: once per order, SKIPPED without a phone, FAILED when rejected,
retried (nothing recorded) when the backend fails."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from notifications.backends import FileSmsBackend, SmsError
from notifications.models import Notification
from notifications.services import PAYMENT_SMS_TEXT, SKIPPED_NO_PHONE, phone_set, sms_notify_payment
from notifications.tests.factories import NotificationProfileFactory
from orders.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def notify(user, order_id: str = "O1") -> Notification:
    return sms_notify_payment(order_id=order_id, user_id=user.pk, amount=Decimal("99.00"))


def test_sends_one_sms_and_records_it(sms_outbox):
    profile = NotificationProfileFactory(phone="+8613800138000")

    notification = notify(profile.user)

    assert [(s.to, s.text) for s in sms_outbox] == [
        ("+8613800138000", PAYMENT_SMS_TEXT.format(amount="99.00", order_id="O1"))
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


def test_phone_set_validates_and_clears():
    user = UserFactory()
    assert phone_set(user=user, phone="+8613800138000").phone == "+8613800138000"
    assert phone_set(user=user, phone="").phone == ""
    with pytest.raises(ValidationError):
        phone_set(user=user, phone="call me")
