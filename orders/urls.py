from __future__ import annotations

from django.urls import path

from orders.api import (
    AuthTokenApi,
    AuthTokenRevokeApi,
    OrderCancelApi,
    OrderDetailApi,
    OrderListCreateApi,
)

app_name = "orders"

urlpatterns = [
    path("auth/token/", AuthTokenApi.as_view(), name="auth-token"),
    path("auth/token/revoke/", AuthTokenRevokeApi.as_view(), name="auth-token-revoke"),
    path("orders/", OrderListCreateApi.as_view(), name="order-list"),
    path("orders/<str:order_id>/", OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<str:order_id>/cancel/", OrderCancelApi.as_view(), name="order-cancel"),
]
