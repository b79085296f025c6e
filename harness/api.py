"""The naive baseline's payment endpoint, for the chaos command: the same request as
``POST /api/payments/``, paid by ``naive_payment_pay``. Mounted at ``/api/naive/`` only when
the harness app is installed; never part of the product's API."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.fields import MoneyField
from harness.naive import naive_payment_pay
from payments.api import PaymentRequestSerializer
from payments.models import PaymentRecord


class NaivePaymentResultSerializer(serializers.Serializer):
    order_id = serializers.CharField()
    amount = MoneyField()
    status = serializers.CharField()


class NaivePaymentCreateApi(APIView):
    throttle_scope = "payments"

    @extend_schema(exclude=True)
    def post(self, request: Request) -> Response:
        serializer = PaymentRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        order_id = serializer.validated_data["order_id"]
        existed = PaymentRecord.objects.filter(order_id=order_id).exists()
        record = naive_payment_pay(user=request.user, **serializer.validated_data)
        code = status.HTTP_200_OK if existed else status.HTTP_201_CREATED
        return Response(NaivePaymentResultSerializer(record).data, status=code)
