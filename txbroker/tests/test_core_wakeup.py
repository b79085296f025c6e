"""Coalesced wake-ups: at most one delivery task waits in the Redis queue; a task clears
the mark before it claims, so no commit is left without a wake-up that will see it."""

from __future__ import annotations

import pytest

from txbroker import wakeup
from txbroker.delivery import deliver_due
from txbroker.models import Delivery
from txbroker.tests.helpers import deliveries, send
from txbroker.tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def queued_tasks(redis_client) -> int:
    return redis_client.llen("celery")


def test_commits_share_one_queued_wake_up_until_a_task_starts(broker_env, clean_queue, redis_client):
    first = send("w-1").msg_id
    send("w-2")
    send("w-3")
    assert queued_tasks(redis_client) == 1  # three commits, one wake-up waiting

    wakeup.started()  # a task starts: it will claim everything committed so far
    report = deliver_due(budget_seconds=5)
    assert report.succeeded == 9
    assert set(deliveries(first).values()) == {"SUCCEEDED"}

    send("w-4")
    assert queued_tasks(redis_client) == 2  # a commit after the start publishes again


def test_every_commit_publishes_when_coalescing_is_off(broker_env, clean_queue, redis_client, broker_setting):
    broker_setting("TXBROKER_WAKEUP_COALESCE", "0")
    for i in range(3):
        send(f"off-{i}")
    assert queued_tasks(redis_client) == 3


def test_a_lost_wake_up_stops_suppressing_new_ones_after_its_ttl(
    broker_env, clean_queue, redis_client, broker_setting
):
    broker_setting("TXBROKER_WAKEUP_TTL", "0.2")
    send("ttl-1")
    redis_client.delete("celery")  # the queued task is lost; its mark is not
    assert queued_tasks(redis_client) == 0
    wait_for(lambda: redis_client.get(wakeup.PENDING_KEY) is None, timeout=5, what="the mark to expire")
    send("ttl-2")
    assert queued_tasks(redis_client) == 1


def test_a_burst_of_commits_is_fully_delivered_by_a_worker(worker, redis_client):
    sent = [send(f"burst-{i}").msg_id for i in range(40)]
    wait_for(
        lambda: Delivery.objects.filter(message_id__in=sent, status="SUCCEEDED").count() == 120,
        timeout=60,
        what="all 120 deliveries to succeed",
    )
    assert queued_tasks(redis_client) == 0
