"""Refund reconciliation: refunds a process left between its steps, finished.

A refund (``payments.refunds``) is claimed PENDING, refunded at the gateway (APPROVED), then
recorded REFUNDED by its message's local transaction. A web process killed or frozen in
between leaves it PENDING or APPROVED, and its owner's retries answer 409 (being refunded)
until someone finishes it. Each run of the charge reconciliation task (and
``manage.py payments_reconcile``) also leases the refunds left so for more than
PAYMENTS_CHARGE_RECONCILE_AFTER seconds (database time) and finishes each one as its process
would have (``refund_complete``): the gateway call again with the same idempotency key, then
the refund message. Whatever runs twice is harmless: the gateway answers a key it has seen,
and only one refund message can record the refund (the others roll back).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from django.db import transaction

from payments import conf
from payments.refunds import refund_complete, refunds_lease

logger = logging.getLogger("payments")

REFUND_RECONCILE_INSIDE_ATOMIC = (
    "refund_reconcile_stale() was called inside transaction.atomic(): call it outside any transaction"
)


@dataclass
class RefundReconcileReport:
    examined: int = 0
    outcomes: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        if not self.examined:
            return "no refund left unfinished"
        done = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(self.outcomes.items()))
        return f"{self.examined} unfinished refund{'s' if self.examined != 1 else ''}: {done}"

    def as_dict(self) -> dict[str, Any]:
        return {"examined": self.examined, "outcomes": dict(self.outcomes)}


def refund_reconcile_stale(
    *, older_than: Optional[float] = None, batch_size: Optional[int] = None
) -> RefundReconcileReport:
    """Finish the refunds left PENDING or APPROVED for more than ``older_than`` seconds
    (default PAYMENTS_CHARGE_RECONCILE_AFTER). Must be called outside any transaction."""
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError(REFUND_RECONCILE_INSIDE_ATOMIC)
    older_than = conf.seconds("PAYMENTS_CHARGE_RECONCILE_AFTER") if older_than is None else older_than
    batch_size = batch_size or int(conf.setting("PAYMENTS_CHARGE_RECONCILE_BATCH_SIZE"))
    report = RefundReconcileReport()
    while True:
        refunds = refunds_lease(older_than=older_than, batch_size=batch_size)
        for refund in refunds:
            report.examined += 1
            outcome = refund_complete(refund=refund)
            report.outcomes[outcome] += 1
            logger.warning(
                "refund reconciliation: the refund of order %s was left %s: %s",
                refund.order_id,
                refund.status,
                outcome.replace("_", " "),
            )
        if len(refunds) < batch_size:
            return report
