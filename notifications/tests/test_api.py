from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.utils import timezone

from config.throttling import ScopedRateThrottle
from notifications.api import SMS_PROVIDER_UNAVAILABLE
from notifications.models import Notification, NotificationProfile
from notifications.services import (
    CODE_EXPIRED,
    CODE_SPENT,
    CODE_WRONG,
    NO_CODE_PENDING,
    SKIPPED_UNVERIFIED,
    sms_notify_payment,
)
from orders.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_lists_the_callers_notifications_filtered_by_order(client_for):
    user = UserFactory()
    for order_id in ("A", "B"):
        Notification.objects.create(order_id=order_id, user=user, text="t", status="SKIPPED")
    Notification.objects.create(order_id="A2", user=UserFactory(), text="t", status="SKIPPED")
    client = client_for(user)

    everything = client.get("/api/notifications/").json()
    only_a = client.get("/api/notifications/?order_id=A").json()

    assert everything["count"] == 2
    assert [n["order_id"] for n in only_a["results"]] == ["A"]
    assert set(only_a["results"][0]) == {
        "order_id",
        "kind",
        "channel",
        "recipient",
        "text",
        "status",
        "detail",
        "sent_at",
        "created_at",
    }


def test_another_users_order_shows_no_notifications(client_for):
    Notification.objects.create(order_id="THEIRS", user=UserFactory(), text="t", status="SKIPPED")

    assert client_for(UserFactory()).get("/api/notifications/?order_id=THEIRS").json()["count"] == 0


def test_an_overlong_order_id_filter_is_400_naming_it(client_for):
    response = client_for(UserFactory()).get("/api/notifications/", {"order_id": "x" * 65})

    assert response.status_code == 400
    assert list(response.json()) == ["order_id"]


def test_phone_can_be_set_read_and_validated(client_for):
    client = client_for(UserFactory())

    assert client.get("/api/notifications/phone/").json() == {"phone": "", "verified": False}
    assert (
        client.put("/api/notifications/phone/", {"phone": "+8613800138000"}, format="json").status_code == 200
    )
    assert client.get("/api/notifications/phone/").json() == {"phone": "+8613800138000", "verified": False}
    bad = client.put("/api/notifications/phone/", {"phone": "call me"}, format="json")
    assert bad.status_code == 400
    assert list(bad.json()) == ["phone"]


# --- verification, end to end ---------------------------------------------------------------
PHONE = "/api/notifications/phone/"
VERIFY = "/api/notifications/phone/verify/"


def last_code(sms_outbox, phone: str) -> str:
    texts = [s.text for s in sms_outbox if s.to == phone]
    return re.search(r"\b([0-9]{6})\b", texts[-1]).group(1)


