"""The chaos load: each payment is an order created and paid over HTTP, by a client that
retries what a real client retries (no answer, 5xx, "a payment is in progress") for up to a
minute, with the same order id, so a retry is idempotent. A share of the paid orders is then
refunded by its owner (``POST /api/payments/{order_id}/refund/``, retried the same way): some at
once, the moment the payment answers (before its consumers have run: the case ordered
messages exist for), the rest a little later. Every answer is kept for the invariants."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal

from harness.load import ApiClient, ApiUser, amount_pick

# The client retries an order or a payment for this long (a PostgreSQL crash answers 500
# for several seconds), pausing a little longer each time, up to RETRY_PAUSE_MAX.
RETRY_SECONDS = 60.0
RETRY_PAUSE_MAX = 3.0
DECLINE_METHOD = "sim_decline"
APPROVE_METHOD = "sim_approve"


@dataclass
class PaymentPlan:
    order_id: str
    user: ApiUser
    amount: Decimal
    decline: bool
    refund: bool = False
    # Seconds between the payment's answer and the refund request (0: at once).
    refund_after: float = 0.0


@dataclass
class Outcome:
    order_id: str
    user_id: int
    amount: str
    decline: bool
    order_created: bool = False
    final_status: int | None = None  # the last answer to the payment request
    answers: list[int] = field(default_factory=list)  # every answer to the payment request
    detail: str = ""
    refund_requested: bool = False
    refund_final_status: int | None = None
    refund_answers: list[int] = field(default_factory=list)
    refund_detail: str = ""


def plan_payments(
    *,
    count: int,
    users: list[ApiUser],
    tag: str,
    seed: int,
    decline_share: float,
    rounding_share: float,
    refund_share: float = 0.0,
) -> list[PaymentPlan]:
    rng = random.Random(seed)
    plans = []
    for i in range(count):
        amount = amount_pick(rng, rounding_share=rounding_share)
        decline = rng.random() < decline_share
        refund = not decline and rng.random() < refund_share
        # Half of the refunds at once, the rest within three seconds.
        refund_after = 0.0 if rng.random() < 0.5 else round(rng.uniform(0.2, 3.0), 2)
        plans.append(
            PaymentPlan(
                order_id=f"chaos-{tag}-{i:05d}",
                user=users[i % len(users)],
                amount=amount,
                decline=decline,
                refund=refund,
                refund_after=refund_after if refund else 0.0,
            )
        )
    return plans


def _retryable(status: int, body) -> bool:
    if status == 0 or (status >= 500 and status != 502):
        return True
    detail = body.get("detail", "") if isinstance(body, dict) else ""
    return status == 409 and "in progress" in str(detail)


def _refund_retryable(status: int, body) -> bool:
    """No answer, 5xx (a 502 refunded nothing; a 503's refund is recorded later), 202 (made,
    being recorded) and 409 "being refunded" (a process died mid-refund: reconciliation
    finishes it) are asked again; 200/201 and other 4xx are final."""
    if status == 0 or status >= 500 or status == 202:
        return True
    detail = body.get("detail", "") if isinstance(body, dict) else ""
    return status == 409 and "being refunded" in str(detail)


def _retries() -> Iterator[int]:
    """Attempt numbers for RETRY_SECONDS, pausing before each one after the first."""
    deadline = time.monotonic() + RETRY_SECONDS
    attempt = 0
    while True:
        yield attempt
        pause = min(0.2 * (attempt + 1), RETRY_PAUSE_MAX)
        if time.monotonic() + pause > deadline:
            return
        time.sleep(pause)
        attempt += 1


def pay_one(plan: PaymentPlan, *, base_url: str, pay_path: str) -> Outcome:
    client = ApiClient(base_url, plan.user.token, timeout=30)
    outcome = Outcome(plan.order_id, plan.user.user_id, f"{plan.amount:.2f}", plan.decline)
    for _attempt in _retries():
        answer = client.post("/api/orders/", {"order_id": plan.order_id, "amount": f"{plan.amount:.2f}"})
        if answer.status in (201, 409):  # 409: an earlier attempt created it
            outcome.order_created = True
            break
        if answer.status and answer.status < 500:
            outcome.detail = f"order: {answer.status} {answer.body}"
            return outcome
    if not outcome.order_created:
        outcome.detail = "order: no answer after retries"
        return outcome
    payload = {
        "order_id": plan.order_id,
        "amount": f"{plan.amount:.2f}",
        "payment_method": DECLINE_METHOD if plan.decline else APPROVE_METHOD,
    }
    for _attempt in _retries():
        answer = client.post(pay_path, payload)
        outcome.answers.append(answer.status)
        outcome.final_status = answer.status
        outcome.detail = answer.error or (str(answer.body)[:200] if answer.status >= 300 else "")
        if not _retryable(answer.status, answer.body):
            break
    if plan.refund and outcome.final_status in (200, 201):
        _refund(plan, client, outcome)
    return outcome


def _refund(plan: PaymentPlan, client: ApiClient, outcome: Outcome) -> None:
    if plan.refund_after:
        time.sleep(plan.refund_after)  # the planned pause of a client, not a wait for a result
    outcome.refund_requested = True
    path = f"/api/payments/{plan.order_id}/refund/"
    for _attempt in _retries():
        answer = client.post(path, {"reason": "chaos"})
        outcome.refund_answers.append(answer.status)
        outcome.refund_final_status = answer.status
        outcome.refund_detail = answer.error or (str(answer.body)[:200] if answer.status >= 300 else "")
        if not _refund_retryable(answer.status, answer.body):
            break


def run_load(
    plans: list[PaymentPlan],
    *,
    base_url: str,
    pay_path: str,
    concurrency: int,
    progress: Callable[[int, int, Counter], None] | None = None,
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    finals: Counter = Counter()
    lock = threading.Lock()
    step = max(1, len(plans) // 10)

    def one(plan: PaymentPlan) -> None:
        outcome = pay_one(plan, base_url=base_url, pay_path=pay_path)
        with lock:
            outcomes.append(outcome)
            finals[outcome.final_status] += 1
            done = len(outcomes)
            if progress is not None and (done % step == 0 or done == len(plans)):
                progress(done, len(plans), finals)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="chaos-client") as pool:
        list(pool.map(one, plans))
    return outcomes
