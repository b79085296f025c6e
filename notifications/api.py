"""Notifications REST API: the caller's notifications, and their phone number with its
verification (payment SMS go to a verified number only)."""

from __future__ import annotations

from django.core.validators import RegexValidator
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import UNAUTHORIZED, error, field_errors
from config.fields import StrictCharField
from notifications.exceptions import SMS_PROVIDER_UNAVAILABLE
from notifications.models import Notification, phone_validator
from notifications.selectors import notification_list, phone_status_of
from notifications.services import phone_set, phone_verify


class NotificationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Notification
        fields = [
            "order_id",
            "kind",
            "channel",
            "recipient",
            "text",
            "status",
            "detail",
            "sent_at",
            "created_at",
        ]
        read_only_fields = fields


class NotificationFilterSerializer(serializers.Serializer):
    order_id = serializers.CharField(required=False, max_length=64)


class PhoneSerializer(serializers.Serializer):
    phone = serializers.CharField(
        max_length=16,
        allow_blank=True,
        validators=[phone_validator],
        help_text='E.g. "+8613800138000"; "" clears it. A new number gets a verification code by SMS.',
    )
    verified = serializers.BooleanField(
        read_only=True, help_text="Verified with its code: payment SMS go only to a verified number."
    )


class PhoneCodeSerializer(serializers.Serializer):
    code = StrictCharField(
        validators=[RegexValidator(r"\A[0-9]{6}\Z", "6 digits.")], help_text="The 6-digit code sent by SMS."
    )


class NotificationListApi(GenericAPIView):
    serializer_class = NotificationSerializer

    @extend_schema(
        tags=["notifications"],
        summary="The caller's notifications, newest first",
        parameters=[OpenApiParameter("order_id", str, description="Only this order's notifications.")],
        responses={
            200: NotificationSerializer(many=True),
            400: field_errors(),
            401: UNAUTHORIZED,
            404: error("No such page."),
        },
    )
    def get(self, request: Request) -> Response:
        filters = NotificationFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        notifications = notification_list(user=request.user, order_id=filters.validated_data.get("order_id"))
        page = self.paginate_queryset(notifications)
        return self.get_paginated_response(NotificationSerializer(page, many=True).data)


def phone_body(user_id: int) -> dict:
    status = phone_status_of(user_id=user_id)
    return {"phone": status.phone, "verified": status.verified}


class PhoneApi(APIView):
    # Setting a number sends an SMS: DJANGO_THROTTLE_PHONE_CODE_RATE per user (PUT only).
    throttle_scope = "phone_code"

    def get_throttles(self):
        return super().get_throttles() if self.request.method == "PUT" else []

    @extend_schema(
        tags=["notifications"],
        summary="The caller's phone number (payment SMS go there once it is verified)",
        responses={200: PhoneSerializer, 401: UNAUTHORIZED},
    )
    def get(self, request: Request) -> Response:
        return Response(phone_body(request.user.pk))

    @extend_schema(
        tags=["notifications"],
        summary="Set the caller's phone number; a new number gets a verification code by SMS",
        description="The number is unverified until `POST /api/notifications/phone/verify/` "
        "confirms the code; setting the verified number again changes nothing, setting the "
        "unverified one again sends a new code. Throttled per user (429: "
        "DJANGO_THROTTLE_PHONE_CODE_RATE).",
        request=PhoneSerializer,
        responses={
            200: PhoneSerializer,
            400: field_errors(),
            401: UNAUTHORIZED,
            503: error(SMS_PROVIDER_UNAVAILABLE),
        },
    )
    def put(self, request: Request) -> Response:
        serializer = PhoneSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        phone_set(user=request.user, phone=serializer.validated_data["phone"])
        return Response(phone_body(request.user.pk))


class PhoneVerifyApi(APIView):
    @extend_schema(
        tags=["notifications"],
        summary="Verify the caller's phone number with the code sent to it",
        description="A code lasts NOTIFICATIONS_PHONE_CODE_TTL seconds (10 minutes) and takes "
        "NOTIFICATIONS_PHONE_CODE_MAX_ATTEMPTS wrong guesses (5); then set the number again.",
        request=PhoneCodeSerializer,
        responses={
            200: PhoneSerializer,
            400: field_errors("`code`: wrong, expired, spent, or none waiting; or an invalid body."),
            401: UNAUTHORIZED,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = PhoneCodeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        phone_verify(user=request.user, code=serializer.validated_data["code"])
        return Response(phone_body(request.user.pk))