def other_than(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def test_set_then_verify_then_payment_sms_go_to_the_number(client_for, sms_outbox):
    user = UserFactory()
    client = client_for(user)

    set_answer = client.put(PHONE, {"phone": "+8613800138000"}, format="json")
    code = last_code(sms_outbox, "+8613800138000")
    skipped = sms_notify_payment(order_id="BEFORE", user_id=user.pk, amount=Decimal("5.00"))
    verified = client.post(VERIFY, {"code": code}, format="json")
    sent = sms_notify_payment(order_id="AFTER", user_id=user.pk, amount=Decimal("5.00"))

    assert set_answer.json() == {"phone": "+8613800138000", "verified": False}
    assert (skipped.status, skipped.detail) == ("SKIPPED", SKIPPED_UNVERIFIED)
    assert verified.status_code == 200
    assert verified.json() == {"phone": "+8613800138000", "verified": True}
    assert client.get(PHONE).json() == {"phone": "+8613800138000", "verified": True}
    assert sent.status == "SENT"
    assert [s.to for s in sms_outbox] == ["+8613800138000", "+8613800138000"]  # the code, the payment


def test_a_wrong_code_is_400_and_attempts_run_out(client_for, sms_outbox, settings):
    settings.NOTIFICATIONS_PHONE_CODE_MAX_ATTEMPTS = 2
    client = client_for(UserFactory())
    client.put(PHONE, {"phone": "+8613800138000"}, format="json")
    code = last_code(sms_outbox, "+8613800138000")

    answers = [client.post(VERIFY, {"code": other_than(code)}, format="json") for _ in range(2)]
    spent = client.post(VERIFY, {"code": code}, format="json")

    assert [a.status_code for a in answers] == [400, 400]
    assert answers[0].json() == {"code": [CODE_WRONG]}
    assert (spent.status_code, spent.json()) == (400, {"code": [CODE_SPENT]})
    assert client.get(PHONE).json()["verified"] is False


def test_an_expired_code_is_400(client_for, sms_outbox):
    user = UserFactory()
    client = client_for(user)
    client.put(PHONE, {"phone": "+8613800138000"}, format="json")
    NotificationProfile.objects.filter(user=user).update(
        code_expires_at=timezone.now() - timedelta(seconds=1)
    )

    answer = client.post(VERIFY, {"code": last_code(sms_outbox, "+8613800138000")}, format="json")

    assert (answer.status_code, answer.json()) == (400, {"code": [CODE_EXPIRED]})


def test_changing_the_number_unverifies_it_and_the_old_code_is_useless(client_for, sms_outbox):
    client = client_for(UserFactory())
    client.put(PHONE, {"phone": "+8613800138000"}, format="json")
    client.post(VERIFY, {"code": last_code(sms_outbox, "+8613800138000")}, format="json")
    old_code = last_code(sms_outbox, "+8613800138000")

    changed = client.put(PHONE, {"phone": "+8613900139000"}, format="json")
    new_code = last_code(sms_outbox, "+8613900139000")

    assert changed.json() == {"phone": "+8613900139000", "verified": False}
    if old_code != new_code:
        assert client.post(VERIFY, {"code": old_code}, format="json").status_code == 400
    assert client.post(VERIFY, {"code": new_code}, format="json").json()["verified"] is True


@pytest.mark.parametrize("body", [{}, {"code": 123456}, {"code": "12345"}, {"code": "abcdef"}])
def test_a_malformed_code_is_400_naming_it_and_counts_no_attempt(client_for, sms_outbox, body):
    user = UserFactory()
    client = client_for(user)
    client.put(PHONE, {"phone": "+8613800138000"}, format="json")

    answer = client.post(VERIFY, body, format="json")

    assert (answer.status_code, list(answer.json())) == (400, ["code"])
    assert NotificationProfile.objects.get(user=user).code_attempts == 0


def test_verify_without_a_code_waiting_is_400(client_for):
    answer = client_for(UserFactory()).post(VERIFY, {"code": "123456"}, format="json")
    assert (answer.status_code, answer.json()) == (400, {"code": [NO_CODE_PENDING]})


def test_a_number_the_provider_refuses_is_400_and_changes_nothing(client_for, settings):
    settings.NOTIFICATIONS_SMS_BACKEND = "notifications.tests.backends.RejectingSmsBackend"
    client = client_for(UserFactory())

    answer = client.put(PHONE, {"phone": "+8613800138000"}, format="json")

    assert (answer.status_code, list(answer.json())) == (400, ["phone"])
    assert client.get(PHONE).json() == {"phone": "", "verified": False}


def test_sending_codes_is_throttled_per_user(client_for, sms_outbox, monkeypatch):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"phone_code": "2/hour"})
    alice, bob = UserFactory(), UserFactory()
    for user in (alice, bob):
        cache.delete(f"throttle_phone_code_{user.pk}")
    client = client_for(alice)

    codes = [client.put(PHONE, {"phone": "+8613800138000"}, format="json").status_code for _ in range(3)]
    reads = client.get(PHONE).status_code
    other = client_for(bob).put(PHONE, {"phone": "+8613800138000"}, format="json").status_code

    assert codes == [200, 200, 429]
    assert len(sms_outbox) == 3  # two for alice, one for bob
    assert (reads, other) == (200, 200)
    for user in (alice, bob):
        cache.delete(f"throttle_phone_code_{user.pk}")


def test_a_provider_outage_is_503_and_changes_nothing(client_for, settings, tmp_path, monkeypatch):
    settings.NOTIFICATIONS_SMS_BACKEND = "notifications.tests.backends.FlakyFileSmsBackend"
    settings.NOTIFICATIONS_SMS_FILE_PATH = str(tmp_path / "sms.jsonl")
    monkeypatch.setenv("FLAKY_SMS_FAILURES", "1")
    client = client_for(UserFactory())

    answer = client.put(PHONE, {"phone": "+8613800138000"}, format="json")

    assert (answer.status_code, answer.json()) == (503, {"detail": SMS_PROVIDER_UNAVAILABLE})
    assert client.get(PHONE).json() == {"phone": "", "verified": False}
