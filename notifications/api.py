"""Notifications REST API: the caller's notifications, and their phone number."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications.models import Notification, phone_validator
from notifications.selectors import notification_list, phone_of
from notifications.services import phone_set
from orders.api_common import UNAUTHORIZED, error, field_errors


class NotificationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Notification
        fields = ["order_id", "channel", "recipient", "text", "status", "detail", "sent_at", "created_at"]
        read_only_fields = fields


class NotificationFilterSerializer(serializers.Serializer):
    order_id = serializers.CharField(required=False, max_length=64)


class PhoneSerializer(serializers.Serializer):
    phone = serializers.CharField(
        max_length=16,
        allow_blank=True,
        validators=[phone_validator],
        help_text='E.g. "+8613800138000"; "" clears it.',
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


class PhoneApi(APIView):
    @extend_schema(
        tags=["notifications"],
        summary="The caller's phone number (payment SMS go there)",
        responses={200: PhoneSerializer, 401: UNAUTHORIZED},
    )
    def get(self, request: Request) -> Response:
        return Response({"phone": phone_of(user_id=request.user.pk)})

    @extend_schema(
        tags=["notifications"],
        summary="Set the caller's phone number",
        request=PhoneSerializer,
        responses={200: PhoneSerializer, 400: field_errors(), 401: UNAUTHORIZED},
    )
    def put(self, request: Request) -> Response:
        serializer = PhoneSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            profile = phone_set(user=request.user, phone=serializer.validated_data["phone"])
        except DjangoValidationError as exc:
            raise ValidationError({"phone": exc.messages}) from exc
        return Response({"phone": profile.phone})
