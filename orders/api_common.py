"""API pieces shared by the order-payment apps: the money field, the error shapes and
their OpenAPI descriptions. Errors are JSON: ``{"detail": "..."}``, or for invalid input
``{"<field>": ["..."]}`` naming each field."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers, status
from rest_framework.exceptions import APIException

MONEY_MIN = Decimal("0.01")
MONEY_MAX = Decimal("99999999.99")
# Plain ASCII decimals only: Decimal() also takes "1e3", "NaN" and non-ASCII digits.
MONEY_PATTERN = re.compile(r"\A-?[0-9]+(?:\.[0-9]+)?\Z")
MONEY_INVALID = 'A valid amount is required: a decimal string such as "99.00".'


class MoneyField(serializers.DecimalField):
    """An amount of money: a string with at most two decimals, 0.01 to 99,999,999.99 in;
    a string with two decimals out."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("max_digits", 10)
        kwargs.setdefault("decimal_places", 2)
        kwargs.setdefault("min_value", MONEY_MIN)
        kwargs.setdefault("max_value", MONEY_MAX)
        kwargs.setdefault("coerce_to_string", True)
        super().__init__(**kwargs)
        self.error_messages["invalid"] = MONEY_INVALID

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, bool) or not isinstance(data, (str, int, float, Decimal)):
            self.fail("invalid")
        text = str(data)  # not stripped: "  12.00 " is not an amount
        if len(text) > self.MAX_STRING_LENGTH:
            self.fail("max_string_length")
        if not MONEY_PATTERN.match(text):
            self.fail("invalid")
        return super().to_internal_value(text)


class StrictCharField(serializers.CharField):
    """A string, and only a string: DRF's CharField would take 12345 as "12345"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "the request conflicts with the resource's state"
    default_code = "conflict"


class PaymentRequired(APIException):
    status_code = status.HTTP_402_PAYMENT_REQUIRED
    default_detail = "payment declined"
    default_code = "payment_declined"


class BadGateway(APIException):
    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = "the payment gateway failed"
    default_code = "bad_gateway"


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ErrorSerializer, description=description)


def field_errors(
    description: str = "Invalid input: the fields named, each with its messages.",
) -> OpenApiResponse:
    return OpenApiResponse(
        response=OpenApiTypes.OBJECT,
        description=description,
        examples=[
            OpenApiExample(
                "invalid amount", value={"amount": ["Ensure this value is greater than or equal to 0.01."]}
            )
        ],
    )


UNAUTHORIZED = error("No or invalid credentials: send `Authorization: Token <token>` or a session.")
NOT_FOUND = error("Not found, or not the caller's.")
