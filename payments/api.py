"""Payments REST API. Thin views: validate, call one service, serialize."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import NOT_FOUND, UNAUTHORIZED, error, field_errors
from config.fields import MoneyField, StrictCharField
from orders.models import order_id_validator
from payments.gateways import get_gateway
from payments.models import PaymentRecord
from payments.refunds import refund_order
from payments.selectors import payment_record_get
from payments.services import payment_pay

PAYMENT_NOT_FOUND = "payment not found"


class PaymentRequestSerializer(serializers.Serializer):
    order_id = StrictCharField(max_length=64, validators=[order_id_validator])
    amount = MoneyField(help_text='Must equal the order\'s amount, e.g. "99.00".')
    payment_method = StrictCharField(
        required=False,
        max_length=32,
        help_text='The simulated gateway knows "sim_approve" (default), "sim_decline" and "sim_error".',
    )

    def validate_payment_method(self, value: str) -> str:
        methods = get_gateway().payment_methods
        if methods and value not in methods:
            raise ValidationError(f"must be one of: {', '.join(methods)}")
        return value


class PaymentResultSerializer(serializers.Serializer):
    order_id = serializers.CharField()
    amount = MoneyField()
    status = serializers.CharField(help_text="SUCCESS, or PENDING while check-back settles it.")
    message_id = serializers.CharField(help_text="The transactional message carrying the payment.")
    transaction_state = serializers.CharField(help_text="The local transaction's answer: COMMIT or UNKNOWN.")


class PaymentRecordSerializer(serializers.ModelSerializer):
    amount = MoneyField()

    class Meta:
        model = PaymentRecord
        fields = ["order_id", "user_id", "amount", "pay_time", "status", "message_id", "created_at"]
        read_only_fields = fields


class PaymentCreateApi(APIView):
    throttle_scope = "payments"  # DJANGO_THROTTLE_PAYMENTS_RATE

    @extend_schema(
        tags=["payments"],
        summary="Pay an order",
        description=(
            "Charges the gateway, then records the payment in the local transaction of a "
            "transactional message (payment_success_topic, tag pay, key = order id) whose "
            "consumers mark the order PAID, award the points and send the SMS. Idempotent: "
            "repeating a successful payment answers 200 with the same body and charges nothing."
        ),
        request=PaymentRequestSerializer,
        responses={
            201: PaymentResultSerializer,
            200: OpenApiResponse(
                PaymentResultSerializer, description="Already paid: the same body, no charge."
            ),
            202: OpenApiResponse(
                PaymentResultSerializer,
                description="The local transaction answered UNKNOWN: status PENDING, settled by check-back.",
            ),
            400: field_errors("Invalid input, or an amount that is not the order's."),
            401: UNAUTHORIZED,
            402: error("The gateway declined the payment; its reason is the detail."),
            404: NOT_FOUND,
            409: error("The order is not payable (cancelled, or a payment is in progress)."),
            502: error("The payment gateway failed; nothing was charged."),
            503: error("The payment could not be completed; the charge is marked for refund."),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = PaymentRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        outcome = payment_pay(user=request.user, **serializer.validated_data)
        if outcome.transaction_state != "COMMIT":
            code = status.HTTP_202_ACCEPTED
        else:
            code = status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK
        return Response(PaymentResultSerializer(outcome).data, status=code)


class PaymentDetailApi(APIView):
    @extend_schema(
        tags=["payments"],
        summary="The payment record of one of the caller's orders",
        responses={200: PaymentRecordSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
    )
    def get(self, request: Request, order_id: str) -> Response:
        record = payment_record_get(user=request.user, order_id=order_id)
        if record is None:
            raise NotFound(PAYMENT_NOT_FOUND)
        return Response(PaymentRecordSerializer(record).data)


class RefundRequestSerializer(serializers.Serializer):
    reason = StrictCharField(required=False, allow_blank=True, max_length=255)


class RefundResultSerializer(serializers.Serializer):
    order_id = serializers.CharField()
    amount = MoneyField()
    status = serializers.CharField(help_text="REFUNDED, or APPROVED while check-back records it.")
    message_id = serializers.CharField(help_text="The transactional message carrying the refund.")


class PaymentRefundApi(APIView):
    throttle_scope = "payments"  # DJANGO_THROTTLE_PAYMENTS_RATE

    @extend_schema(
        tags=["payments"],
        summary="Refund the payment of an order",
        description=(
            "Refunds the charge through the gateway, then records the refund in the local "
            "transaction of a transactional message (payment_success_topic, tag refund, key and "
            "message group = order id, the payment message's group: every consumer group sees the "
            "payment first) whose consumers mark the order REFUNDED, take the points back and send "
            "the refund SMS. Allowed once the payment is recorded. Idempotent: a repeat answers 200 "
            "with the same body and refunds nothing."
        ),
        request=RefundRequestSerializer,
        responses={
            201: RefundResultSerializer,
            200: OpenApiResponse(RefundResultSerializer, description="Already refunded: the same body."),
            202: OpenApiResponse(
                RefundResultSerializer,
                description="The local transaction answered UNKNOWN: status APPROVED, recorded by check-back.",
            ),
            400: field_errors("Invalid input."),
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            409: error("The order has no recorded payment, or is being refunded."),
            502: error("The payment gateway failed; nothing was refunded or changed."),
            503: error("The refund was made but its message could not be sent; it is recorded later."),
        },
    )
    def post(self, request: Request, order_id: str) -> Response:
        serializer = RefundRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        outcome = refund_order(user=request.user, order_id=order_id, **serializer.validated_data)
        if outcome.status != "REFUNDED":
            code = status.HTTP_202_ACCEPTED
        else:
            code = status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK
        return Response(RefundResultSerializer(outcome).data, status=code)
