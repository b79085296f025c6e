"""django-celery-outbox's side of the bench: its Celery app, the three consumer tasks.

``app`` is an ``OutboxCelery``: its ``send_task`` writes an outbox row (in the caller's
transaction) instead of publishing. The project's own Celery app stays a plain ``Celery``:
only the peer's producer sends through this one (``CELERY_OUTBOX_APP`` points the relay at
it; the relay publishes with ``Celery.send_task``, past the outbox). The tasks are shared
tasks, run by ``celery -A config worker --include harness.peers.outbox``.

Configured as its README says for production: the relay with its command's defaults, the
tasks idempotent (the same services as the other designs), acknowledged late (this
project's Celery settings) and retried with Celery's backoff when a handler fails.
"""

from __future__ import annotations

from celery import shared_task
from django_celery_outbox import OutboxCelery

from harness.peers.handlers import payment_consume

# Not the current app: shared tasks and ``.delay()`` elsewhere keep the project's app.
app = OutboxCelery("harness_peers_outbox", set_as_current=False)
app.config_from_object("django.conf:settings", namespace="CELERY")

OUTBOX_TASKS = {
    "orders": "harness.outbox_mark_paid",
    "points": "harness.outbox_award_points",
    "notifications": "harness.outbox_send_sms",
}
_RETRY = {"autoretry_for": (Exception,), "retry_backoff": True, "max_retries": 5, "ignore_result": True}


def payment_outbox_enqueue(*, body: dict) -> None:
    """Write the payment's three consumer tasks to the outbox (call inside its transaction)."""
    for name in OUTBOX_TASKS.values():
        app.send_task(name, args=[body])


@shared_task(name=OUTBOX_TASKS["orders"], **_RETRY)
def outbox_mark_paid(body: dict) -> None:
    payment_consume(group="orders", body=body)


@shared_task(name=OUTBOX_TASKS["points"], **_RETRY)
def outbox_award_points(body: dict) -> None:
    payment_consume(group="points", body=body)


@shared_task(name=OUTBOX_TASKS["notifications"], **_RETRY)
def outbox_send_sms(body: dict) -> None:
    payment_consume(group="notifications", body=body)
