from __future__ import annotations

from django.urls import path

from payments.api import PaymentCreateApi, PaymentDetailApi, PaymentRefundApi

app_name = "payments"

urlpatterns = [
    path("payments/", PaymentCreateApi.as_view(), name="payment-create"),
    path("payments/<str:order_id>/", PaymentDetailApi.as_view(), name="payment-detail"),
    path("payments/<str:order_id>/refund/", PaymentRefundApi.as_view(), name="payment-refund"),
]
