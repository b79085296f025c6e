"""The API's shared serializer fields: amounts of money and strict strings."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from rest_framework import serializers

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
