"""Gateway backends for tests, on top of the simulated one (so its ``calls`` count them and
its books record what it charged: ``lookup`` tells the truth)."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import ClassVar, Optional

from payments.gateways import ChargeResult, GatewayError, SimulatedGateway


class SlowGateway(SimulatedGateway):
    """Takes a while to answer, so that concurrent requests overlap."""

    delay = 0.3

    def charge(
        self, *, order_id: str, amount: Decimal, payment_method: str, idempotency_key: str
    ) -> ChargeResult:
        time.sleep(self.delay)
        return super().charge(
            order_id=order_id, amount=amount, payment_method=payment_method, idempotency_key=idempotency_key
        )


class BlockingGateway(SimulatedGateway):
    """A call in flight until the test sets ``release``: the gateway has not charged yet (its
    lookup finds nothing), then charges and answers. Sets ``entered`` when called."""

    entered = threading.Event()
    release = threading.Event()

    @classmethod
    def arm(cls) -> None:
        cls.entered.clear()
        cls.release.clear()

    def charge(
        self, *, order_id: str, amount: Decimal, payment_method: str, idempotency_key: str
    ) -> ChargeResult:
        self.entered.set()
        if not self.release.wait(timeout=30):
            raise AssertionError("BlockingGateway was never released")
        return super().charge(
            order_id=order_id, amount=amount, payment_method=payment_method, idempotency_key=idempotency_key
        )


class HeldAnswerGateway(BlockingGateway):
    """The gateway charges at once (its lookup knows the answer), but the answer reaches the
    caller only when the test sets ``release``: a slow network on the way back."""

    def charge(
        self, *, order_id: str, amount: Decimal, payment_method: str, idempotency_key: str
    ) -> ChargeResult:
        answer = SimulatedGateway.charge(
            self,
            order_id=order_id,
            amount=amount,
            payment_method=payment_method,
            idempotency_key=idempotency_key,
        )
        self.entered.set()
        if not self.release.wait(timeout=30):
            raise AssertionError("HeldAnswerGateway was never released")
        return answer


class HangingGateway(SimulatedGateway):
    """For a producer process the test kills: the gateway charges (and records it), says so,
    then its answer never comes back (the caller never hears it)."""

    def charge(
        self, *, order_id: str, amount: Decimal, payment_method: str, idempotency_key: str
    ) -> ChargeResult:
        super().charge(
            order_id=order_id, amount=amount, payment_method=payment_method, idempotency_key=idempotency_key
        )
        print(f"gateway charged {idempotency_key}, the answer is held", flush=True)
        threading.Event().wait(timeout=120)  # the test SIGKILLs the process long before
        raise AssertionError("HangingGateway was not killed")


class UnreachableLookupGateway(SimulatedGateway):
    """Charges as the simulated gateway, but cannot be asked about an earlier charge."""

    def lookup(self, *, idempotency_key: str) -> Optional[ChargeResult]:
        raise GatewayError("lookup: payment gateway unavailable (simulated)")


class CountingLookupGateway(SimulatedGateway):
    """Keeps every lookup (this process, all threads), to prove each charge is asked once."""

    lookups: ClassVar[list[str]] = []

    def lookup(self, *, idempotency_key: str) -> Optional[ChargeResult]:
        with self._lock:
            self.lookups.append(idempotency_key)
        return super().lookup(idempotency_key=idempotency_key)


class FailingRefundGateway(SimulatedGateway):
    """Charges as the simulation does; every refund fails (nothing refunded)."""

    def refund(self, *, charge_reference: str, amount: Decimal, idempotency_key: str):
        raise GatewayError("refunds: payment gateway unavailable (simulated)")
