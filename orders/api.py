"""Orders REST API, and the token endpoint. Thin views: validate, call one service,
serialize."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import NOT_FOUND, UNAUTHORIZED, error, field_errors
from config.fields import MoneyField, StrictCharField
from config.logins import LoginLockedOut, login_locked_out
from config.tokens import token_expires_at, token_issue, token_revoke
from orders.exceptions import ORDER_NOT_FOUND
from orders.models import Order, order_id_validator
from orders.selectors import order_get, order_list
from orders.services import order_cancel, order_create


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()
    expires_at = serializers.DateTimeField(
        help_text="When the token stops working (DJANGO_TOKEN_TTL after it was issued); "
        "ask this endpoint again for a new one."
    )


class TokenRequestSerializer(AuthTokenSerializer):
    # Bounded: a username longer than any user's is no login, and hashing a huge password
    # is work an attacker should not get for free.
    username = serializers.CharField(label="Username", max_length=150, write_only=True)
    password = serializers.CharField(
        label="Password",
        max_length=4096,
        style={"input_type": "password"},
        trim_whitespace=False,
        write_only=True,
    )


class AuthTokenApi(APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)
    throttle_scope = "auth_token"  # password guessing: DJANGO_THROTTLE_AUTH_TOKEN_RATE

    @extend_schema(
        tags=["auth"],
        summary="Get the API token of a user",
        description="The token works until `expires_at` (`DJANGO_TOKEN_TTL` after it was issued) "
        "or until it is revoked; asking again while it works returns the same token. Failed "
        "logins lock out the client address and the username (429) for a while, whatever the "
        "password; requests per address are limited too (429).",
        request=TokenRequestSerializer,
        responses={
            200: TokenSerializer,
            400: field_errors("Missing fields, or wrong credentials."),
            429: error(
                "Too many requests from this address, or too many failed logins from this address "
                "or for this username (see Retry-After)."
            ),
            503: error("The rate limiter cannot be reached: logins are refused until it is back."),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = TokenRequestSerializer(data=request.data, context={"request": request})
        if not serializer.is_valid():
            if login_locked_out(request):
                raise LoginLockedOut()
            raise ValidationError(serializer.errors)
        token = token_issue(user=serializer.validated_data["user"])
        return Response({"token": token.key, "expires_at": token_expires_at(token)})


class AuthTokenRevokeApi(APIView):
    @extend_schema(
        tags=["auth"],
        summary="Revoke the caller's API token",
        description="The token stops working at once (204 also when there was none); "
        "`POST /api/auth/token/` issues a new one.",
        request=None,
        responses={204: None, 401: UNAUTHORIZED},
    )
    def post(self, request: Request) -> Response:
        token_revoke(user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class OrderSerializer(serializers.ModelSerializer):
    amount = MoneyField()

    class Meta:
        model = Order
        fields = ["order_id", "user_id", "amount", "status", "created_at", "updated_at"]
        read_only_fields = fields


class OrderCreateSerializer(serializers.Serializer):
    amount = MoneyField()
    order_id = StrictCharField(
        required=False,
        max_length=64,
        validators=[order_id_validator],
        help_text="1-64 letters, digits, '_' or '-', unique across all users' orders; "
        "generated (unguessable) when absent.",
    )


class OrderListCreateApi(GenericAPIView):
    serializer_class = OrderSerializer
    # Creation only, per user (DJANGO_THROTTLE_ORDERS_RATE): order ids are global, so this
    # also bounds how many a user can take.
    throttle_scope = "orders"

    def get_throttles(self):
        return super().get_throttles() if self.request.method == "POST" else []

    def get_queryset(self):
        return order_list(user=self.request.user)

    @extend_schema(
        tags=["orders"],
        summary="The caller's orders, newest first",
        responses={200: OrderSerializer(many=True), 401: UNAUTHORIZED, 404: error("No such page.")},
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(OrderSerializer(page, many=True).data)

    @extend_schema(
        tags=["orders"],
        summary="Create an order",
        description="`order_id` is one global business key (it keys every message about the "
        "order), not one per user: an id that any order has, the caller's or another user's, "
        "is refused with 409. Omit it to get a generated, unguessable one. Creation is "
        "limited per user (429). An order still unpaid `ORDERS_PAYMENT_TIMEOUT` seconds "
        "(30 minutes by default) after its creation is CANCELLED, and can no longer be paid.",
        request=OrderCreateSerializer,
        responses={
            201: OrderSerializer,
            400: field_errors(),
            401: UNAUTHORIZED,
            409: field_errors(
                "The order_id is taken, by any user's order: ids are global (the error names "
                "the order_id field)."
            ),
            429: error("Too many orders created by this user (see Retry-After)."),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = OrderCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        order = order_create(user=request.user, **serializer.validated_data)
        return Response(OrderSerializer(order).data, status=status.HTTP_201_CREATED)


def _own_order(user: AbstractBaseUser, order_id: str) -> Order:
    order = order_get(user=user, order_id=order_id)
    if order is None:
        raise NotFound(ORDER_NOT_FOUND)
    return order


class OrderDetailApi(APIView):
    @extend_schema(
        tags=["orders"],
        summary="One of the caller's orders",
        responses={200: OrderSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
    )
    def get(self, request: Request, order_id: str) -> Response:
        return Response(OrderSerializer(_own_order(request.user, order_id)).data)


class OrderCancelApi(APIView):
    @extend_schema(
        tags=["orders"],
        summary="Cancel a CREATED order",
        description="Refused (409) once a payment for the order has started or succeeded: "
        "a cancel racing a payment is settled by the order row lock, never both.",
        request=None,
        responses={
            200: OrderSerializer,
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            409: error("The order is not CREATED, or a payment has started."),
        },
    )
    def post(self, request: Request, order_id: str) -> Response:
        order = order_cancel(user=request.user, order_id=order_id)
        return Response(OrderSerializer(order).data)
