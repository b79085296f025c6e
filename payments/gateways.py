"""Third-party payment gateways, pluggable like Django's EMAIL_BACKEND:
``PAYMENTS_GATEWAY_BACKEND`` names the class.

A backend's ``charge()`` returns a :class:`ChargeResult` (approved, or declined with the
gateway's reason), or raises :class:`GatewayError` when the gateway could not be asked or
answered with an error: the charge was not made.

Its ``lookup()`` answers what became of an earlier charge, by the idempotency key it was
made with: the reconciliation of charges whose process died while the gateway was being
called (``payments.services.charge_reconcile_stale``) relies on it. A real gateway queries
its API by idempotency key (Stripe, Adyen and most others keep them for days).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Optional

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

    def lookup(self, *, idempotency_key: str) -> Optional[ChargeResult]:
        """What the gateway did with the charge made with ``idempotency_key``: its result
        (approved with the same reference as ``charge()`` returned, or declined), or None
        when the gateway never saw it (nothing was charged). Raises :class:`GatewayError`
        when the gateway cannot be asked now."""
        raise NotImplementedError


class SimulatedGateway(PaymentGateway):
    """Approves ``sim_approve``, declines ``sim_decline`` with a reason, raises a gateway
    error for ``sim_error``. Every call is kept in ``SimulatedGateway.calls`` (this
    process only), so tests can count charges.

    Its answers depend on the payment method only, so ``lookup()`` re-derives them in any
    process, from the payment method of the charge the key names (``charge-<id>``, see
    ``Charge.idempotency_key``): approved (same reference, derived from the key) or
    declined; None for ``sim_error`` (an error charges nothing) and for keys it does not
    know. A real gateway would ask its API instead; the simulation has no memory shared
    across processes to ask.
    """

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
            return ChargeResult(approved=True, reference=self.reference_of(idempotency_key))
        if result == "declined":
            return ChargeResult(approved=False, reason=self.DECLINE_REASON)
        raise GatewayError(self.ERROR_REASON)

    def lookup(self, *, idempotency_key: str) -> Optional[ChargeResult]:
        from payments.models import Charge

        charge = Charge.objects.with_idempotency_key(idempotency_key).only("payment_method").first()
        method = charge.payment_method if charge is not None else ""
        if method == "sim_approve":
            return ChargeResult(approved=True, reference=self.reference_of(idempotency_key))
        if method == "sim_decline":
            return ChargeResult(approved=False, reason=self.DECLINE_REASON)
        return None

    @staticmethod
    def reference_of(idempotency_key: str) -> str:
        """The reference of an approved charge: the same for the same key in every process."""
        return "SIM-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16].upper()

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
