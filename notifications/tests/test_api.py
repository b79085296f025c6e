from __future__ import annotations

import pytest

from notifications.models import Notification
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

    assert client.get("/api/notifications/phone/").json() == {"phone": ""}
    assert (
        client.put("/api/notifications/phone/", {"phone": "+8613800138000"}, format="json").status_code == 200
    )
    assert client.get("/api/notifications/phone/").json() == {"phone": "+8613800138000"}
    bad = client.put("/api/notifications/phone/", {"phone": "call me"}, format="json")
    assert bad.status_code == 400
    assert list(bad.json()) == ["phone"]
