"""Gateway backends for tests, on top of the simulated one (so its ``calls`` count them)."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

from payments.gateways import ChargeResult, SimulatedGateway


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
