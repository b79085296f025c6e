"""Gateway backends for tests, on top of the simulated one (so its ``calls`` count them)."""

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
    """Answers only once the test sets ``release``; sets ``entered`` when called."""

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


class HangingGateway(SimulatedGateway):
    """For a producer process the test kills: says it is charging, then never answers
    (the charge is made at the gateway, the caller never hears back)."""

    def charge(
        self, *, order_id: str, amount: Decimal, payment_method: str, idempotency_key: str
    ) -> ChargeResult:
        print(f"gateway charging {idempotency_key}", flush=True)
        threading.Event().wait(timeout=120)  # the test SIGKILLs the process long before
        raise AssertionError("HangingGateway was not killed")


class UnreachableLookupGateway(SimulatedGateway):
    """Charges as the simulated gateway, but cannot be asked about an earlier charge."""

    def lookup(self, *, idempotency_key: str) -> Optional[ChargeResult]:
        raise GatewayError("lookup: payment gateway unavailable (simulated)")


class LateBlockingGateway(BlockingGateway):
    """A blocking charge the gateway has not registered yet: its lookup finds nothing."""

    def lookup(self, *, idempotency_key: str) -> Optional[ChargeResult]:
        return None


class CountingLookupGateway(SimulatedGateway):
    """Keeps every lookup (this process, all threads), to prove each charge is asked once."""

    lookups: ClassVar[list[str]] = []

    def lookup(self, *, idempotency_key: str) -> Optional[ChargeResult]:
        with self._lock:
            self.lookups.append(idempotency_key)
        return super().lookup(idempotency_key=idempotency_key)
