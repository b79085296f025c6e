from __future__ import annotations

from django.urls import path

from harness.api import NaivePaymentCreateApi

app_name = "harness"

urlpatterns = [
    path("payments/", NaivePaymentCreateApi.as_view(), name="naive-payment-create"),
]
