"""The admin: an operator sets a user's number and vouches for it (saved verified)."""

from __future__ import annotations

import pytest

from notifications.models import NotificationProfile
from notifications.tests.factories import NotificationProfileFactory
from orders.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_an_operator_sets_a_number_verified_and_no_code_is_sent(admin_client, sms_outbox):
    user = UserFactory()

    response = admin_client.post(
        "/admin/notifications/notificationprofile/add/", {"user": user.pk, "phone": "+8613800138000"}
    )

    assert response.status_code == 302, response.content[:500]
    profile = NotificationProfile.objects.get(user=user)
    assert (profile.phone, profile.verified) == ("+8613800138000", True)
    assert sms_outbox == []


def test_an_operator_changes_a_number_and_clears_it(admin_client):
    profile = NotificationProfileFactory(unverified=True)
    url = f"/admin/notifications/notificationprofile/{profile.pk}/change/"

    assert admin_client.post(url, {"phone": "+8613900139000"}).status_code == 302
    profile.refresh_from_db()
    assert (profile.phone, profile.verified, profile.code_hash) == ("+8613900139000", True, "")
    assert admin_client.post(url, {"phone": ""}).status_code == 302
    profile.refresh_from_db()
    assert (profile.phone, profile.verified) == ("", False)
