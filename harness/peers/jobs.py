"""procrastinate's side of the bench: three jobs per payment, deferred through Django's
connection (so in the payment's transaction), run by ``manage.py procrastinate worker``.

Configured as its documentation says for production: the Django contrib's app and
connector (the worker gets its own psycopg 3 pool), the jobs idempotent (the same services
as the other designs) and retried with an exponential wait when a handler fails.
"""

from __future__ import annotations

from procrastinate import RetryStrategy
from procrastinate.contrib.django import app

from harness.peers.handlers import payment_consume

JOB_TASKS = {
    "orders": "harness.procrastinate_mark_paid",
    "points": "harness.procrastinate_award_points",
    "notifications": "harness.procrastinate_send_sms",
}
_RETRY = RetryStrategy(max_attempts=5, exponential_wait=1)


@app.task(name=JOB_TASKS["orders"], retry=_RETRY)
def procrastinate_mark_paid(body: dict) -> None:
    payment_consume(group="orders", body=body)


@app.task(name=JOB_TASKS["points"], retry=_RETRY)
def procrastinate_award_points(body: dict) -> None:
    payment_consume(group="points", body=body)


@app.task(name=JOB_TASKS["notifications"], retry=_RETRY)
def procrastinate_send_sms(body: dict) -> None:
    payment_consume(group="notifications", body=body)


def payment_jobs_defer(*, body: dict) -> None:
    """Defer the payment's three jobs (call inside its transaction)."""
    for task in (procrastinate_mark_paid, procrastinate_award_points, procrastinate_send_sms):
        task.defer(body=body)
