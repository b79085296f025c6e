from __future__ import annotations

from django.urls import path

from notifications.api import NotificationListApi, PhoneApi, PhoneVerifyApi

app_name = "notifications"

urlpatterns = [
    path("notifications/", NotificationListApi.as_view(), name="notification-list"),
    path("notifications/phone/", PhoneApi.as_view(), name="phone"),
    path("notifications/phone/verify/", PhoneVerifyApi.as_view(), name="phone-verify"),
]
