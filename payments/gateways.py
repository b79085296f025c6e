"""Third-party payment gateways, pluggable like Django's EMAIL_BACKEND:
``PAYMENTS_GATEWAY_BACKEND`` names the class.

A backend's ``charge()`` returns a :class:`ChargeResult` (approved, or declined with the
gateway's reason), or raises :class:`GatewayError` when the gateway could not be asked or
answered with an error: the charge was not made.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from django.conf import settings
from django.utils.module_loading import import_string

DEFAULT_BACKEND = "payments.gateways.SimulatedGateway"


class GatewayError(Exception):
    """The gateway could not charge (unreachable, or an error answer)."""


@dataclass(frozen=True)
class ChargeResult:
    approved: bool
    reference: str = ""
    reason: str = ""


@dataclass(frozen=True)
class ChargeCall:
    order_id: str
    amount: Decimal
    payment_method: str
    idempotency_key: str
    result: str


class PaymentGateway:
    """The interface of a gateway backend."""

    #: The ``payment_method`` values this gateway accepts (the API validates against them).
    payment_methods: ClassVar[tuple[str, ...]] = ()
    default_payment_method: ClassVar[str] = ""

    def charge(
        self, *, order_id: str, amount: Decimal, payment_method: str, idempotency_key: str
    ) -> ChargeResult:
        raise NotImplementedError


class SimulatedGateway(PaymentGateway):
    """Approves ``sim_approve``, declines ``sim_decline`` with a reason, raises a gateway
    error for ``sim_error``. Every call is kept in ``SimulatedGateway.calls`` (this
    process only), so tests can count charges."""

    payment_methods = ("sim_approve", "sim_decline", "sim_error")
    default_payment_method = "sim_approve"
    DECLINE_REASON = "card declined by the issuer (simulated)"
    ERROR_REASON = "payment gateway unavailable (simulated)"

    calls: ClassVar[list[ChargeCall]] = []
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def charge(
        self, *, order_id: str, amount: Decimal, payment_method: str, idempotency_key: str
    ) -> ChargeResult:
        result = {"sim_approve": "approved", "sim_decline": "declined"}.get(payment_method, "error")
        with self._lock:
            self.calls.append(ChargeCall(order_id, amount, payment_method, idempotency_key, result))
        if result == "approved":
            return ChargeResult(approved=True, reference=f"SIM-{uuid.uuid4().hex[:16].upper()}")
        if result == "declined":
            return ChargeResult(approved=False, reason=self.DECLINE_REASON)
        raise GatewayError(self.ERROR_REASON)

    @classmethod
    def approved_calls(cls, order_id: str) -> list[ChargeCall]:
        with cls._lock:
            return [c for c in cls.calls if c.order_id == order_id and c.result == "approved"]

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls.calls.clear()


def get_gateway() -> PaymentGateway:
    """An instance of the configured gateway backend."""
    return import_string(getattr(settings, "PAYMENTS_GATEWAY_BACKEND", DEFAULT_BACKEND))()
