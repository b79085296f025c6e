"""What runs now, for the dashboard: the Celery workers that answer (``inspect().active()``,
one broadcast bounded by ``TXBROKER_DASHBOARD_INSPECT_TIMEOUT``) and the batches claimed in
the database (RUNNING deliveries, grouped by the claim that took them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from celery import current_app

from txbroker.conf import txsettings
from txbroker.db import broker_db
from txbroker.models import Delivery

logger = logging.getLogger("txbroker.admin")

# A page shows this many running deliveries at most (a batch is TXBROKER_BATCH_SIZE).
RUNNING_LIMIT = 500


@dataclass
class Worker:
    name: str
    tasks: list[dict[str, Any]]


@dataclass
class Batch:
    claim: str
    consumer_groups: list[str] = field(default_factory=list)
    deliveries: int = 0
    started: int = 0
    oldest_start: Optional[datetime] = None
    claimed_until: Optional[datetime] = None
    msg_ids: list[str] = field(default_factory=list)


def live_workers(timeout: Optional[float] = None) -> Optional[list[Worker]]:
    """The workers that answered within ``timeout`` with the tasks each is running; None when
    the broker could not be asked (the reason goes to the log, not the page)."""
    timeout = txsettings.DASHBOARD_INSPECT_TIMEOUT if timeout is None else timeout
    try:
        with current_app.connection_for_write() as conn:
            # Fail fast when the broker is away (Celery would otherwise retry for minutes).
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=max(timeout, 1.0)
            )
            active = current_app.control.inspect(timeout=timeout, connection=conn).active() or {}
    except Exception as exc:  # noqa: BLE001 - a broker outage must not take the dashboard down
        logger.warning("dashboard: cannot ask the workers: %s", exc)
        return None
    workers = []
    for name in sorted(active):
        tasks = [
            {"name": task.get("name", "?"), "id": task.get("id", ""), "time_start": task.get("time_start")}
            for task in active[name] or []
        ]
        workers.append(Worker(name=name, tasks=tasks))
    return workers


def running_batches() -> list[Batch]:
    """RUNNING deliveries grouped by their claim (one claim is one batch of one delivery
    task), the oldest claim first. Read through the partial index on RUNNING rows."""
    rows = (
        Delivery.objects.using(broker_db())
        .filter(status=Delivery.Status.RUNNING)
        .order_by("claimed_until")
        .values_list("claim_token", "consumer_group", "started_at", "claimed_until", "message_id")[
            :RUNNING_LIMIT
        ]
    )
    batches: dict[str, Batch] = {}
    for token, group, started_at, claimed_until, msg_id in rows:
        batch = batches.setdefault(token, Batch(claim=token))
        batch.deliveries += 1
        if group not in batch.consumer_groups:
            batch.consumer_groups.append(group)
        if started_at is not None:
            batch.started += 1
            batch.oldest_start = min(filter(None, [batch.oldest_start, started_at]))
        batch.claimed_until = max(filter(None, [batch.claimed_until, claimed_until]))
        if len(batch.msg_ids) < 5:
            batch.msg_ids.append(msg_id)
    return list(batches.values())
